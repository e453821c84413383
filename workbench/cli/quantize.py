"""The quantisation commands: ``workbench demo``, ``quantize`` and ``describe``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import IMPORT_HELP, OVERWRITE_HELP, TASK_HELP, _default_out, _fail, _load_spec, _print_summary, _quiet_libraries


PACK_HELP = ("weight storage: int4 (weights of at most 4 bits two a byte in QCDQ; QONNX weights as integers at their bit width) "
             "or none (int8 containers in QCDQ, float weights in QONNX); default int4")
WEIGHT_ENCODING_HELP = "int8 weight storage in the QCDQ file: u8 (exact on every CPU), s8 (faster with VNNI or on ARM) or auto (probe this CPU: s8 with VNNI or ARM, else u8); default auto"


RECIPE_HELP = ("also write a recipe of this run (the uniform --weight-bits / --act-bits, or the --spec file's per-layer settings) "
               "to FILE; `workbench apply FILE` rebuilds the same ONNX bytes. Inside --out it is one of the run's files; elsewhere "
               "an existing FILE is replaced only with --overwrite and only when it is a recipe")


def recipe_destination(path: Path, out: Path, overwrite: bool) -> str | None:
    """Where ``quantize --recipe`` writes, checked before any work: the path relative to ``out``
    when it lies inside it (written with the run's files, so listed in its manifest), else None
    (written beside, atomically). A folder, a symlink, an existing file without ``overwrite``, or
    one that is not a recipe (the workbench never replaces what it did not write) is a one-line
    :class:`~workbench.infra.errors.OutputPathError`."""
    from ..infra.errors import OutputPathError, WorkbenchError
    from ..runs.recipe import load_recipe

    where = path.absolute()
    base = out.absolute()
    if where == base:
        raise OutputPathError(f"--recipe {str(path)!r} is the --out folder; expected a file name, such as {str(out / 'recipe.yaml')!r}")
    if base in where.parents:
        return str(where.relative_to(base))
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OutputPathError(f"--recipe {str(path)!r} is {'a symlink' if path.is_symlink() else 'not a regular file'}; expected a recipe file path")
    ancestor = next((p for p in where.parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise OutputPathError(f"--recipe {str(path)!r}: {str(ancestor)!r} is a file; expected a folder to write the recipe into")
    if path.exists():
        if not overwrite:
            raise OutputPathError(f"--recipe {str(path)!r} exists; expected a new file, or --overwrite to replace a recipe the workbench wrote")
        try:
            load_recipe(path)
        except WorkbenchError:
            raise OutputPathError(f"--recipe {str(path)!r} exists and is not a workbench recipe, so it is never replaced; expected a new file") from None
    return None


def _recipe_name(path: Path) -> str:
    """A recipe ``name`` (letters, digits, ``_.+-``) from the recipe file's stem."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.+-]", "-", path.stem).lstrip("_.+-")[:100]
    return name or "recipe"


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
             recipe: Optional[Path] = typer.Option(None, "--recipe", metavar="FILE", help=RECIPE_HELP),
             overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)) -> None:
    """Quantise a task with a spec, export (QCDQ and QONNX by default, or each --format), verify, and
    report; with --recipe FILE also write the recipe that rebuilds it."""
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
        in_out = None if recipe is None else recipe_destination(recipe, out, overwrite)  # before any work
        t = resolve_task_arg(task, tuple(imports or ()))
        s = _load_spec(spec, weight_bits, act_bits)
        ptq = PTQConfig(bias_correction=bias_correction, equalize_iters=equalize_iters)
        files = {}
        if recipe is not None:
            from ..export.qcdq import resolve_weight_encoding
            from ..runs.recipe import run_recipe

            resolve_weight_encoding(weight_encoding, vnni=False)  # a bad value fails before any work

            def recipe_yaml(summary: dict) -> str:
                return run_recipe(t, s, summary, name=_recipe_name(recipe), ptq=ptq, formats=fmts, weight_encoding=weight_encoding,
                                  pack=pack).to_yaml()

            if in_out is not None:
                files[in_out] = recipe_yaml
        summary = run_job(t, {"spec": s}, out, ptq=ptq, formats=fmts, weight_encoding=weight_encoding, overwrite=overwrite, pack=pack,
                          files=files)
        if recipe is not None and in_out is None:
            from ..infra.fileio import atomic_write_text

            atomic_write_text(recipe, recipe_yaml(summary))
    except WorkbenchError as exc:
        _fail(exc)
    _print_summary(summary, out)
    if recipe is not None:
        typer.echo(f"wrote {recipe} (workbench apply {recipe} rebuilds it{' --allow-code' if t.factory else ''})")


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
