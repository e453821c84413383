"""The Typer app of the ``workbench`` command and what its commands share: one-line errors
(``_fail``), warnings as one line (``_quiet_libraries``), output folders, MLflow tracking, the help
texts of shared options and the printing of a job's summary. The commands live in the modules
beside this one (:mod:`workbench.cli` registers them); nothing here imports torch."""

from __future__ import annotations

import datetime as _dt
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer


class _App(typer.Typer):
    """The ``workbench`` command; a Ctrl-C anywhere is exit 130 and one line (:mod:`workbench.infra.interrupts`)."""

    def __call__(self, *args, **kwargs):
        from ..infra.interrupts import run_command

        return run_command(super().__call__, *args, **kwargs)


app = _App(add_completion=False, no_args_is_help=True, help="Embedded-AI compression workbench: per-layer quantisation, export and verification.")


def _short(x) -> str:
    """A number in four significant digits (anything else as it is)."""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _default_out(name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)  # module:function -> module-function
    return Path("runs") / f"{safe}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _end_progress_bars() -> None:
    """Close the progress bars a failed step left open, so that what is printed next starts on a fresh line."""
    tqdm = sys.modules.get("tqdm")
    for bar in sorted(getattr(getattr(tqdm, "tqdm", None), "_instances", ()), key=lambda b: -getattr(b, "pos", 0)):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot redraw is not worth an error of its own
            pass


def _fail(exc: Exception) -> None:
    _end_progress_bars()
    from ..infra.interrupts import check

    check()  # an error that followed a Ctrl-C a library swallowed: the interrupt is what happened
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line of its own, above any progress bar (which is drawn again below it)."""
    text = f"warning: {' '.join(str(message).split())}"
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)
    if tqdm is not None and getattr(tqdm, "_instances", None):
        tqdm.write(text, file=sys.stderr)
    else:
        typer.echo(text, err=True)


def _quiet_libraries() -> None:
    # one line per warning, never the source line under it; but where warnings are being recorded
    # (warnings.catch_warnings(record=True): a caller, a notebook or a test collecting them), they stay recorded
    if not isinstance(getattr(warnings._showwarnmsg_impl, "__self__", None), list):
        warnings.showwarning = _warn_line
    warnings.filterwarnings("ignore", module="brevitas")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


TASK_HELP = "a registered task name (see `workbench tasks`) or module:function of yours returning a Task (imported from the working directory)"
IMPORT_HELP = "import this module first (repeatable), so the tasks it registers with @wb.register_task can be named"
OVERWRITE_HELP = "replace DIR if an earlier workbench run wrote it (never a folder holding other files)"
ALLOW_CODE_HELP = "allow a recipe's task.factory (module:function) to be imported and run (also WORKBENCH_ALLOW_CODE=1)"
TARGET_FILE_HELP = "YAML file of the target profile the recipe's target: names, when it is not a registered one (workbench never reads a path from a recipe)"


def _run_dir(out: Path, overwrite: bool, command: str, keep: tuple = (), resume: str | None = None):
    """The output folder, checked before any work (one-line error otherwise)."""
    from ..infra.errors import WorkbenchError
    from ..infra.outdir import RunDir

    try:
        return RunDir(out, overwrite=overwrite, command=command, keep=keep, resume=resume)
    except WorkbenchError as exc:
        _fail(exc)


def _write_files(run_dir, files: dict[str, str]) -> None:
    """Write ``files`` as one result folder (all or nothing)."""
    from ..infra.errors import WorkbenchError
    from ..infra.fileio import atomic_write_text, inside

    try:
        with run_dir as work:
            for name, text in files.items():
                atomic_write_text(inside(work, name), text)
    except WorkbenchError as exc:
        _fail(exc)


def _open_store():
    from ..infra.store import ResultStore

    return ResultStore()


EXECUTOR_HELP = "where sweep cases run: local | process[:N] | ray | ray:HOST:PORT | ray:auto"
MLFLOW_HELP = "log the run to MLflow: 'local' (a store in the cache folder) or a tracking URI (default: $WORKBENCH_MLFLOW, else off)"


def _tracker(mlflow: Optional[str]):
    """The MLflow tracker asked for, checked before any work starts (one-line error otherwise)."""
    from ..infra.errors import WorkbenchError
    from ..infra.tracking import resolve_tracker

    try:
        return resolve_tracker(mlflow)
    except WorkbenchError as exc:
        _fail(exc)


def _track(tracker, log) -> None:
    """``log()`` a run to MLflow once the results are written: a failure is a one-line warning (exit 0)."""
    from ..infra.errors import redact_uri
    from ..infra.tracking import TrackingError

    try:
        run_id = log()
    except TrackingError as exc:
        typer.echo(f"warning: {exc}; the results are written, the run is not tracked", err=True)
        return
    typer.echo(f"mlflow run {run_id} ({redact_uri(tracker.uri)})")


def _print_summary(summary: dict, out: Path) -> None:
    keys = ["fp_metric", "quant_metric", "onnx_metric", "onnx_agreement", "max_abs_diff", "weight_bytes_fp", "weight_bytes_quant",
            "onnx_file_bytes", "int_kernel_nodes", "latency_ms_p50_fp", "latency_ms_p50_quant"]
    typer.echo(f"{summary['task']} ({summary['primary_variant']}, {summary['metric_name']}{', synthetic data' if summary['synthetic'] else ''})")
    for k in keys:
        v = summary[k]
        typer.echo(f"  {k:22s} {v:.4f}" if isinstance(v, float) else f"  {k:22s} {v}")
    for name, v in summary["variants"].items():
        typer.echo(f"  variant {name:8s} metric {v['quant_metric']:.4f} (onnxruntime {v['onnx_metric']:.4f}, agreement {_short(v.get('onnx_agreement'))}), "
                   f"{v['weight_bytes_quant']} weight bytes, integer kernels {v['int_kernels']}")
    if "search" in summary:
        sr = summary["search"]
        kind = sr.get("budget_kind", "weight_kib")
        typer.echo(f"  search under {sr['budget_kib']:g} KiB ({kind}): {sr.get(f'chosen_{kind}', sr['chosen_weight_kib']):.2f} KiB, measured {sr['chosen_measured_metric']:.4f} "
                   f"({sr['front_points']} points on the front); promoted to {out / sr['recipe']}")
    for row in summary.get("deployment", []):
        if row["target"] != "qcdq":
            ram = f", RAM {row['ram_bytes']:,} B ({row['ram_source'].split(';')[0]})" if row.get("ram_bytes") else ""
            typer.echo(f"  target {row['target']} ({row['runtime']}): agreement {_short(row.get('agreement'))}, "
                       f"file {row['file_bytes']:,} B{ram}, p99 {_short(row.get('latency_ms_p99'))} ms")
    typer.echo(f"wrote {out / 'report.html'}, {out / 'summary.json'}, {out / 'model.onnx'}")


def _echo_table(df) -> None:
    df = df.astype(object)
    typer.echo(df.where(df.notna(), "-").to_string(index=False))


def _load_spec(spec: Optional[Path], weight_bits: str, act_bits: str):
    from ..core.spec import QuantSpec

    def bits(v: str):
        return v if v == "float" else (int(v) if v.lstrip("-").isdigit() else v)

    if spec is not None:
        if not spec.is_file():
            from ..infra.errors import SpecError

            raise SpecError(f"spec file {str(spec)!r} does not exist; expected a YAML quantisation spec")
        return QuantSpec.from_yaml(spec)
    return QuantSpec.parse({"weight_bits": bits(weight_bits), "act_bits": bits(act_bits)})


def main() -> None:  # pragma: no cover
    app()
