"""The sweep commands: ``workbench sensitivity`` (per-layer quantisation sensitivity) and
``workbench prune`` (the pruning sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import (EXECUTOR_HELP, IMPORT_HELP, MLFLOW_HELP, OVERWRITE_HELP, TASK_HELP, _default_out, _fail, _load_spec, _open_store,
                  _quiet_libraries, _run_dir, _track, _tracker, _write_files)


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
