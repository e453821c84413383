"""``workbench search``: the mixed-precision search under budgets (and, with ``--widths``, the
width-and-bits search beside it), from its options to the promoted recipe and the lines it prints."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Optional

import typer

from .app import (EXECUTOR_HELP, IMPORT_HELP, MLFLOW_HELP, OVERWRITE_HELP, TASK_HELP, _default_out, _fail, _open_store, _quiet_libraries,
                  _run_dir, _track, _tracker, _write_files)


WIDTHS_HELP = ("after the bits search, a width-and-bits search (Optuna, per-stage channel widths) under the same budgets, in DIR/widths; "
               "its feasible trials join pareto.csv and the best point of both is promoted (a pruned one with its pruning section)")
BUDGET_HELP = ("KIND=VALUE: a hard budget on a cost kind (weight_kib, flash_kib, bops, macs, peak_act_kib, ram_kib, or one you registered; "
               "`workbench costs` lists them; latency_ms and cycles only with a --target that measures them), on top of the target's limits; "
               "repeatable, in any order (the order changes nothing): the search maximises the measured metric and the chosen point meets "
               "every budget. The additive kind the search sweeps is chosen for you: the target profile's cost kind when it is budgeted, else "
               "the first budgeted additive kind in `workbench costs` order, else (no budgeted kind is additive, such as ram_kib alone) the "
               "profile's cost kind with no value of its own, the chosen point then being the best measured within the budgets; with --max-drop "
               "that kind is the cost minimised. A budget looser than one of the target's limits is refused, but on the swept kind, where the limit "
               "binds (and the output says so). VALUE alone is in the target's cost kind; --budget-kib V and --budget-bops V are "
               "--budget weight_kib=V and --budget bops=V")
TARGET_HELP = ("a target profile (cpu-int8-ort, fpga-dataflow, mcu, or a YAML file), or a deployment target with a cost source "
               "(workbench.search.cost_tables.COST_SOURCES, such as onnxruntime): then a per-layer cost table is measured on it, budgets may be in its "
               "own units (--budget latency_ms=5), and every candidate is measured on it")
MAX_DROP_HELP = ("accuracy target: the cheapest configuration (on the swept kind, see --budget) whose MEASURED metric is at most this far "
                 "below the float metric, an absolute drop in the metric's units (0.005 = half a point of accuracy), in [0, 1], within every "
                 "budget; before it gives up the widest configuration the target offers is measured too; exit 1 when even that misses it")


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
    from ..infra.errors import WorkbenchError
    from ..runs.recipe import promote

    out = out or _default_out(f"{task}-search")
    resume = None
    if widths:  # a re-run with the same arguments continues the width study in DIR/widths
        resume = "search-widths:" + hashlib.sha256(json.dumps([task, imports, sorted(budget or ()), budget_kib, budget_bops, target, profile_name, max_drop,
                                                               act_bits, finetune_epochs, width_choices], default=str).encode()).hexdigest()[:16]
    run_dir = _run_dir(out, overwrite, "search", keep=("widths",) if widths else (), resume=resume)
    try:
        p = _search_plan(task, imports, budget, budget_kib, budget_bops, target, profile_name, max_drop, act_bits, widths, trials,
                         finetune_epochs, width_choices)
        max_drop = p.max_drop
        model, df, best = _bits_search(p, executor, no_store, act_bits, widths)
        bits_best, width_best, wdf = best, None, None
        if widths:
            df, best, width_best, wdf = _join_widths(p, model, df, best, run_dir, out, overwrite, resume, trials, finetune_epochs, act_bits, target)
        recipe = None if best is None else promote(p.t, best, target=p.profile_target, act_bits=act_bits, name=_recipe_name(p))
    except WorkbenchError as exc:
        _fail(exc)
    _report_search(p, df, best, recipe, run_dir, out, tracker, target, act_bits, widths, (bits_best, width_best, wdf))


def _recipe_name(p) -> str:
    """The promoted recipe's name: the task and the swept budget (or the drop, or the budgets given)."""
    if p.budget_value is not None:
        return f"{p.t.name}-{p.kind}-{p.budget_value:g}"
    if p.max_drop is not None:
        return f"{p.t.name}-drop-{p.max_drop:g}"
    return "-".join([p.t.name, *(f"{k}-{v:g}" for k, v in p.given)])


