"""Deployment: build a recipe's model for embedded targets, run or compile each artifact, and
gather one table (``deployment.csv``): one row per target and runtime.

>>> table, failures = wb.deploy("recipe.yaml", ["tflite-int8", "ethos-u55-128"], "runs/deploy")

Targets are entries of the exporter registry (:class:`workbench.export.exporters.Target`:
``tflite-int8``, the Ethos-U configs compiled by Vela, ``hls4ml``); the QCDQ export is always
built too and gives the ``onnxruntime`` row (this CPU), so the table compares the embedded
targets with the desktop runtime the exploration used. Each row says where its RAM and latency
figures come from (``ram_source``, ``latency_source``): measured on this CPU, or estimated by a
target compiler. A recipe's ``targets:`` section names targets and their tolerances
(:class:`workbench.runs.recipe.TargetTolerance`); rows outside them are listed as failures, and
``workbench apply`` / ``workbench deploy`` exit 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .deployment import deployment_frame


def deploy(recipe_path: str | Path, targets: Iterable[str] | str | None = None, out_dir: str | Path = "runs/deploy", *,
           overwrite: bool = False, progress: bool = True, latency_runs: int = 200, allow_code: bool | None = None,
           tracking=False, target_file=None) -> tuple[pd.DataFrame, list[str]]:
    """Rebuild ``recipe_path``'s model (as ``workbench apply`` does), build, run and check every
    target (``targets``: names; None: the recipe's ``targets:`` section), write the artifacts and
    ``deployment.csv`` into ``out_dir``; return the table and the failures (the recipe's
    expectations and target tolerances not met). Everything is refused before work when a target
    is unknown, its toolchain is missing, or it cannot carry a layer the recipe asks for.
    ``target_file``: the file of the recipe's own target profile (see :func:`workbench.runs.job.apply_recipe`)."""
    from .job import apply_recipe

    summary, failures = apply_recipe(recipe_path, out_dir, progress=progress, latency_runs=latency_runs, overwrite=overwrite,
                                     allow_code=allow_code, tracking=tracking, targets=targets, require_targets=True,
                                     target_file=target_file)
    return deployment_frame(summary["deployment"]), failures
