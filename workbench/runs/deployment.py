"""The deployment table: target names resolved against the exporter registry, one row per target
and runtime (``deployment.csv``), and the tolerance checks of a recipe's ``targets:`` section."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from ..infra.errors import ExportError, unknown_name
from ..export.exporters import DEPLOYMENT_COLUMNS, EXPORTERS, PRIMARY, Target, get_exporter


def resolve_targets(targets: Iterable[str] | str | None) -> tuple[str, ...]:
    """Checked deployment target names, in build order (a target that compiles another's artifact,
    e.g. a Vela config compiling the ``tflite-int8`` file, comes after it; that dependency is added
    when missing). Unknown names and exporters that are not deployment targets are one-line
    :class:`ExportError` s; a missing toolchain is a one-line :class:`~workbench.infra.errors.ToolchainError`
    naming the extra to install. All before any work."""
    if targets is None:
        return ()
    if isinstance(targets, str):
        targets = (targets,)
    names: list[str] = []
    for name in targets:
        if not isinstance(name, str) or name not in EXPORTERS:
            raise ExportError(unknown_name("deployment target", name, list_target_names(), listed="targets:"))
        exporter = get_exporter(name)
        if not isinstance(exporter, Target):
            raise ExportError(f"{name!r} is an export format, not a deployment target; targets: {', '.join(list_target_names())}")
        for dep in (*getattr(exporter, "depends_on", ()), name):
            if dep not in names:
                names.append(dep)
    for name in names:
        get_exporter(name).available()
    return tuple(names)


def list_target_names() -> list[str]:
    """Names of the registered deployment targets, in registration order."""
    return [n for n, e in EXPORTERS.items() if isinstance(e, Target)]


def list_targets() -> pd.DataFrame:
    """The registered deployment targets: name, runtime, carries, extra, installed (its toolchain
    imports here) and description."""
    from ..infra.errors import ToolchainError

    rows = []
    for name, t in EXPORTERS.items():
        if not isinstance(t, Target):
            continue
        try:
            t.available()
            installed = True
        except ToolchainError:
            installed = False
        rows.append({"name": name, "runtime": t.runtime, "carries": t.carries, "extra": t.extra, "installed": installed, "description": t.description})
    return pd.DataFrame(rows, columns=["name", "runtime", "carries", "extra", "installed", "description"])


def _none(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def deployment_table(variant: dict) -> pd.DataFrame:
    """The deployment rows of one variant's summary (``summary["variants"][name]``): the QCDQ
    export in onnxruntime first, then each target's rows (keys ``"<target>@<runtime>"``), with the
    :data:`~workbench.export.exporters.DEPLOYMENT_COLUMNS`."""
    rows = [{
        "target": PRIMARY, "runtime": "onnxruntime", "metric": variant.get("onnx_metric"), "agreement": variant.get("onnx_agreement"),
        "samples": variant.get("onnx_samples"), "file_bytes": variant.get("onnx_file_bytes"),
        "latency_ms_p50": variant.get("latency_ms_p50_quant"), "latency_ms_p99": variant.get("latency_ms_p99_quant"),
        "latency_ms_max": variant.get("latency_ms_max_quant"), "jitter": variant.get("latency_jitter_quant"),
        "latency_source": f"measured on this CPU ({variant.get('latency_method')})" if variant.get("latency_method") else None,
        "cpu_ops": None, "artifact": variant.get("onnx_path"),
    }]
    for key, row in variant.items():
        if isinstance(row, dict) and "@" in key and "target" in row:
            rows.append(row)
    table = pd.DataFrame([{c: _none(r.get(c)) for c in DEPLOYMENT_COLUMNS} for r in rows], columns=list(DEPLOYMENT_COLUMNS))
    return table.astype({c: "Int64" for c in INTEGER_COLUMNS})


def deployment_frame(records) -> pd.DataFrame:
    """A deployment table from its rows as the summary stores them (``summary["deployment"]``):
    the columns in order, counts and bytes as integers."""
    table = pd.DataFrame(list(records), columns=list(DEPLOYMENT_COLUMNS))
    return table.astype({c: "Int64" for c in INTEGER_COLUMNS})


def deployment_records(table: pd.DataFrame) -> list[dict]:
    """The rows of a deployment table as JSON-ready dicts (None where a figure is missing)."""
    def plain(k, v):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return None
        return int(v) if k in INTEGER_COLUMNS else v

    return [{k: plain(k, v) for k, v in row.items()} for row in table.astype(object).to_dict("records")]


#: Deployment columns holding counts and bytes (nullable integers in the table).
INTEGER_COLUMNS = ("samples", "file_bytes", "flash_bytes", "ram_bytes", "peak_act_estimate_bytes", "cycles", "npu_ops", "cpu_ops")


def tolerance_failures(table: pd.DataFrame, tolerances: dict) -> list[str]:
    """``targets.<name> (<runtime>): why`` for every row outside its target's tolerance
    (:class:`workbench.runs.recipe.TargetTolerance`); a listed target with no row is a failure too."""
    failures = []
    for name, tol in tolerances.items():
        rows = table[table["target"] == name]
        if rows.empty:
            failures.append(f"targets.{name}: no row was built")
        for row in rows.to_dict("records"):
            for why in tol.check(row):
                failures.append(f"targets.{name} ({row['runtime']}): {why}")
    return failures