def _within(budget_value: float | None) -> float:
    """The swept kind's budget for :func:`best_within`: no value of its own (None) is no bound on it."""
    return math.inf if budget_value is None else budget_value


def _budgets_text(p) -> str:
    """The budgets of plan ``p`` in words, in the registry's order: "weight_kib <= 8 KiB, ram_kib <= 64 KiB"."""
    from ..core.cost import get_cost_kind

    return ", ".join(f"{k} <= {v:g} {get_cost_kind(k).unit}" for k, v in p.given) or "no budget"


def _sweep_kind(given: list[tuple[str, float]], profile) -> tuple[str, float | None]:
    """The additive kind the search sweeps and its budget value, whatever the order of the budgets:
    the profile's cost kind when it is budgeted, else the first budgeted additive kind in the
    registry's order, else the profile's cost kind with no value (None) of its own."""
    from ..core.cost import get_cost_kind

    values = dict(given)
    if profile.cost in values:
        return profile.cost, values[profile.cost]
    additive = [k for k, _ in given if get_cost_kind(k).additive]
    return (additive[0], values[additive[0]]) if additive else (profile.cost, None)


def _search_plan(task, imports, budget, budget_kib, budget_bops, target, profile_name, max_drop, act_bits, widths, trials, finetune_epochs,
                 width_choices):
    """What ``workbench search`` runs, from its options: the task, the cost source (a deployment
    target) or None, the profile, the kind swept and its budget (:func:`_sweep_kind`), the hard
    budgets (on the target's cost table) and limits, and the width search's bits and shares; the
    same whatever the order of the ``--budget`` options (``given`` is in the cost-kind registry's
    order); every option is checked before any work (one-line SpecError)."""
    from types import SimpleNamespace

    from ..core.cost import COST_KINDS, budget_kind, get_cost_kind, list_targets, load_target
    from ..infra.errors import SpecError
    from ..search.cost_tables import COST_SOURCES
    from ..search.config import SearchConfig
    from ..search.constraints import check_max_drop, resolve_limits
    from ..tasks.registry import resolve_task_arg

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
    SearchConfig(target=profile_target, budget_kind=profile.cost, act_bits=act_bits)  # a bad --act-bits: before any work
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
    given.sort(key=lambda kv: list(COST_KINDS).index(kv[0]))  # the order of the options changes nothing
    kind, budget_value = _sweep_kind(given, profile)
    if not get_cost_kind(kind).measured:
        budget_kind(kind)  # additive, so a search can budget it
    # every budget is hard; without --max-drop the swept kind's budget holds through the sweep and best_within
    hard = {k: v for k, v in given if max_drop is not None or k != kind}
    on_target = {k: v for k, v in hard.items() if k in measured_ok}  # read from the target's cost table
    limits = {k: v for k, v in hard.items() if k not in on_target}
    # a hard budget looser than the profile's limit fails before any work (on the swept kind the limit binds, and says so)
    resolve_limits(profile, limits)
    wbits = None
    if widths:  # the width search's bits and options, checked now rather than after the bits search
        from ..search.width_search import WidthSearchConfig

        wbits = _width_bits(profile.weight_bits, source)
        WidthSearchConfig(bits=wbits, widths=width_shares, n_trials=trials, objective_kind=kind, budgets=dict(given) or None,
                          target=None if source is None else target, finetune_epochs=finetune_epochs, act_bits=act_bits)
    return SimpleNamespace(t=t, target=target, source=source, profile=profile, profile_target=profile_target, max_drop=max_drop, given=given,
                           kind=kind, budget_value=budget_value, on_target=on_target, limits=limits, wbits=wbits, width_shares=width_shares)


