"""The ``workbench`` command line (typer)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
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


WIDTHS_HELP = ("after the bits search, a width-and-bits search (Optuna, per-stage channel widths) under the same budgets, in DIR/widths; "
               "its feasible trials join pareto.csv and the best point of both is promoted (a pruned one with its pruning section)")


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


def _pruning_label(spec: dict) -> str:
    from ..core.pruning import PruningSpec

    return PruningSpec.parse(spec).label


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
        typer.echo(f"  search under {sr['budget_kib']:g} KiB: {sr['chosen_weight_kib']:.2f} KiB, measured {sr['chosen_measured_metric']:.4f} "
                   f"({sr['front_points']} points on the front); promoted to {out / sr['recipe']}")
    for row in summary.get("deployment", []):
        if row["target"] != "qcdq":
            ram = f", RAM {row['ram_bytes']:,} B ({row['ram_source'].split(';')[0]})" if row.get("ram_bytes") else ""
            typer.echo(f"  target {row['target']} ({row['runtime']}): agreement {_short(row.get('agreement'))}, "
                       f"file {row['file_bytes']:,} B{ram}, p99 {_short(row.get('latency_ms_p99'))} ms")
    typer.echo(f"wrote {out / 'report.html'}, {out / 'summary.json'}, {out / 'model.onnx'}")


@app.command()
def tasks() -> None:
    """List the registered tasks: input shape, parameters, MACs, metric and data source."""
    _quiet_libraries()
    from ..tasks.registry import tasks_table

    typer.echo(tasks_table().to_string(index=False))


@app.command()
def formats() -> None:
    """List the number formats a spec's weight_format / act_format can name (int, fp8_e4m3, ...)."""
    _quiet_libraries()
    from ..core.formats import list_formats

    _echo_table(list_formats())


@app.command()
def exporters() -> None:
    """List the export formats --format and a recipe's export.formats can name (qcdq, qonnx, float, ...)."""
    _quiet_libraries()
    from ..export.exporters import list_exporters

    _echo_table(list_exporters())


@app.command()
def costs() -> None:
    """List the cost kinds a search's --budget KIND=VALUE and a target profile's budgets can name."""
    _quiet_libraries()
    from ..core.cost import list_cost_kinds

    _echo_table(list_cost_kinds())


def _echo_table(df) -> None:
    df = df.astype(object)
    typer.echo(df.where(df.notna(), "-").to_string(index=False))


PACK_HELP = ("weight storage: int4 (weights of at most 4 bits two a byte in QCDQ; QONNX weights as integers at their bit width) "
             "or none (int8 containers in QCDQ, float weights in QONNX); default int4")
WEIGHT_ENCODING_HELP = "int8 weight storage in the QCDQ file: u8 (exact on every CPU), s8 (faster with VNNI or on ARM) or auto (probe this CPU: s8 with VNNI or ARM, else u8); default auto"


@app.command()
def demo(out: Optional[Path] = typer.Option(None, help="output directory (default: runs/demo-<time>)"),
         latency_runs: int = typer.Option(200, min=10, help="timed runs per latency measurement"),
         weight_encoding: Optional[str] = typer.Option(None, help=WEIGHT_ENCODING_HELP),
         pack: str = typer.Option("int4", help=PACK_HELP),
         overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)) -> None:
    """The main job: digits-cnn float baseline, W8A8 and W4A8 PTQ, export and verification."""
    _quiet_libraries()
    from ..infra.errors import WorkbenchError
    from ..export.packing import resolve_pack
    from ..runs.job import run_demo

    out = out or _default_out("demo")
    try:
        resolve_pack(pack)  # a bad value fails before any folder
        summary = run_demo(out, latency_runs=latency_runs, overwrite=overwrite, pack=pack,
                           **({"weight_encoding": weight_encoding} if weight_encoding else {}))
    except WorkbenchError as exc:
        _fail(exc)
    _print_summary(summary, out)


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


