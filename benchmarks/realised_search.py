"""Search what ships: budgets in the artifact's realised bytes, checked against the written files.

Per task (``digits-cnn``, ``mnist1d-cnn``, ``kws-dscnn``: the cached float baseline and one
quantise-one sensitivity sweep) and per target (``onnxruntime``: the QCDQ ONNX file, budget kind
``onnx_kib``, profile ``cpu-int8-ort``; ``tflite-int8``: the integer TFLite file, budget kind
``tflite_kib``, profile ``mcu``), five rising realised budgets from the smallest reachable file to
the uniform 8-bit file, searched in rising order against one result store (as a user raising the
budget would). For each budget the chosen point (the best measured within the budget) is written as
the target's artifact and its bytes read from the file. The uniform points (every layer at one of
the profile's widths) are written and measured too, for the comparison at equal file bytes.

One line per (task, target, budget): budget, chosen bits, measured metric, written file bytes; then

- ``monotone: yes|no``: the measured metric of the chosen point never falls as the budget rises;
- ``realised within budget: N/M``: written artifacts whose bytes are within their budget;
- ``mixed beats uniform at equal file bytes: K/L``: of the L chosen points that are mixed (not
  one width everywhere), K measure strictly better than the best uniform point whose written file
  is no larger.

    PYTHONPATH=. python benchmarks/realised_search.py [--tasks digits-cnn,mnist1d-cnn,kws-dscnn]
        [--targets onnxruntime,tflite-int8] [--budgets 5] [--small]

Metrics are the tasks' own (top-1 accuracy on their evaluation split, batch 256, fake-quantised
simulation in PyTorch on this CPU); bytes are the files' sizes on disk.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np

import workbench as wb
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity
from workbench.core.cost import load_target
from workbench.export.pipeline import PTQConfig
from workbench.infra.store import ResultStore
from workbench.search import realised
from workbench.search.config import SearchConfig
from workbench.search.front import best_within
from workbench.search.measuring import measure
from workbench.search.precision import search

#: deployment target -> (target profile, realised budget kind)
TARGETS = {"onnxruntime": ("cpu-int8-ort", "onnx_kib"), "tflite-int8": ("mcu", "tflite_kib")}


def write_artifact(task, model, assignment: dict[str, int], target: str, folder: Path) -> int:
    """Bytes of the artifact ``target`` deploys for ``assignment``, written to ``folder`` by the
    exporter the target uses (:func:`workbench.search.realised.write_artifact`)."""
    fmt = "onnx" if target == "onnxruntime" else "tflite"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{'-'.join(map(str, assignment.values()))}.{fmt}"
    return Path(realised.write_artifact(fmt, task, model, assignment, path)).stat().st_size


def run(task_name: str, targets: list[str], n_budgets: int, small: bool, tmp: Path, store: ResultStore) -> list[dict]:
    task = wb.create_task(task_name)
    if small:
        task = task.small(512, 256, 512)
    model = wb.load_or_train_baseline(task)
    rows = []
    for target in targets:
        profile_name, kind = TARGETS[target]
        profile = load_target(profile_name)
        sens = sensitivity(task, model, SensitivityConfig(weight_bits=tuple(profile.weight_bits)), store=store, progress=False)
        config = SearchConfig(target=profile_name, budget_kind=kind)
        probe = search(task, model, sens, config, progress=False, store=store)  # the sweep from the cheapest to the dearest file
        low, high = float(probe[kind].min()), float(probe[kind].max())
        budgets = [float(b) for b in np.linspace(low, high, n_budgets)]
        layers = json.loads(probe["bits"].iloc[0])
        uniform = {}  # every width the profile offers, one everywhere: its written bytes and measured metric
        for b in sorted(set(profile.weight_bits)):
            assignment = {name: b for name in layers}
            uniform[b] = (write_artifact(task, model, assignment, target, tmp / task_name / target / "uniform"),
                          measure(task, model, assignment, 8, PTQConfig()))
            print(f"{task_name:12s} {target:12s} uniform W{b}: file {uniform[b][0]:7d} B, measured {uniform[b][1]:.4f}", flush=True)
        for budget in budgets:
            df = search(task, model, sens, config, extra_budgets=(budget,), progress=False, store=store)
            chosen = best_within(df, budget, kind)
            assignment = json.loads(chosen["bits"])
            size = write_artifact(task, model, assignment, target, tmp / task_name / target / f"b{budget:.3f}")
            mixed = len(set(assignment.values())) > 1
            fits = [m for nbytes, m in uniform.values() if nbytes <= size]
            row = {"task": task_name, "target": target, "kind": kind, "budget": budget, "bits": assignment,
                   "metric": float(chosen["measured_metric"]), "file_bytes": size, "within": size <= budget * 1024,
                   "mixed": mixed, "best_uniform": max(fits) if fits else float("nan")}
            rows.append(row)
            print(f"{task_name:12s} {target:12s} budget {kind} {budget:8.3f} KiB ({budget * 1024:8.0f} B)  chosen "
                  f"{'/'.join(map(str, assignment.values())):24s} measured {row['metric']:.4f}  file {size:7d} B"
                  f"{'' if row['within'] else '  OVER BUDGET'}  best uniform of <= bytes "
                  f"{'none' if not fits else f'{max(fits):.4f}'}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="digits-cnn,mnist1d-cnn,kws-dscnn")
    ap.add_argument("--targets", default="onnxruntime,tflite-int8")
    ap.add_argument("--budgets", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="smaller data subsets (quick check)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch threads fixed by the search")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp) / "store")
        for name in args.tasks.split(","):
            rows += run(name, args.targets.split(","), args.budgets, args.small, Path(tmp), store)
    monotone = True
    for key in {(r["task"], r["target"]) for r in rows}:
        series = [r["metric"] for r in rows if (r["task"], r["target"]) == key]
        monotone &= all(b >= a for a, b in itertools.pairwise(series))
    mixed = [r for r in rows if r["mixed"]]
    compared = [r for r in mixed if not np.isnan(r["best_uniform"])]  # a mixed file below every uniform one has no comparison
    wins = [r for r in compared if r["metric"] > r["best_uniform"]]
    print(f"chosen points: {len(rows)}, mixed: {len(mixed)} ({len(mixed) - len(compared)} smaller than every uniform file: no comparison)")
    print(f"monotone: {'yes' if monotone else 'no'}")
    print(f"realised within budget: {sum(r['within'] for r in rows)}/{len(rows)}")
    print(f"mixed beats uniform at equal file bytes: {len(wins)}/{len(compared)}")


if __name__ == "__main__":
    main()