def _bits_search(p, executor: str, no_store: bool, act_bits: int, widths: bool):
    """The baseline, the target's cost table (a cost source), the sensitivity sweep and the bits
    search of plan ``p``: ``(model, points, best point)``; the best is None where the accuracy
    target is unreachable, or (with ``widths``) where bits alone fit no budget."""
    from ..analysis.sensitivity import SensitivityConfig, sensitivity
    from ..infra.errors import SpecError
    from ..infra.executors import make_executor
    from ..search.config import SearchConfig
    from ..search.constraints import preflight, resolve_budgets, resolve_limits
    from ..search.front import best_within
    from ..search.precision import search
    from ..tasks.baseline import load_or_train_baseline

    t, kind, budget_value, max_drop, on_target, limits = p.t, p.kind, p.budget_value, p.max_drop, p.on_target, p.limits
    executor = make_executor(executor)
    store = _open_store() if not no_store else False  # a read-only or corrupt store is dealt with before any work
    model = load_or_train_baseline(t)
    table = None
    if p.source is not None:
        try:
            from ..search.cost_tables import build_cost_table
        except ImportError:
            raise SpecError("this workbench has no workbench.search.cost_tables.build_cost_table yet; give --target a profile") from None
        table = build_cost_table(t, model, p.target, bits=tuple(p.profile.weight_bits), act_bits=act_bits, store=store)
    resolve_budgets(on_target, table)
    config = SearchConfig(target=p.profile_target, budget_kind=kind, act_bits=act_bits)
    # budgets, limits and bits the search would refuse, refused before the sensitivity sweep
    preflight(t, model, config, budgets=on_target, limits=limits, cost_table=table,
              extra_budgets=(budget_value,) if budget_value is not None and max_drop is None and not widths else ())
    sens = sensitivity(t, model, SensitivityConfig(weight_bits=_swept_bits(p, model, kind, act_bits)), executor=executor, store=store)
    if max_drop is not None:
        df = search(t, model, sens, config, budgets=on_target, limits=limits, cost_table=table, max_drop=max_drop, store=store)
        return model, df, (df.loc[df.attrs["chosen"]] if df.attrs["reached"] else None)
    try:
        df = search(t, model, sens, config, budgets=on_target, extra_budgets=() if budget_value is None else (budget_value,), limits=limits,
                    cost_table=table, store=store,
                    executor=executor)
    except SpecError:
        if not widths:
            raise
        import pandas as pd  # bits alone cannot reach the budget (MACs): the width points only

        df = pd.DataFrame(columns=["kind", "budget", "bits", kind, "measured_metric", "estimated_metric", "bound_by"])
        lim, src = resolve_limits(p.profile, limits)
        df.attrs.update({"budget_kind": kind, "limits": lim, "limit_sources": src, "budgets": dict(on_target)})
    try:
        best = best_within(df, _within(budget_value), kind)
    except SpecError:
        if not widths:
            raise
        best = None  # the width search may reach what bits alone cannot (a MACs budget)
    return model, df, best


def _swept_bits(p, model, kind: str, act_bits: int) -> tuple[int, ...]:
    """The weight widths the sensitivity sweep needs: the profile's that the swept kind offers (a
    realised kind never offers a width its artifact stores no smaller than a wider one: onnx_kib
    sweeps 4 and 8 of 2-8); every profile width with --widths or a cost table (their searches read them)."""
    from ..core.cost import layer_costs
    from ..search.problem import offered_bits

    bits = tuple(p.profile.weight_bits)
    if p.wbits is not None or p.source is not None:
        return bits
    return offered_bits(layer_costs(model, p.t.example_input()), bits, kind, act_bits) or bits