@app.command()
def quantize(task: str = typer.Argument(..., help=TASK_HELP),
             imports: Optional[list[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
             spec: Optional[Path] = typer.Option(None, help="YAML spec: defaults plus per-layer overrides"),
             weight_bits: str = typer.Option("8", help="default weight bits when no --spec (2-8, 16 or float)"),
             act_bits: str = typer.Option("8", help="default activation bits when no --spec"),
             out: Optional[Path] = typer.Option(None, help="output directory (default: runs/<task>-<time>)"),
             bias_correction: bool = typer.Option(False, help="apply bias correction after calibration"),
             equalize_iters: int = typer.Option(0, min=0, help="cross-layer equalisation iterations"),
             formats: Optional[list[str]] = typer.Option(None, "--format", metavar="F",
                                                         help="export format, repeatable (see `workbench.list_exporters()`; default: qcdq and qonnx; qcdq is required)"),
             qonnx: Optional[bool] = typer.Option(None, "--qonnx/--no-qonnx", help="deprecated alias: add / drop the qonnx format"),
             weight_encoding: str = typer.Option("auto", help=WEIGHT_ENCODING_HELP),
             pack: str = typer.Option("int4", help=PACK_HELP),
             overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)) -> None:
    """Quantise a task with a spec, export (QCDQ and QONNX by default, or each --format), verify, and report."""
    _quiet_libraries()
    from ..infra.errors import WorkbenchError
    from ..export.packing import resolve_pack
    from ..export.exporters import resolve_formats
    from ..runs.job import run_job
    from ..export.pipeline import PTQConfig
    from ..tasks.registry import resolve_task_arg

    out = out or _default_out(task)
    try:
        fmts = resolve_formats(formats or None, qonnx=qonnx)  # unknown names fail before any work
        resolve_pack(pack)  # likewise a bad --pack
        t = resolve_task_arg(task, tuple(imports or ()))
        s = _load_spec(spec, weight_bits, act_bits)
        summary = run_job(t, {"spec": s}, out, ptq=PTQConfig(bias_correction=bias_correction, equalize_iters=equalize_iters), formats=fmts,
                          weight_encoding=weight_encoding, overwrite=overwrite, pack=pack)
    except WorkbenchError as exc:
        _fail(exc)
    _print_summary(summary, out)


@app.command("describe")
def describe_cmd(task: str = typer.Argument(..., help=TASK_HELP),
                 imports: Optional[list[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
                 spec: Optional[Path] = typer.Option(None, help="YAML spec"),
                 weight_bits: str = typer.Option("8"), act_bits: str = typer.Option("8")) -> None:
    """Print what a spec gives each layer (bits, granularity, bytes), from the built model."""
    _quiet_libraries()
    from ..tasks.baseline import load_or_train_baseline
    from ..core.describe import describe
    from ..infra.errors import WorkbenchError
    from ..export.pipeline import quantize_task
    from ..tasks.registry import resolve_task_arg

    try:
        t = resolve_task_arg(task, tuple(imports or ()))
        s = _load_spec(spec, weight_bits, act_bits)
        qmodel = quantize_task(t, load_or_train_baseline(t), s)
    except WorkbenchError as exc:
        _fail(exc)
    typer.echo(describe(qmodel).to_string(index=False, na_rep="float"))


@app.command()
def sensitivity(task: str = typer.Argument(..., help=TASK_HELP),
                imports: Optional[list[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
                weight_bits: str = typer.Option("2,3,4,6,8", help="comma-separated weight bits per case (float = weights float; a format such as fp8_e4m3 is a case too)"),
                act_bits: Optional[str] = typer.Option(None, help="comma-separated bits of the activation the layer reads (default: float)"),
                mode: str = typer.Option("quantise-one", help="quantise-one | leave-one-float"),
                base: Optional[Path] = typer.Option(None, help="YAML spec of the rest of the model (leave-one-float; default W8A8)"),
                layers: Optional[str] = typer.Option(None, help="comma-separated layer names (default: all)"),
                hessian: bool = typer.Option(False, help="add a Hutchinson Hessian-trace column"),
                max_cache_mb: float = typer.Option(512.0, help="memory budget in MB for cached activations (beyond it, they are recomputed)"),
                no_store: bool = typer.Option(False, "--no-store", help="do not read or write the result store"),
                executor: str = typer.Option("local", help=EXECUTOR_HELP),
                mlflow: Optional[str] = typer.Option(None, help=MLFLOW_HELP),
                out: Optional[Path] = typer.Option(None, help="output directory (default: runs/<task>-sensitivity-<time>)"),
                overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)) -> None:
    """Per-layer sensitivity sweep: writes DIR/sensitivity.csv and DIR/sensitivity.html."""
    _quiet_libraries()
    tracker = _tracker(mlflow)
    from ..tasks.baseline import load_or_train_baseline
    from ..infra.errors import WorkbenchError
    from ..runs.report import write_sensitivity_report
    from ..analysis.sensitivity import SensitivityConfig, check_config, parse_bits
    from ..analysis.sensitivity import sensitivity as run_sensitivity
    from ..infra.executors import make_executor
    from ..core.spec import QuantSpec
    from ..tasks.registry import resolve_task_arg

    out = out or _default_out(f"{task}-sensitivity")
    run_dir = _run_dir(out, overwrite, "sensitivity")
    try:
        config = SensitivityConfig(
            weight_bits=parse_bits(weight_bits, "weight_bits"),
            act_bits=(None,) if act_bits is None else parse_bits(act_bits, "act_bits"),
            mode=mode,
            base=_load_spec(base, "8", "8") if base else QuantSpec(),
            layers=None if layers is None else tuple(s.strip() for s in layers.split(",")),
            hessian=hessian,
            max_cache_mb=max_cache_mb,
        )
        t = resolve_task_arg(task, tuple(imports or ()))
        check_config(config, t.create_model())  # layer names and the base spec: before the baseline is trained
        executor = make_executor(executor)
        store = _open_store() if not no_store else False  # a read-only or corrupt store is dealt with before any work
        model = load_or_train_baseline(t)
        df = run_sensitivity(t, model, config, store=store, executor=executor, tracking=False)
    except WorkbenchError as exc:
        _fail(exc)
    _write_files(run_dir, {"sensitivity.csv": df.to_csv(index=False), "sensitivity.html": write_sensitivity_report(df)})
    if tracker is not None:  # the results first, then the tracking
        from ..infra.tracking import log_sweep

        _track(tracker, lambda: log_sweep(tracker, "sensitivity", t, config, df, strict=True) or df.attrs["mlflow_run_id"])
    worst = df.sort_values("metric_delta").head(5)
    typer.echo(f"{t.name}: {len(df)} rows ({df.attrs['computed']} computed, {df.attrs['from_store']} from the store); most sensitive:")
    typer.echo(worst[["layer", "weight_bits", "act_bits", "weight_format", "metric", "metric_delta", "sqnr_db"]].to_string(index=False, na_rep="float"))
    typer.echo(f"wrote {out / 'sensitivity.csv'}, {out / 'sensitivity.html'}")


@app.command()
def apply(recipe: Path = typer.Argument(..., help="recipe YAML"),
          out: Optional[Path] = typer.Option(None, help="output directory (default: runs/<recipe name>-<time>)"),
          latency_runs: int = typer.Option(200, min=10),
          mlflow: Optional[str] = typer.Option(None, help=MLFLOW_HELP),
          overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
          allow_code: bool = typer.Option(False, "--allow-code", help=ALLOW_CODE_HELP),
          target_file: Optional[Path] = typer.Option(None, "--target-file", help=TARGET_FILE_HELP)) -> None:
    """Rebuild, export and verify a recipe; exit 1 when a metric falls outside the recipe's tolerance."""
    _quiet_libraries()
    from ..infra.errors import WorkbenchError
    from ..runs.job import apply_recipe

    tracker = _tracker(mlflow)
    out = out or _default_out(recipe.stem)
    try:
        summary, failures = apply_recipe(recipe, out, latency_runs=latency_runs, tracking=tracker or False, overwrite=overwrite,
                                         allow_code=allow_code or None, target_file=target_file)
    except WorkbenchError as exc:
        _fail(exc)
    _print_summary(summary, out)
    if "pruning" in summary:
        p = summary["pruning"]
        typer.echo(f"  pruned ({_pruning_label(p['spec'])}): params {p['params_unpruned']:,} -> {p['params']:,}, "
                   f"MACs {p['macs_unpruned']:,} -> {p['macs']:,}, float metric {p['metric_unpruned']:.4f} -> {p['metric']:.4f}")
    typer.echo(f"recipe_sha256 {summary['recipe_sha256']}\nonnx_sha256   {summary['onnx_sha256']}")
    for f in failures:
        typer.echo(f"FAILED {f}", err=True)
    if failures:
        raise typer.Exit(1)


DEPLOY_COLUMNS = ("target", "runtime", "metric", "agreement", "max_lsb_diff", "file_bytes", "ram_bytes", "latency_ms_p50", "latency_ms_p99",
                  "jitter", "cycles", "npu_ops", "cpu_ops")


@app.command()
def deploy(recipe: Path = typer.Argument(..., help="recipe YAML (workbench promote writes one)"),
           target: Optional[list[str]] = typer.Option(None, "--target", "-t",
                                                      help="deployment target (repeatable): tflite-int8, ethos-u55-128, hls4ml, ... (workbench targets); "
                                                           "default: the recipe's targets: section"),
           out: Optional[Path] = typer.Option(None, help="output directory (default: runs/<recipe name>-deploy-<time>)"),
           latency_runs: int = typer.Option(200, min=10, help="timed runs per measured latency (p50, p99, max, jitter)"),
           overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
           allow_code: bool = typer.Option(False, "--allow-code", help=ALLOW_CODE_HELP),
           target_file: Optional[Path] = typer.Option(None, "--target-file", help=TARGET_FILE_HELP)) -> None:
    """Rebuild a recipe, build every target's artifact, run or compile it, check it against the
    simulation and write deployment.csv (one row per target and runtime); exit 1 outside the
    recipe's tolerances."""
    _quiet_libraries()
    from ..runs.deploy import deploy as run_deploy
    from ..infra.errors import WorkbenchError

    out = out or _default_out(f"{recipe.stem}-deploy")
    try:
        table, failures = run_deploy(recipe, target or None, out, latency_runs=latency_runs, overwrite=overwrite, allow_code=allow_code or None,
                                     target_file=target_file)
    except WorkbenchError as exc:
        _fail(exc)
    _echo_table(table[[c for c in DEPLOY_COLUMNS if c in table]])
    typer.echo(f"wrote {out / 'deployment.csv'}, {out / 'report.html'} and the artifacts: {', '.join(dict.fromkeys(a for a in table['artifact'] if a))}")
    for f in failures:
        typer.echo(f"FAILED {f}", err=True)
    if failures:
        raise typer.Exit(1)


@app.command()
def targets() -> None:
    """List the deployment targets workbench deploy --target and a recipe's targets: section can name."""
    _quiet_libraries()
    from ..runs.deploy import list_targets

    _echo_table(list_targets())


@app.command()
def qat(recipe: Path = typer.Argument(..., help="recipe YAML with a qat section"),
        out: Optional[Path] = typer.Option(None, help="output directory (default: runs/<recipe name>-qat-<time>)"),
        latency_runs: int = typer.Option(200, min=10),
        mlflow: Optional[str] = typer.Option(None, help=MLFLOW_HELP),
        overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
        allow_code: bool = typer.Option(False, "--allow-code", help=ALLOW_CODE_HELP),
        target_file: Optional[Path] = typer.Option(None, "--target-file", help=TARGET_FILE_HELP)) -> None:
    """Quantisation-aware training from a recipe (PTQ, then QAT with distillation as it says), export and
    verify; checkpoints go to DIR/checkpoints each epoch and a killed run resumes from them."""
    _quiet_libraries()
    tracker = _tracker(mlflow)
    from ..infra.errors import WorkbenchError
    from ..runs.job import apply_recipe
    from ..runs.recipe import RecipeError, load_recipe

    out = out or _default_out(f"{recipe.stem}-qat")
    try:
        r, _ = load_recipe(recipe)
        if r.qat is None:
            raise RecipeError(f"{recipe.name} has no qat section; expected qat: {{epochs: 5, lr: 0.0001, distill: true}}")
        summary, failures = apply_recipe(recipe, out, latency_runs=latency_runs, checkpoint=True, tracking=tracker or False,
                                         overwrite=overwrite, allow_code=allow_code or None, target_file=target_file)
    except WorkbenchError as exc:
        _fail(exc)
    for row in summary["qat"]["history"]:
        typer.echo(f"  epoch {row['epoch']}: loss {row['loss']:.4f}, {summary['metric_name']} {row['metric']:.4f}, lr {row['lr']:.2e}")
    _print_summary(summary, out)
    for f in failures:
        typer.echo(f"FAILED {f}", err=True)
    if failures:
        raise typer.Exit(1)


BUDGET_HELP = ("KIND=VALUE: a budget on a cost kind (weight_kib, flash_kib, bops, macs, peak_act_kib, ram_kib, or one you registered; "
               "`workbench costs` lists them; latency_ms and cycles only with a --target that measures them); repeatable: the first is the "
               "budget the point is chosen under (with --max-drop: the cost minimised, and a hard budget too), the others are hard budgets on top "
               "of the target's limits (--budget-kib / --budget-bops, when given, come first); VALUE alone is in the target's cost kind")
TARGET_HELP = ("a target profile (cpu-int8-ort, fpga-dataflow, mcu, or a YAML file), or a deployment target with a cost source "
               "(workbench.search.cost_tables.COST_SOURCES, such as onnxruntime): then a per-layer cost table is measured on it, budgets may be in its "
               "own units (--budget latency_ms=5), and every candidate is measured on it")
MAX_DROP_HELP = ("accuracy target: the cheapest configuration (on the first budget's kind) whose MEASURED metric is at most this far below "
                 "the float metric, an absolute drop in the metric's units (0.005 = half a point of accuracy), in [0, 1]; exit 1 when unreachable")


def _parse_budget(text: str, default_kind: str, measured_ok: tuple = (), target: str = "") -> tuple[str, float]:
    """``KIND=VALUE`` (or ``VALUE`` in ``default_kind``) of ``--budget``, checked against the
    cost-kind registry; a measured kind only when ``measured_ok`` (the cost source's kinds) has it."""
    from ..core.cost import get_cost_kind
    from ..infra.errors import SpecError

    name, sep, value = text.partition("=")
    if not sep:
        name, value = default_kind, text
    name = name.strip()
    try:
        kind = get_cost_kind(name)
    except SpecError as exc:
        raise SpecError(f"--budget {text!r}: {exc}") from None
    try:
        number = float(value)
    except ValueError:
        raise SpecError(f"--budget {text!r}: expected KIND=VALUE with a number, such as flash_kib=256") from None
    if not (number > 0 and math.isfinite(number)):
        raise SpecError(f"--budget {text!r}: expected a positive finite number")
    if kind.measured and name not in measured_ok:
        from ..search.cost_tables import COST_SOURCES

        who = [n for n, src in COST_SOURCES.items() if name in src.kinds]
        where = (f"target {target} measures {', '.join(measured_ok) or 'nothing'}" if measured_ok or target in COST_SOURCES else
                 f"target {target or 'cpu-int8-ort'} is a profile with no cost table")
        raise SpecError(f"--budget {text!r}: {name} is measured, not computed, so only a target's cost table prices it ({where}); "
                        f"give --target one of {', '.join(who) if who else 'the deployment targets with a cost source (none installed here)'}")
    return name, number


@app.command("search")
def search_cmd(task: str = typer.Argument(..., help=TASK_HELP),
               imports: Optional[list[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
               budget: Optional[list[str]] = typer.Option(None, "--budget", help=BUDGET_HELP),
               budget_kib: Optional[float] = typer.Option(None, help="budget on packed weight KiB (the same as --budget weight_kib=VALUE)"),
               budget_bops: Optional[float] = typer.Option(None, help="budget on BOPs, MACs x weight bits x act bits (the same as --budget bops=VALUE)"),
               target: str = typer.Option("cpu-int8-ort", help=TARGET_HELP),
               profile_name: Optional[str] = typer.Option(None, "--profile", help="with a deployment --target: the target profile whose "
                                                          "bit-widths and limits the search uses (default cpu-int8-ort)"),
               max_drop: Optional[float] = typer.Option(None, "--max-drop", help=MAX_DROP_HELP),
               act_bits: int = typer.Option(8, help="activation bits of every layer"),
               executor: str = typer.Option("local", help=EXECUTOR_HELP),
               no_store: bool = typer.Option(False, "--no-store", help="do not read or write the result store"),
               mlflow: Optional[str] = typer.Option(None, help=MLFLOW_HELP),
               out: Optional[Path] = typer.Option(None, help="output directory (default: runs/<task>-search-<time>)"),
               overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
               widths: bool = typer.Option(False, "--widths", help=WIDTHS_HELP),
               trials: int = typer.Option(16, "--trials", help="with --widths: width-search trials (a larger number continues the study in DIR/widths)"),
               finetune_epochs: int = typer.Option(1, "--finetune-epochs", help="with --widths: seeded fine-tune epochs after each pruning"),
               width_choices: str = typer.Option("1.0,0.75,0.5", "--width-choices", help="with --widths: shares of each stage's channels kept")) -> None:
    """Mixed-precision search under a budget: writes DIR/pareto.csv and DIR/recipe.yaml.

    The target profile's limits (the mcu's flash_kib and ram_kib) always apply; the output says
    which constraint bound the chosen point. With a deployment --target (a cost source) the
    budgets may be in the target's own units and every candidate is measured on it; with
    --max-drop the search looks for the cheapest configuration within that drop of float
    (exit 1, pareto.csv only, when the target is unreachable). With --widths a width-and-bits
    search (DIR/widths, resumed by a re-run with the same DIR) joins pareto.csv and the best point
    of both searches is promoted."""
    _quiet_libraries()
    tracker = _tracker(mlflow)
    from ..tasks.baseline import load_or_train_baseline
    from ..core.cost import budget_kind, get_cost_kind, list_targets, load_target
    from ..search.cost_tables import COST_SOURCES
    from ..infra.errors import SpecError, WorkbenchError
    from ..runs.recipe import promote
    from ..search.precision import SearchConfig, best_within, check_max_drop, preflight, resolve_budgets, resolve_limits, search
    from ..infra.executors import make_executor
    from ..analysis.sensitivity import SensitivityConfig, sensitivity
    from ..tasks.registry import resolve_task_arg

    out = out or _default_out(f"{task}-search")
    resume = None
    if widths:  # a re-run with the same arguments continues the width study in DIR/widths
        resume = "search-widths:" + hashlib.sha256(json.dumps([task, imports, budget, budget_kib, budget_bops, target, profile_name, max_drop,
                                                               act_bits, finetune_epochs, width_choices], default=str).encode()).hexdigest()[:16]
    run_dir = _run_dir(out, overwrite, "search", keep=("widths",) if widths else (), resume=resume)
    try:
        for flag, value in (("--budget-kib", budget_kib), ("--budget-bops", budget_bops)):  # nan / inf: refused before any work
            if value is not None and not (math.isfinite(value) and value > 0):
                raise SpecError(f"{flag} {value}: expected a positive finite number")
        width_shares = _width_options(widths, trials, finetune_epochs, width_choices)
        if budget_kib is not None and budget_bops is not None:
            raise SpecError("give exactly one of --budget-kib or --budget-bops")
        max_drop = check_max_drop(max_drop)
        t = resolve_task_arg(task, tuple(imports or ()))  # first: an --import module may register cost kinds
        is_profile = target in list_targets() or Path(target).suffix != "" or target not in COST_SOURCES
        source = None if is_profile else COST_SOURCES[target]
        if source is None and target not in list_targets() and not Path(target).suffix:
            raise SpecError(f"unknown target {target!r}; expected a profile ({', '.join(list_targets())}), a YAML file, or a deployment "
                            f"target with a cost source ({', '.join(COST_SOURCES) or 'none installed here'})")
        if source is None and profile_name is not None:
            raise SpecError(f"--profile {profile_name!r}: only with a deployment --target (a cost source); --target {target} is a profile itself")
        if source is not None and not source.available():
            raise SpecError(f"target {target}: its toolchain is not installed; pip install 'workbench[{source.requires or 'targets'}]'")
        profile_target = target if source is None else (profile_name or "cpu-int8-ort")
        profile = load_target(profile_target)
        config = SearchConfig(target=profile_target, budget_kind=profile.cost, act_bits=act_bits)  # a bad --act-bits: before any work
        if act_bits not in profile.act_bits:
            raise SpecError(f"--act-bits {act_bits} is not allowed by target {profile.name}; it allows {', '.join(map(str, profile.act_bits))}")
        measured_ok = tuple(source.kinds) if source is not None else ()
        given = [("weight_kib", budget_kib)] if budget_kib is not None else [("bops", budget_bops)] if budget_bops is not None else []
        given += [_parse_budget(text, profile.cost, measured_ok, target) for text in budget or ()]
        if not given and max_drop is None:
            raise SpecError("give a budget: --budget KIND=VALUE (or --budget VALUE in the target's cost kind), --budget-kib or --budget-bops")
        kinds = [k for k, _ in given]
        if len(set(kinds)) < len(kinds):
            raise SpecError(f"--budget: {next(k for k in kinds if kinds.count(k) > 1)} is given twice; give each cost kind once")
        (kind, budget_value), rest = (given[0], given[1:]) if given else ((profile.cost, None), [])
        if not get_cost_kind(kind).measured:
            budget_kind(kind)  # additive, so a search can budget it
        hard = dict(given) if max_drop is not None else dict(rest)  # with --max-drop the first budget is hard too
        on_target = {k: v for k, v in hard.items() if k in measured_ok}  # read from the target's cost table
        limits = {k: v for k, v in hard.items() if k not in on_target}
        resolve_limits(profile, limits)  # limits the profile forbids (looser than its own) fail before any work
        if widths:  # the width search's bits and options, checked now rather than after the bits search
            from ..search.width_search import WidthSearchConfig

            wbits = _width_bits(profile.weight_bits, source)
            WidthSearchConfig(bits=wbits, widths=width_shares, n_trials=trials, objective_kind=kind, budgets=dict(given) or None,
                              target=None if source is None else target, finetune_epochs=finetune_epochs, act_bits=act_bits)
        executor = make_executor(executor)
        store = _open_store() if not no_store else False  # a read-only or corrupt store is dealt with before any work
        model = load_or_train_baseline(t)
        table = None
        if source is not None:
            try:
                from ..search.cost_tables import build_cost_table
            except ImportError:
                raise SpecError("this workbench has no workbench.search.cost_tables.build_cost_table yet; give --target a profile") from None
            table = build_cost_table(t, model, target, bits=tuple(profile.weight_bits), act_bits=act_bits, store=store)
        resolve_budgets(on_target, table)
        config = SearchConfig(target=profile_target, budget_kind=kind, act_bits=act_bits)
        # budgets, limits and bits the search would refuse, refused before the sensitivity sweep
        preflight(t, model, config, budgets=on_target, limits=limits, cost_table=table,
                  extra_budgets=(budget_value,) if budget_value is not None and max_drop is None and not widths else ())
        sens = sensitivity(t, model, SensitivityConfig(weight_bits=tuple(profile.weight_bits)), executor=executor, store=store)
        if max_drop is not None:
            df = search(t, model, sens, config, budgets=on_target, limits=limits, cost_table=table, max_drop=max_drop, store=store)
            best = df.loc[df.attrs["chosen"]] if df.attrs["reached"] else None
        else:
            try:
                df = search(t, model, sens, config, budgets=on_target, extra_budgets=(budget_value,), limits=limits, cost_table=table, store=store,
                            executor=executor)
            except SpecError:
                if not widths:
                    raise
                import pandas as pd  # bits alone cannot reach the budget (MACs): the width points only

                df = pd.DataFrame(columns=["kind", "budget", "bits", kind, "measured_metric", "estimated_metric", "bound_by"])
                lim, src = resolve_limits(profile, limits)
                df.attrs.update({"budget_kind": kind, "limits": lim, "limit_sources": src, "budgets": dict(on_target)})
            try:
                best = best_within(df, budget_value, kind)
            except SpecError:
                if not widths:
                    raise
                best = None  # the width search may reach what bits alone cannot (a MACs budget)
        bits_best, width_best, wdf = best, None, None
        if widths:
            objective = kind
            hard_w = dict(given)
            for name, value in df.attrs.get("limits", {}).items():  # the profile's limits bind the width points too
                hard_w[name] = min(float(value), hard_w.get(name, math.inf))
            wdf = _run_width_search(t, model, run_dir, out, overwrite, resume, bits=wbits, widths=width_shares, n_trials=trials,
                                    objective_kind=objective, budgets=hard_w or None, target=None if source is None else target,
                                    finetune_epochs=finetune_epochs, act_bits=act_bits)
            from ..search.precision import join_points

            df = join_points(df, wdf[wdf["feasible"]].drop(columns=["state", "seconds", "reused", "feasible"]), kind)
            width_best = _best_width(df, kind, budget_value, max_drop)
            if width_best is not None and (best is None or _better(width_best, best, kind, max_drop)):
                best = width_best
            if best is not None and "chosen" in df:
                df["chosen"] = df.index == best.name
            if best is None and max_drop is None:
                raise SpecError(f"no bits-only point nor width point fits a budget of {budget_value:.6g} {kind}; "
                                f"expected a looser budget, more --trials or smaller --width-choices")
        recipe = None if best is None else promote(t, best, target=profile_target, act_bits=act_bits,
                                                   name=f"{t.name}-{kind}-{budget_value:g}" if budget_value is not None else f"{t.name}-drop-{max_drop:g}")
    except WorkbenchError as exc:
        _fail(exc)
    budget = budget_value
    shown = [c for c in df.columns if c not in ("bits", "pruning")]
    if recipe is None:  # the accuracy target is unreachable: the iterations, no recipe
        _write_files(run_dir, {"pareto.csv": df.to_csv(index=False)})
        typer.echo(df[shown].round(4).to_string(index=False))
        typer.echo(f"error: {df.attrs['message']}", err=True)
        typer.echo(f"wrote {out / 'pareto.csv'}")
        raise typer.Exit(1)
    _write_files(run_dir, {"pareto.csv": df.to_csv(index=False), "recipe.yaml": recipe.to_yaml()})
    if tracker is not None:  # the results first, then the tracking
        _track(tracker, lambda: tracker.log_run(f"search {t.name}", params={"task": t.name, "target": target, "budget_kind": kind, "budget": budget,
                                                             "act_bits": act_bits, "chosen_bits": best["bits"], "max_drop": "" if max_drop is None else max_drop,
                                                             "limits": json.dumps(df.attrs.get("limits", {}), sort_keys=True),
                                                             "budgets": json.dumps(df.attrs.get("budgets", {}), sort_keys=True),
                                                             "bound_by": best.get("bound_by", "")},
                                 metrics={"measured_metric": best["measured_metric"], "estimated_metric": best["estimated_metric"],
                                          "weight_kib": best["weight_kib"], "bops": best["bops"], "points": len(df)},
                                 artifacts=[out / "pareto.csv", out / "recipe.yaml"]))
    typer.echo(df[shown].round(4).to_string(index=False))
    unit = get_cost_kind(kind).unit
    why = f"the cheapest within {max_drop:g} of float, measured" if max_drop is not None else "best measured within the budget"
    typer.echo(f"chosen ({best['kind']}, {why}): {kind} {best[kind]:.6g} {unit}, {best['weight_kib']:.2f} KiB, {best['bops']:.3g} BOPs, "
               f"measured {best['measured_metric']:.4f}" + ("" if math.isnan(float(best["estimated_metric"])) else f" (estimate {best['estimated_metric']:.4f})")
               + (f", pruned to widths {best['widths']}" if str(best.get("pruning", "") or "") else ""))
    limits_used, sources = df.attrs.get("limits", {}), df.attrs.get("limit_sources", {})
    budgets_used = df.attrs.get("budgets", {})

    def _limit(k: str) -> str:
        unit_k = get_cost_kind(k).unit
        if k in budgets_used and (k not in limits_used or budgets_used[k] < limits_used[k]):
            also = f"; {sources.get(k, 'limit')}: {limits_used[k]:g}" if k in limits_used else ""
            return f"{k} <= {budgets_used[k]:g} {unit_k} (--budget, on target {target}{also})"
        return f"{k} <= {limits_used[k]:g} {unit_k} ({sources.get(k, 'limit')})"

    head = f"budget: {kind} <= {budget:g} {unit}; " if budget is not None else f"cost minimised: {kind}; "
    typer.echo(head + "limits: " + (", ".join(map(_limit, [*limits_used, *(k for k in budgets_used if k not in limits_used)])) or "none"))
    if max_drop is not None:
        typer.echo(df.attrs["message"])
    elif str(best.get("pruning", "") or ""):
        typer.echo("bound by: a width + bits trial (no per-layer estimate says what holds it back)")
    else:
        # what held the search back at this budget: the ILP's point solved at it
        at = df[(df["kind"] == "ilp") & ((df["budget"] - budget).abs() <= 1e-9 * abs(budget))]
        solved = at.iloc[0] if len(at) else best
        held = [h for h in str(solved.get("bound_by", "") or "").split(",") if h]
        other = "" if solved["bits"] == best["bits"] else (f" (that is the ILP's point at this budget, {solved[kind]:.6g} {unit}; "
                                                           f"the chosen {best['kind']} point measured better)")
        typer.echo("bound by: " + (", ".join(f"the budget {kind} <= {budget:g}" if h == "budget" else _limit(h) for h in held) if held
                                   else "nothing (no wider bit-width is held back)") + other)
    if widths:
        typer.echo(_width_line(bits_best, width_best, best, kind, unit, wdf))
    typer.echo(f"wrote {out / 'pareto.csv'}, {out / 'recipe.yaml'}" + (f", {out / 'widths'}" if widths else ""))


WIDTH_BITS = (8, 6, 4)  # the width search's per-layer weight bits: these of the profile's, when it has two or more of them


def _width_options(widths: bool, trials: int, finetune_epochs: int, width_choices: str) -> tuple[float, ...] | None:
    """The width shares of ``--width-choices`` (None without ``--widths``); one-line SpecError for bad options."""
    from ..infra.errors import SpecError

    if not widths:
        return None
    if trials < 1:
        raise SpecError(f"--trials {trials}: expected a whole number of width-search trials >= 1")
    if finetune_epochs < 0:
        raise SpecError(f"--finetune-epochs {finetune_epochs}: expected a whole number of epochs >= 0")
    try:
        shares = tuple(float(x) for x in width_choices.split(","))
    except ValueError:
        raise SpecError(f"--width-choices {width_choices!r}: expected comma-separated shares of channels kept in (0, 1], such as 1.0,0.75,0.5") from None
    if not shares or any(not (0 < x <= 1) for x in shares) or len(set(shares)) != len(shares):
        raise SpecError(f"--width-choices {width_choices!r}: expected distinct comma-separated shares of channels kept in (0, 1], such as 1.0,0.75,0.5")
    return shares


def _width_bits(profile_bits, source) -> tuple[int, ...]:
    """The width search's weight bits: the profile's that the target builds, at most three (8, 6, 4 first)."""
    from ..infra.errors import SpecError

    ok = [b for b in sorted(set(profile_bits), reverse=True) if not (source is not None and source.supported_bits) or b in source.supported_bits]
    if not ok:
        raise SpecError(f"--widths: the target builds none of the profile's weight bits {sorted(profile_bits)}")
    preferred = [b for b in WIDTH_BITS if b in ok]
    return tuple(preferred) if len(preferred) >= 2 else tuple(ok[:3])


def _run_width_search(t, model, run_dir, out: Path, overwrite: bool, resume: str, **kw):
    """The width search in ``out/widths``; ``out`` is claimed first (marked as this search's, the
    ``widths`` folder kept) so that the result folder moved in at the end keeps the study."""
    from ..search.width_search import WidthSearchConfig, width_search

    config = WidthSearchConfig(**kw)  # bad options fail here, before the folder is claimed
    run_dir.claim()  # an earlier run's folder (--overwrite) is taken over: marked as this search's
    return width_search(t, model, out=out / "widths", overwrite=overwrite, progress=False, config=config)


def _best_width(df, kind: str, budget, max_drop):
    """The best width point of the joined table within the budget (or, with ``max_drop``, the
    cheapest within the drop), or None."""
    from ..infra.errors import SpecError
    from ..search.precision import best_within

    rows = df[df["kind"] == "width"]
    if rows.empty:
        return None
    if max_drop is not None:
        ok = rows[rows["measured_metric"] >= df.attrs.get("fp_metric", math.inf) - max_drop - 1e-12]
        return None if ok.empty else ok.sort_values([kind, "measured_metric"], ascending=[True, False], kind="stable").iloc[0]
    try:
        return best_within(rows, budget, kind)
    except SpecError:
        return None


def _better(a, b, kind: str, max_drop) -> bool:
    """Whether point ``a`` beats ``b``: cheaper (``max_drop``) or better measured, then cheaper."""
    if max_drop is not None:
        return (a[kind], -a["measured_metric"]) < (b[kind], -b["measured_metric"])
    return (-a["measured_metric"], a[kind]) < (-b["measured_metric"], b[kind])


def _width_line(bits_best, width_best, best, kind: str, unit: str, wdf) -> str:
    """One line: the best bits-only point against the best width+bits point, and which was chosen."""
    def show(p):
        return "none within the budgets" if p is None else f"{p['measured_metric']:.4f} at {kind} {p[kind]:.6g} {unit}"

    which = "width+bits" if width_best is not None and best is width_best else "bits-only"
    stats = f"{int(wdf['feasible'].sum())} of {len(wdf)} width trials feasible, {wdf.attrs.get('resumed', 0)} resumed"
    return f"bits-only: {show(bits_best)}; width+bits: {show(width_best)}; chosen: {which} ({stats})"


@app.command()
def prune(task: str = typer.Argument(..., help=TASK_HELP),
          imports: Optional[list[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
          method: str = typer.Option("structured", help="structured | unstructured | nm"),
          sparsity: str = typer.Option("0.25,0.5,0.75", help="comma-separated levels in [0, 1) (nm: multiples of 1/m, 0.5 = 2:4)"),
          criterion: str = typer.Option("l1", help="l1 | l2 | taylor | bn_scale (structured only)"),
          scope: Optional[str] = typer.Option(None, help="global rows: layer (each layer loses the level) | global (one ranking); default by method"),
          m: int = typer.Option(4, help="group size of N:M sparsity"),
          layers: Optional[str] = typer.Option(None, help="comma-separated layers for the per-layer rows (default: all)"),
          per_layer: bool = typer.Option(True, help="per-layer rows (only that layer pruned)"),
          finetune_epochs: int = typer.Option(0, min=0, help="seeded fine-tune epochs after each pruning"),
          finetune_lr: Optional[float] = typer.Option(None, help="fine-tune learning rate (default: the task's)"),
          latency_runs: int = typer.Option(50, min=0, help="onnxruntime timed runs per row (0: skip)"),
          no_store: bool = typer.Option(False, "--no-store", help="do not read or write the result store"),
          executor: str = typer.Option("local", help=EXECUTOR_HELP),
          mlflow: Optional[str] = typer.Option(None, help=MLFLOW_HELP),
          out: Optional[Path] = typer.Option(None, help="output directory (default: runs/<task>-prune-<time>)"),
          overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)) -> None:
    """Pruning sweep, per layer and global: writes DIR/pruning.csv (metric, params, MACs, ONNX bytes, latency)."""
    _quiet_libraries()
    tracker = _tracker(mlflow)
    from ..tasks.baseline import load_or_train_baseline
    from ..infra.errors import SpecError, WorkbenchError
    from ..core.pruning import prunable_layers
    from ..analysis.pruning_sweep import PruningSweepConfig, pruning_sweep
    from ..infra.executors import make_executor
    from ..tasks.registry import resolve_task_arg

    out = out or _default_out(f"{task}-prune")
    run_dir = _run_dir(out, overwrite, "prune")
    try:
        levels = []
        for i, part in enumerate(p.strip() for p in sparsity.split(",")):
            try:
                levels.append(float(part))
            except ValueError:
                raise SpecError(f"sparsity[{i}]: expected a value in [0, 1); got {part!r}") from None
        config = PruningSweepConfig(method=method, sparsities=tuple(levels), criterion=criterion, scope=scope, m=m, per_layer=per_layer,
                                    layers=None if layers is None else tuple(s.strip() for s in layers.split(",")),
                                    finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, latency_runs=latency_runs)
        t = resolve_task_arg(task, tuple(imports or ()))
        if config.layers is not None:
            prunable_layers(t.create_model(), list(config.layers))  # unknown names: before the baseline is trained
        executor = make_executor(executor)
        store = _open_store() if not no_store else False  # a read-only or corrupt store is dealt with before any work
        model = load_or_train_baseline(t)
        df = pruning_sweep(t, model, config, store=store, executor=executor, tracking=False)
    except WorkbenchError as exc:
        _fail(exc)
    _write_files(run_dir, {"pruning.csv": df.to_csv(index=False)})
    if tracker is not None:  # the results first, then the tracking
        from ..infra.tracking import log_sweep

        _track(tracker, lambda: log_sweep(tracker, "pruning", t, config, df, strict=True) or df.attrs["mlflow_run_id"])
    typer.echo(f"{t.name}: {len(df)} rows ({df.attrs['computed']} computed, {df.attrs['from_store']} from the store)")
    glob = df[df["layer"] == "global"]
    if len(glob):
        typer.echo("global:")
        typer.echo(glob[["sparsity", "metric", "params", "macs", "weight_sparsity", "onnx_bytes", "latency_ms", "status"]].round(4).to_string(index=False))
    refused = df[df["status"].str.startswith("refused")].drop_duplicates("layer")
    for _, r in refused.iterrows():
        typer.echo(f"not pruned: {r['layer']}: {r['status'].removeprefix('refused: ')}")
    typer.echo(f"wrote {out / 'pruning.csv'}")


recipe_app = typer.Typer(help="Work with recipe files.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("diff")
def recipe_diff_cmd(a: Path = typer.Argument(...), b: Path = typer.Argument(...),
                    allow_code: bool = typer.Option(False, "--allow-code", help=ALLOW_CODE_HELP)) -> None:
    """Print the per-layer differences between two recipes (per selector when their task is a
    factory and code is not allowed)."""
    _quiet_libraries()
    from ..infra.errors import WorkbenchError
    from ..runs.recipe import code_allowed, load_recipe, recipe_diff, resolve_task

    try:
        ra, _ = load_recipe(a)
        rb, _ = load_recipe(b)
        same = ra.task == rb.task and (ra.task.factory is None or code_allowed(allow_code or None))
        model = resolve_task(ra.task, allow_code=allow_code or None).create_model() if same else None
        lines = recipe_diff(ra, rb, model)
    except WorkbenchError as exc:
        _fail(exc)
    typer.echo("\n".join(lines) if lines else "no differences")


@recipe_app.command("schema")
def recipe_schema_cmd() -> None:
    """Print the recipe JSON Schema (recipe_version 1)."""
    from ..runs.recipe import Recipe

    typer.echo(json.dumps(Recipe.model_json_schema(), indent=2))


@recipe_app.command("check")
def recipe_check_cmd(recipe: Path = typer.Argument(...),
                     allow_code: bool = typer.Option(False, "--allow-code", help=ALLOW_CODE_HELP),
                     target_file: Optional[Path] = typer.Option(None, "--target-file", help=TARGET_FILE_HELP)) -> None:
    """Validate a recipe against its schema, its task's model, data checksum and target, without
    building (the schema alone when its task is a factory and code is not allowed)."""
    _quiet_libraries()
    from ..infra.errors import WorkbenchError
    from ..runs.recipe import check_recipe_against, code_allowed, load_recipe, recipe_profile, resolve_task

    try:
        r, sha = load_recipe(recipe)
        recipe_profile(r, target_file)  # the target, even when the task is not built
        if r.task.factory is not None and not code_allowed(allow_code or None):
            typer.echo(f"ok (schema only): {recipe} (recipe_version {r.recipe_version}, sha256 {sha}); task.factory {r.task.factory!r} "
                       f"was not imported: pass --allow-code to check it against its model and data")
            return
        task = resolve_task(r.task, allow_code=allow_code or None)
        check_recipe_against(r, task, task.create_model(), target_file)
    except WorkbenchError as exc:
        _fail(exc)
    typer.echo(f"ok: {recipe} (recipe_version {r.recipe_version}, sha256 {sha})")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
