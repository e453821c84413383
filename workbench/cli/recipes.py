"""The recipe commands: ``workbench apply``, ``deploy`` and ``qat`` (rebuild a recipe, deploy it to
targets, train it quantisation-aware) and the ``workbench recipe`` group (diff, schema, check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import (ALLOW_CODE_HELP, MLFLOW_HELP, OVERWRITE_HELP, TARGET_FILE_HELP, _default_out, _echo_table, _fail, _print_summary,
                  _quiet_libraries, _tracker)


def _pruning_label(spec: dict) -> str:
    from ..core.pruning import PruningSpec

    return PruningSpec.parse(spec).label


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


recipe_app = typer.Typer(help="Work with recipe files.", no_args_is_help=True)


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
