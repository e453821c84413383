"""The quantisation commands: ``workbench demo``, ``quantize`` and ``describe``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import IMPORT_HELP, OVERWRITE_HELP, TASK_HELP, _default_out, _fail, _load_spec, _print_summary, _quiet_libraries


PACK_HELP = ("weight storage: int4 (weights of at most 4 bits two a byte in QCDQ; QONNX weights as integers at their bit width) "
             "or none (int8 containers in QCDQ, float weights in QONNX); default int4")
WEIGHT_ENCODING_HELP = "int8 weight storage in the QCDQ file: u8 (exact on every CPU), s8 (faster with VNNI or on ARM) or auto (probe this CPU: s8 with VNNI or ARM, else u8); default auto"


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