def _join_widths(p, model, df, best, run_dir, out: Path, overwrite: bool, resume: str, trials: int, finetune_epochs: int, act_bits: int,
                 target: str):
    """The width search beside the bits search of plan ``p``: its feasible points joined to ``df``
    and the best of both; ``(points, best, best width point, width trials)``."""
    from ..infra.errors import SpecError
    from ..search.front import join_points

    kind, budget_value, max_drop = p.kind, p.budget_value, p.max_drop
    objective = kind
    hard_w = dict(p.given)
    for name, value in df.attrs.get("limits", {}).items():  # the profile's limits bind the width points too
        hard_w[name] = min(float(value), hard_w.get(name, math.inf))
    wdf = _run_width_search(p.t, model, run_dir, out, overwrite, resume, bits=p.wbits, widths=p.width_shares, n_trials=trials,
                            objective_kind=objective, budgets=hard_w or None, target=None if p.source is None else target,
                            finetune_epochs=finetune_epochs, act_bits=act_bits)
    df = join_points(df, wdf[wdf["feasible"]].drop(columns=["state", "seconds", "reused", "feasible"]), kind)
    width_best = _best_width(df, kind, _within(budget_value), max_drop)
    if width_best is not None and (best is None or _better(width_best, best, kind, max_drop)):
        best = width_best
    if best is not None and "chosen" in df:
        df["chosen"] = df.index == best.name
    if best is None and max_drop is None:
        raise SpecError(f"no bits-only point nor width point fits {_budgets_text(p)}; "
                        f"expected a looser budget, more --trials or smaller --width-choices")
    return df, best, width_best, wdf


def _report_search(p, df, best, recipe, run_dir, out: Path, tracker, target: str, act_bits: int, widths: bool, width_points) -> None:
    """Write pareto.csv (and recipe.yaml), track the run, and print the points, the chosen one and
    what bound it; exit 1 (pareto.csv only) when the accuracy target is unreachable."""
    from ..core.cost import get_cost_kind

    t, kind, budget, max_drop = p.t, p.kind, p.budget_value, p.max_drop
    bits_best, width_best, wdf = width_points
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
    why = (f"the cheapest within {max_drop:g} of float, measured" if max_drop is not None else
           "best measured within the budget" if budget is not None else "best measured within the budgets")
    typer.echo(f"chosen ({best['kind']}, {why}): {kind} {best[kind]:.6g} {unit}, {best['weight_kib']:.2f} KiB theoretical weights, {best['bops']:.3g} BOPs, "
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

    head = (f"budget: {kind} <= {budget:g} {unit}; " if budget is not None else f"cost minimised: {kind}; " if max_drop is not None else
            f"swept: {kind} (no budget on it: the best measured within the others); ")
    typer.echo(head + "limits: " + (", ".join(map(_limit, [*limits_used, *(k for k in budgets_used if k not in limits_used)])) or "none"))
    if max_drop is not None:
        typer.echo(df.attrs["message"])
    elif str(best.get("pruning", "") or ""):
        typer.echo("bound by: a width + bits trial (no per-layer estimate says what holds it back)")
    else:
        typer.echo(_bound_line(df, best, kind, unit, budget, _limit))
    if widths:
        typer.echo(_width_line(bits_best, width_best, best, kind, unit, wdf))
    typer.echo(f"wrote {out / 'pareto.csv'}, {out / 'recipe.yaml'}" + (f", {out / 'widths'}" if widths else ""))



def _bound_line(df, best, kind: str, unit: str, budget: float | None, limit_text) -> str:
    """"bound by: ..." of a budget search: what held the ILP's point at ``budget`` back (or, with no
    budget on the swept kind, the chosen point itself); ``limit_text(kind)`` words a limit."""
    if budget is not None:  # what held the search back at this budget: the ILP's point solved at it
        at = df[(df["kind"] == "ilp") & ((df["budget"] - budget).abs() <= 1e-9 * abs(budget))]
        solved = at.iloc[0] if len(at) else best
    else:
        solved = best
    held = [h for h in str(solved.get("bound_by", "") or "").split(",") if h]
    other = "" if solved["bits"] == best["bits"] else (f" (that is the ILP's point at this budget, {solved[kind]:.6g} {unit}; "
                                                       f"the chosen {best['kind']} point measured "
                                                       f"{'better' if best['measured_metric'] > solved['measured_metric'] else 'as well, for less'})")

    def name(h: str) -> str:
        if h != "budget":
            return limit_text(h)
        if budget is not None:
            return f"the budget {kind} <= {budget:g}"
        return f"the sweep's own {kind} <= {float(solved['budget']):.6g} (no budget on {kind} was given)"

    return "bound by: " + (", ".join(map(name, held)) if held else "nothing (no wider bit-width is held back)") + other


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
    from ..search.front import best_within

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
