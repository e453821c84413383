"""A search's hard constraints, checked before any work: limits, budgets, and the checked setup.

The target profile's limits with the caller's (:func:`resolve_limits`, :func:`check_limits`), the
hard ``budgets`` (:func:`resolve_budgets`, :func:`check_budgets`: each reachable alone and all
together), the swept budget values (:func:`check_budget_value`, :func:`check_budget`) and
``max_drop`` (:func:`check_max_drop`); each refusal a one-line SpecError. :func:`_setup` builds
the :class:`_Setup` every candidate of one search is evaluated against; :func:`preflight` runs the
same checks from the model's layer costs alone, before a sensitivity sweep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.cost import COST_KINDS, LayerCost, cost_table, get_cost_kind, layer_costs, load_target
from ..core.spec import short_repr
from ..infra.errors import SpecError
from .config import SearchConfig
from .problem import Cap, Problem, _measured_without_table, _tol, build_problem, smallest_budget
from .solvers import _milp


def check_budget(p: Problem, budget: float, unit: str) -> None:
    low = smallest_budget(p)
    if budget < low - _tol(low):
        where = f"every layer at {min(p.bits)} bits" if p.allowed.all() else "every layer at its cheapest allowed bits"
        raise SpecError(f"no assignment meets a budget of {budget:.6g} {unit}; the smallest reachable is {low:.6g} {unit} ({where})")



def resolve_limits(target, limits: dict[str, float] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The hard limits of a search: the target profile's budgets with a value, and ``limits``
    (cost kind -> value) of the caller, which may tighten a profile's limit but never loosen it.
    Returns (kind -> value, kind -> where it came from)."""
    values = dict(target.limits)
    sources = {k: f"target {target.name}" for k in values}
    if limits is not None and not isinstance(limits, dict):
        raise SpecError(f"limits {limits!r}; expected a mapping of cost kind to value, such as {{'flash_kib': 128}}")
    for name, value in (limits or {}).items():
        kind = get_cost_kind(name)
        if kind.measured:
            raise SpecError(f"limit {name}: {name} is measured, not computed, so it cannot be a limit; computed kinds are "
                            f"{', '.join(k for k, v in COST_KINDS.items() if not v.measured)}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (math.isfinite(value) and value > 0):
            raise SpecError(f"limit {name}={value!r}; expected a positive finite number")  # true is not 1, nor '5' a number
        value = float(value)
        for other, fixed in target.limits.items():
            same = {name, kind.same_as or name} & {other, COST_KINDS[other].same_as or other}
            if same and value > fixed * (1 + 1e-12):
                raise SpecError(f"limit {name}={value:g} is over target {target.name}'s limit {other}={fixed:g} {kind.unit}; "
                                f"a profile's limits can be tightened, not loosened")
        if name not in values or value < values[name]:
            values[name], sources[name] = value, "limits"
    return values, sources



def check_limits(p: Problem, costs: dict[str, LayerCost], limits: dict[str, float], sources: dict[str, str], act_bits: int) -> None:
    """Before any work: every limit is reachable on its own (one-line SpecError naming the limit and the figure)."""
    for name, value in limits.items():
        kind = get_cost_kind(name)
        who = f"{sources.get(name, 'the')}'s" if sources.get(name, "").startswith("target") else "the"
        if kind.additive:
            lim = next(lim for lim in p.limits if lim.kind == name)
            runs = np.ones(lim.cost.shape, bool) if p.runs is None else p.runs  # what the target cannot run is no cheapest
            low = float(np.where(runs, lim.cost, np.inf).min(axis=1).sum()) + lim.offset
            if low > value + _tol(value):
                raise SpecError(f"no assignment meets {who} {name} limit of {value:g} {kind.unit}; the smallest reachable is "
                                f"{low:.6g} {kind.unit} (every layer at its cheapest of {', '.join(map(str, p.bits))} bits)")
        elif not kind.weight_dependent:
            need = kind.value(cost_table(costs, {}, act_bits))
            if need > value + _tol(value):
                raise SpecError(f"{who} {name} limit of {value:g} {kind.unit} is below the model's {need:.6g} {kind.unit} "
                                f"({kind.label} at {act_bits} activation bits, whatever the weight bits)")



def resolve_budgets(budgets, cost_table=None) -> dict[str, float]:
    """Hard budgets (cost kind -> positive number) checked before any work: each kind registered
    (one-line SpecError naming the closest and the known ones), each value a positive number, a
    measured kind (``latency_ms``, ``cycles``) only with a cost table that holds it."""
    if budgets is None:
        return {}
    if not isinstance(budgets, Mapping):
        raise SpecError(f"budgets {short_repr(budgets)}; expected a mapping of cost kind to value, such as {{'latency_ms': 5, 'ram_kib': 64}}")
    out = {}
    for name, value in budgets.items():
        kind = get_cost_kind(name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (math.isfinite(value) and value > 0):
            raise SpecError(f"budget {name}={value!r}; expected a positive number in {kind.unit}")
        if kind.measured and (cost_table is None or name not in cost_table.kinds):
            raise SpecError(_measured_without_table(name, "budget", cost_table))
        out[name] = float(value)
    return out



def check_budget_value(value, what: str = "budget") -> float:
    """A budget as a positive finite float; NaN, infinity, booleans and text are a one-line
    SpecError naming ``what``, before any work (an infinite budget would name a wrong ILP point)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (math.isfinite(value) and value > 0):
        raise SpecError(f"{what} {value!r}; expected a positive finite number")
    return float(value)



def check_max_drop(max_drop) -> float | None:
    """``max_drop`` as a float in [0, 1] (None stays None); one-line SpecError otherwise."""
    if max_drop is None:
        return None
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float, np.integer, np.floating)) or not (0 <= max_drop <= 1):
        raise SpecError(f"max_drop {max_drop!r}; expected a number in [0, 1]: the largest allowed drop of the measured metric "
                        f"below the float metric, in the metric's units (0.005 = half a point of accuracy)")
    return float(max_drop)



def _cap_value(cap: Cap, choice: list[int]) -> float:
    return max(float(cap.matrix[np.arange(len(choice)), choice].max()) + cap.offset, cap.floor)



def _cheapest_cap(p: Problem, cap: Cap, extra: list | None = None) -> float | None:
    """The smallest value of ``cap``'s kind reachable with every other constraint held (None: none)."""
    from dataclasses import replace

    rest = replace(p, caps=tuple(c for c in p.caps if c is not cap))
    for t in np.unique(cap.matrix[~np.isnan(cap.matrix)] + cap.offset):
        trial = replace(rest, caps=rest.caps + (Cap(cap.kind, float(t), cap.matrix, cap.offset),))
        if trial.allowed.any(axis=1).all() and _milp(trial, np.zeros(p.cost.size), None, extra) is not None:
            return max(float(t), cap.floor)
    return None



def check_budgets(p: Problem, budgets: dict[str, float]) -> None:
    """Before any work: every budget reachable alone, and all of them (with the limits) together.
    One-line SpecError naming the cheapest reachable value of each budget's kind: alone when one
    is out of reach, with the others held when they contradict each other."""
    if not budgets:
        return
    mine = [lim for lim in p.limits if lim.source.startswith("budgets")] + list(p.caps)

    def unit(kind):
        return get_cost_kind(kind).unit

    runs = np.ones(p.cost.shape, bool) if p.runs is None else p.runs  # what the target cannot run is no cheapest
    alone = {}
    for c in mine:
        if isinstance(c, Cap):
            alone[c.kind] = max(float(np.where(runs, c.matrix, np.inf).min(axis=1).max()) + c.offset, c.floor)
        else:
            alone[c.kind] = float(np.where(runs, c.cost, np.inf).min(axis=1).sum()) + c.offset
    listed = ", ".join(f"{k} {v:.6g} {unit(k)}" for k, v in alone.items())
    for c in mine:
        if alone[c.kind] > c.value + _tol(c.value):
            raise SpecError(f"no configuration meets the budget {c.kind} <= {c.value:g} {unit(c.kind)} ({c.source[len('budgets ('):-1]}); "
                            f"the cheapest reachable is {alone[c.kind]:.6g} {unit(c.kind)}" + (f" (cheapest reachable per budget: {listed})" if len(alone) > 1 else ""))
    if _milp(p, np.zeros(p.cost.size)) is not None:
        return
    held = {}
    for c in mine:
        if isinstance(c, Cap):
            held[c.kind] = _cheapest_cap(p, c)
        else:
            choice = _milp(p, c.cost.ravel(), skip=c.kind)
            held[c.kind] = None if choice is None else float(c.cost[np.arange(len(choice)), choice].sum()) + c.offset
    given = ", ".join(f"{k} <= {v:g} {unit(k)}" for k, v in budgets.items())
    lims = [lim.kind for lim in p.limits if not lim.source.startswith("budgets")]
    cheapest = ", ".join(f"{k} {'none' if v is None else f'{v:.6g} {unit(k)}'}" for k, v in held.items())
    raise SpecError(f"the budgets {given} contradict each other{' and the limits ' + ', '.join(lims) if lims else ''}: each is reachable alone, "
                    f"not all together; the cheapest reachable of each with the others held: {cheapest}")



def over_limits(values: dict, limits: dict[str, float]) -> list[str]:
    """The limits a point's computed costs (kind -> value) break."""
    return [name for name, value in limits.items() if name in values and values[name] > value + _tol(value)]



def _default_measure_costs():
    try:
        from .cost_tables import measure_point
    except ImportError:
        raise SpecError("cost_table given but workbench.search.cost_tables.measure_point is not available in this workbench; "
                        "pass measure_costs=callable(task, model, assignment, target, act_bits) -> {kind: value}") from None
    return measure_point



@dataclass
class _Setup:
    """What every candidate of one search is evaluated against (checked before any work)."""

    target: object
    p: Problem
    costs: dict
    limits: dict
    sources: dict
    budgets: dict
    table: object
    measure_costs: Callable | None
    default_costs: bool = False  # measure_costs is workbench's measure_point: its numbers may be stored

    @property
    def hard(self) -> dict[str, float]:
        """Every hard constraint on a point's columns: the limits and the budgets (the tighter of both)."""
        out = dict(self.limits)
        for k, v in self.budgets.items():
            out[k] = min(v, out.get(k, math.inf))
        return out



def _setup(task, model, sens, config, budgets, limits, cost_table, measure_costs) -> _Setup:
    from .realised import check_toolchain, realised_costs

    target = load_target(config.target)
    if config.act_bits not in target.act_bits:
        raise SpecError(f"act_bits {config.act_bits} is not allowed by target {target.name}; it allows {target.act_bits}")
    if cost_table is not None and not hasattr(cost_table, "matrix"):
        raise SpecError(f"cost_table: expected a workbench.search.cost_tables.TargetCostTable; got {type(cost_table).__name__}")
    hard = resolve_budgets(budgets, cost_table)
    bk = get_cost_kind(config.budget_kind)
    if bk.measured and (cost_table is None or config.budget_kind not in cost_table.kinds):
        raise SpecError(_measured_without_table(config.budget_kind, "budget kind", cost_table))
    values, sources = resolve_limits(target, limits)
    realised = [k for k in dict.fromkeys([config.budget_kind, *hard, *values])
                if k in COST_KINDS and COST_KINDS[k].artifact and (cost_table is None or k not in cost_table.kinds)]
    for k in realised:  # a realised kind whose exporter is not installed: refused before any work
        check_toolchain(k)
    additive = {k: v for k, v in values.items() if get_cost_kind(k).additive}
    bits = list(target.weight_bits)
    if cost_table is not None:
        bits = [b for b in bits if b in cost_table.bits]
        if not bits:
            raise SpecError(f"the {cost_table.target} cost table holds bits {', '.join(map(str, cost_table.bits))}, none of target "
                            f"{target.name}'s {', '.join(map(str, target.weight_bits))}")
    costs = layer_costs(model, task.example_input())
    if realised:  # their artifacts' overhead, measured once per model (then a store lookup)
        from ..export.qcdq import resolve_weight_encoding

        costs = realised_costs(task, model, costs, realised, config.act_bits, resolve_weight_encoding(target.weight_encoding or "u8"))
    p = build_problem(sens, costs, bits, config.budget_kind, config.act_bits, config.objective, additive, sources, hard, cost_table)
    check_limits(p, costs, values, sources, config.act_bits)
    check_budgets(p, hard)
    default_costs = cost_table is not None and measure_costs is None
    if default_costs:
        measure_costs = _default_measure_costs()
    return _Setup(target, p, costs, values, sources, hard, cost_table, measure_costs, default_costs)



def preflight(task, model, config: "SearchConfig", budgets=None, limits=None, cost_table=None, extra_budgets: tuple = ()) -> None:
    """Before a sensitivity sweep: what :func:`search` would refuse of these arguments (the
    target's bits and limits, ``budgets``, ``limits``, each of ``extra_budgets`` reachable), from
    the model's layer costs alone: one-line SpecError now rather than after the sweep."""
    costs = layer_costs(model, task.example_input())
    target = load_target(config.target)
    rows = [{"layer": name, "depth": i, "mode": "quantise-one", "weight_bits": b, "metric_delta": 0.0, "output_mse": 0.0}
            for i, name in enumerate(costs) for b in target.weight_bits]
    s = _setup(task, model, pd.DataFrame(rows), config, budgets, limits, cost_table, None)
    unit = get_cost_kind(config.budget_kind).unit
    for b in extra_budgets:
        check_budget(s.p, check_budget_value(b), unit)
