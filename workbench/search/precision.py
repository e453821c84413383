"""Mixed-precision search: per-layer weight bits under a budget, from a sensitivity table.

The estimate of an assignment is additive: ``fp_metric + sum over layers of metric_delta(layer,
bits)`` from a quantise-one weight sweep (positive changes, which are evaluation noise, count as
zero; ties are broken by the layers' output MSE). An exact integer linear program (scipy.optimize.milp)
maximises it under a budget of any additive cost kind (``workbench.core.cost.COST_KINDS``: packed
weight KiB, BOPs, MACs, ...); a greedy heuristic is the fallback. Sweeping budgets gives a front;
every candidate on it is then really built, calibrated and measured, beside uniform and random
baselines at the same budgets.

Limits are hard: the target profile's budgets with a value (the ``mcu``'s flash_kib 256 and
ram_kib 64) and the caller's ``limits``. Additive ones are further linear constraints of the
program (and the greedy solver and the baselines respect them); a limit on a kind the weight bits
do not change (peak activation RAM at fixed activation bits) is checked once, before any work. No
point over a limit is ever returned; ``bound_by`` says which constraint held each point back.

Several hard ``budgets`` (cost kind -> value) may be given at once. With a per-target cost table
(:class:`workbench.search.cost_tables.TargetCostTable`) a budget may be in the target's own units
(``latency_ms``, ``cycles``: measured kinds, budgetable only with a table): an additive kind is a
sum constraint (the layers' values plus the table's overhead), a non-additive one (a maximum over
layers, RAM) forbids every (layer, bits) whose value plus overhead passes it. Every candidate is
then also measured on the target; a candidate whose measured number breaks a budget is kept,
flagged (``within_budgets`` False), and never on the front nor chosen.

``max_drop`` turns the search into an accuracy target (:func:`search_accuracy_target`): the
cheapest configuration whose measured metric is within ``max_drop`` of the float metric.

What a candidate measures is kept in a :class:`~workbench.infra.store.ResultStore` (``store=``, like the
sweeps): its metric under a key of the model weights, data, activation bits and PTQ configuration;
its numbers on the target (default ``measure_point``) under one of the weights, data, activation
bits, target and toolchain version; its latency under one of the weights, data, activation bits,
PTQ configuration, number of runs, onnxruntime version and the host's CPU (model and count: a
store copied to another machine measures latency again); each row named by the bits
assignment. A second identical search is a lookup and builds nothing.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Callable

import numpy as np
import pandas as pd
from pydantic import BeforeValidator, Field, field_validator
from scipy.optimize import Bounds, LinearConstraint, milp
from tqdm.auto import tqdm

from ..core.cost import COST_KINDS, LayerCost, budget_kind as _budget_kind, cost_table, get_cost_kind, layer_costs, load_target, totals
from ..core.cost import cost_table as cost_table_of
from ..infra.errors import SpecError
from ..tasks.evaluate import predict
from ..core.options import OptionModel, choice, distinct, integer
from ..export.pipeline import PTQConfig, quantize_task
from ..core.spec import assignment_spec  # noqa: F401 (re-exported)
from ..core.spec import QuantSpec, short_repr
from ..infra.determinism import fixed_threads
from ..infra.store import ResultStore, SweepRecorder, resolve_store, sweep_fingerprint

SEARCH_VERSION = "1"  # what a stored candidate's numbers mean; bump when measuring changes


@dataclass(frozen=True)
class Limit:
    """A hard limit on an additive cost kind, as a constraint on the searched layers: their cost
    (``cost``, per layer and bits) must not pass ``value - offset`` (``offset``: the layers the
    search does not choose bits for)."""

    kind: str
    value: float
    cost: np.ndarray
    offset: float = 0.0
    source: str = ""

    @property
    def room(self) -> float:
        return self.value - self.offset


@dataclass(frozen=True)
class Cap:
    """A hard budget on a non-additive cost kind (a maximum over layers, such as RAM): every
    (layer, bits) whose value (``matrix``) plus ``offset`` (the target's overhead) passes ``value``
    is forbidden; ``floor``: what the layers the search does not choose bits for need already."""

    kind: str
    value: float
    matrix: np.ndarray
    offset: float = 0.0
    floor: float = -math.inf
    source: str = ""

    @property
    def allowed(self) -> np.ndarray:
        return self.matrix + self.offset <= self.value + _tol(self.value)


@dataclass(frozen=True)
class Problem:
    """Layers, allowed bits, per-(layer, bits) estimated metric change and cost."""

    layers: list[str]
    bits: list[int]
    delta: np.ndarray  # (layers, bits): metric change when only that layer is at those bits
    mse: np.ndarray  # (layers, bits): output MSE, a tie-breaker finer than the metric
    cost: np.ndarray  # (layers, bits): cost in the budget's unit
    fp_metric: float

    objective: str = "output_mse"
    limits: tuple = ()  # Limit, one per additive hard limit or budget
    caps: tuple = ()  # Cap, one per non-additive budget read per layer (forbidden variables)
    offset: float = 0.0  # the budget kind's part the searched layers do not explain (overhead, other layers)
    runs: np.ndarray | None = None  # (layers, bits): False where the cost table's target cannot run that layer at those bits (NaN)

    @property
    def allowed(self) -> np.ndarray:
        """(layers, bits): False where a cap forbids that layer at those bits, or the cost
        table's target cannot run it (a NaN in the table: TFLite Micro has no INT4 FULLY_CONNECTED)."""
        ok = np.ones(self.cost.shape, bool) if self.runs is None else self.runs.copy()
        for cap in self.caps:
            ok &= cap.allowed
        return ok

    @property
    def gain(self) -> np.ndarray:
        """Per (layer, bits) what the solvers maximise the sum of.

        ``output_mse``: minus the layer's output MSE (normalised), the smooth label-free signal
        (quantisation noise of layers adds up at the output). ``metric``: the metric change,
        ties broken towards lower output error.
        """
        if self.objective == "output_mse":
            return -self.mse_norm
        return self.delta - self._eps * self.mse_norm

    def score(self, choice: list[int]) -> float:
        """What the solvers maximise (the search's estimate, see ``gain``)."""
        return float(self.gain[np.arange(len(self.layers)), choice].sum())

    @property
    def mse_norm(self) -> np.ndarray:
        m = np.nan_to_num(self.mse, nan=1.0)
        return m / max(float(m.max()), 1e-30)

    @property
    def _eps(self) -> float:
        steps = np.diff(np.unique(np.round(self.delta, 12)))
        step = float(steps[steps > 0].min()) if (steps > 0).any() else 1.0
        return 0.5 * step / (len(self.layers) + 1)

    def estimate(self, choice: list[int]) -> float:
        return self.fp_metric + float(self.delta[np.arange(len(self.layers)), choice].sum())

    def total_cost(self, choice: list[int]) -> float:
        """The budget kind's value of ``choice`` (the searched layers' sum plus ``offset``)."""
        return float(self.cost[np.arange(len(self.layers)), choice].sum()) + self.offset

    def constraints(self, budget: float | None) -> list[tuple[str, np.ndarray, float]]:
        """(name, per-(layer, bits) cost, bound) of the budget (named "budget"; left out when
        ``budget`` is None) and of every limit."""
        own = [("budget", self.cost, float(budget) - self.offset)] if budget is not None else []
        return own + [(lim.kind, lim.cost, lim.room) for lim in self.limits]

    def within_limits(self, choice: list[int]) -> bool:
        rows = np.arange(len(self.layers))
        return (all(float(lim.cost[rows, choice].sum()) <= lim.room + _tol(lim.room) for lim in self.limits)
                and bool(self.allowed[rows, choice].all()))

    def assignment(self, choice: list[int]) -> dict[str, int]:
        return {layer: self.bits[c] for layer, c in zip(self.layers, choice)}


def _tol(bound: float) -> float:
    return abs(bound) * 1e-12


OBJECTIVES = ("output_mse", "metric")


def cost_matrix(costs: dict[str, LayerCost], layers: list[str], bits: list[int], kind: str, act_bits: int = 8) -> np.ndarray:
    """(layers, bits): each layer's cost of the additive kind ``kind`` at each weight bit-width."""
    k = _budget_kind(kind)
    out = np.zeros((len(layers), len(bits)))
    sub = {layer: costs[layer] for layer in layers}
    for j, b in enumerate(bits):
        out[:, j] = k.layer_values(cost_table(sub, {layer: b for layer in layers}, act_bits)).to_numpy(dtype=float)
    return out


def _measured_without_table(name: str, what: str, table) -> str:
    have = f"the {table.target} cost table has {', '.join(table.kinds)}" if table is not None else "no cost table was given"
    return (f"{what} {name}: {name} is measured, not computed, so only a per-target cost table prices it ({have}); "
            f"give cost_table=workbench.search.cost_tables.build_cost_table(...) of a target that measures {name}")


def kind_values(kind: str, costs: dict[str, LayerCost], layers: list[str], bits: list[int], act_bits: int = 8, table=None,
                what: str = "budget") -> tuple[np.ndarray, float, float, str]:
    """One cost kind as the search reads it: ``(matrix, offset, floor, source)``.

    ``matrix`` (layers, bits): each searched layer's value at each weight width; from the cost
    table ``table`` where it has the kind (the target's own units), else from the formula of
    :data:`workbench.core.cost.COST_KINDS` (a measured kind with no table: SpecError). ``offset``: what
    the searched layers do not explain (the table's overhead; an additive kind also counts the
    layers not searched, at 8 bits). ``floor``: a non-additive kind's value of the layers not
    searched (-inf: none). ``source``: "<target> cost table" or "formula"."""
    k = get_cost_kind(kind)
    others = [name for name in (table.layers if table is not None and kind in table.kinds else costs) if name not in layers]
    if table is not None and kind in table.kinds:
        matrix = table.matrix(kind, layers, list(bits))
        rest = table.matrix(kind, others, [8]).ravel() if others else np.zeros(0)
        overhead = float(table.overhead.get(kind, 0.0))
        if k.additive:
            return matrix, overhead + float(rest.sum()), -math.inf, f"{table.target} cost table"
        return matrix, overhead, (float(rest.max()) + overhead if len(rest) else -math.inf), f"{table.target} cost table"
    if k.measured:
        raise SpecError(_measured_without_table(kind, what, table))
    rest_table = cost_table({n: costs[n] for n in others}, {}, act_bits)
    if k.additive:
        return cost_matrix(costs, layers, list(bits), kind, act_bits), (float(k.value(rest_table)) if others else 0.0), -math.inf, "formula"
    matrix = np.array([[float(k.total(cost_table({layer: costs[layer]}, {layer: b}, act_bits))) for b in bits] for layer in layers])
    return matrix, 0.0, (float(k.total(rest_table)) if others else -math.inf), "formula"


def build_problem(sens: pd.DataFrame, costs: dict[str, LayerCost], bits: list[int], budget_kind: str, act_bits: int = 8,
                  objective: str = "output_mse", limits: dict[str, float] | None = None, sources: dict[str, str] | None = None,
                  budgets: dict[str, float] | None = None, cost_table=None) -> Problem:
    """Turn a quantise-one weight sweep into a search problem over ``bits``, budgeting the
    additive cost kind ``budget_kind``; ``limits`` (additive kinds only) become constraints too.

    ``budgets`` (cost kind -> value, checked by :func:`resolve_budgets`) are hard constraints
    read from ``cost_table`` where it has the kind, else from the formula: additive kinds as sum
    constraints, others as forbidden (layer, bits). With ``cost_table`` holding ``budget_kind``,
    the budget is in the target's units (its overhead in ``Problem.offset``)."""
    if objective not in OBJECTIVES:
        raise SpecError(f"objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    bk = get_cost_kind(budget_kind)
    if not bk.additive:
        _budget_kind(budget_kind)  # the registry's one-line message
    if bk.measured and (cost_table is None or budget_kind not in cost_table.kinds):
        raise SpecError(_measured_without_table(budget_kind, "budget kind", cost_table))
    sw = sens[(sens["mode"] == "quantise-one")]
    for col in ("weight_format", "act_format"):  # the search picks integer widths: other formats' rows are columns it does not read
        if col in sw:
            sw = sw[sw[col].isna() | (sw[col] == "int")]
    layers = [layer for layer in sw.sort_values("depth")["layer"].drop_duplicates() if layer in costs]
    delta = np.zeros((len(layers), len(bits)))
    mse = np.zeros_like(delta)
    for i, layer in enumerate(layers):
        rows = sw[sw["layer"] == layer]
        for j, b in enumerate(bits):
            hit = rows[rows["weight_bits"] == b]
            if hit.empty:
                raise SpecError(f"the sensitivity table has no row for layer {layer} at {b} weight bits; sweep bits {', '.join(map(str, bits))}")
            r = hit.iloc[0]
            d = r["metric_delta"] if math.isfinite(r["metric_delta"]) else -1.0  # a NaN case is the worst possible
            # A layer alone never improves the model: a positive change is evaluation noise, and
            # summing noise would steer the search. Ties are then broken by the output error.
            delta[i, j], mse[i, j] = min(0.0, d), r["output_mse"]
    if cost_table is not None and budget_kind in cost_table.kinds:
        cost, offset, _, _ = kind_values(budget_kind, costs, layers, list(bits), act_bits, cost_table)
    else:
        cost, offset = cost_matrix(costs, layers, list(bits), budget_kind, act_bits), 0.0
    others = {name: c for name, c in costs.items() if name not in layers}  # not searched: at 8 bits, as the measured model
    rest = cost_table_of(others, {}, act_bits)
    lims = [Limit(kind, float(value), cost_matrix(costs, layers, list(bits), kind, act_bits),
                  float(get_cost_kind(kind).value(rest)) if others else 0.0, (sources or {}).get(kind, ""))
            for kind, value in (limits or {}).items()]
    caps = []
    for kind, value in (budgets or {}).items():
        matrix, off, floor, source = kind_values(kind, costs, layers, list(bits), act_bits, cost_table)
        if get_cost_kind(kind).additive:
            lims.append(Limit(kind, float(value), matrix, off, f"budgets ({source})"))
        else:
            caps.append(Cap(kind, float(value), matrix, off, floor, f"budgets ({source})"))
    runs = None
    if cost_table is not None:
        tabled = [layer for layer in layers if layer in cost_table.layers]
        runs = np.ones((len(layers), len(bits)), bool)
        for kind in cost_table.kinds:
            m = cost_table.matrix(kind, tabled, list(bits))
            runs[[layers.index(layer) for layer in tabled]] &= ~np.isnan(m)
        if not runs.any(axis=1).all():
            bad = [layer for layer, ok in zip(layers, runs.any(axis=1)) if not ok]
            raise SpecError(f"the {cost_table.target} cost table has no runnable width for {', '.join(bad)} among bits {', '.join(map(str, bits))}")
    return Problem(layers, list(bits), delta, mse, cost, float(sens.attrs.get("fp_metric", 0.0)), objective, tuple(lims), tuple(caps), offset,
                   runs)


def smallest_budget(p: Problem) -> float:
    """The budget kind's cheapest value (every layer at its cheapest allowed bits)."""
    return float(np.where(p.allowed, p.cost, np.inf).min(axis=1).sum()) + p.offset


def _one_hot(n: int, k: int) -> LinearConstraint:
    one_per_layer = np.zeros((n, n * k))
    for i in range(n):
        one_per_layer[i, i * k : (i + 1) * k] = 1
    return LinearConstraint(one_per_layer, 1, 1)


def _milp(p: Problem, objective: np.ndarray, budget: float | None = None, extra: list | None = None, skip: str | None = None) -> list[int] | None:
    """Minimise ``objective`` (per (layer, bits), flattened) over one bit-width per layer, subject
    to the budget (unless None), every limit (but the one named ``skip``), every cap and ``extra``
    LinearConstraints; None when infeasible."""
    n, k = p.cost.shape
    constraints = [_one_hot(n, k)]
    constraints += [LinearConstraint(c.ravel()[None, :], -np.inf, bound + _tol(bound)) for name, c, bound in p.constraints(budget) if name != skip]
    constraints += list(extra or [])
    res = milp(objective, constraints=constraints, integrality=np.ones(n * k), bounds=Bounds(0, p.allowed.ravel().astype(float)),
               options={"mip_rel_gap": 1e-12})
    if res.status != 0 or res.x is None:
        return None
    return [int(np.argmax(res.x[i * k : (i + 1) * k])) for i in range(n)]


def solve_ilp(p: Problem, budget: float) -> list[int] | None:
    """Exact: maximise the score subject to one bit-width per layer, total cost <= budget and
    every limit and cap of the problem."""
    # In units of a thousandth of the tie-break step, so the solver's absolute tolerances
    # (about 1e-6) are far finer than any difference between assignments that matters.
    return _milp(p, -p.gain.ravel() * (1e3 / p._eps), budget)


def solve_min_cost(p: Problem, min_estimate: float, cuts: list[list[int]] = ()) -> list[int] | None:
    """Exact: the cheapest assignment (the budget kind) whose estimated metric is at least
    ``min_estimate``, within every limit and cap and unlike every assignment of ``cuts`` (no-good
    cuts); ties go to the lower output error. None when infeasible."""
    n, k = p.cost.shape
    span = max(float(np.abs(p.cost).max()), 1e-30)
    objective = p.cost.ravel() / span + 1e-7 * p.mse_norm.ravel() / n
    extra = [LinearConstraint(p.delta.ravel()[None, :], min_estimate - p.fp_metric - 1e-12, np.inf)]
    for cut in cuts:
        row = np.zeros(n * k)
        row[[i * k + c for i, c in enumerate(cut)]] = 1
        extra.append(LinearConstraint(row[None, :], -np.inf, n - 1))
    return _milp(p, objective, None, extra)


def _best_estimate(p: Problem, cuts: list[list[int]] = ()) -> float | None:
    """The highest estimated metric of an assignment within every limit and cap, unlike every
    assignment of ``cuts``; None when none is left."""
    n, k = p.cost.shape
    extra = []
    for cut in cuts:
        row = np.zeros(n * k)
        row[[i * k + c for i, c in enumerate(cut)]] = 1
        extra.append(LinearConstraint(row[None, :], -np.inf, n - 1))
    choice = _milp(p, -p.delta.ravel(), None, extra)
    return None if choice is None else p.estimate(choice)


def solve_greedy(p: Problem, budget: float) -> list[int] | None:
    """Start at the widest allowed bits; lower the layer that loses least score per unit of cost
    saved (with limits: per unit saved of every constraint still broken, each relative to its bound)."""
    n, k = p.cost.shape
    allowed = p.allowed
    orders = [[int(j) for j in np.argsort(p.bits) if allowed[i, j]] for i in range(n)]  # per layer, narrowest to widest allowed
    if not all(orders):
        return None
    choice = [o[-1] for o in orders]
    score = p.gain
    rows = np.arange(n)
    constraints = p.constraints(budget)
    while broken := [(c, bound) for _, c, bound in constraints if float(c[rows, choice].sum()) > bound + _tol(bound)]:
        best, best_ratio = None, None
        for i in range(n):
            pos = orders[i].index(choice[i])
            if pos == 0:
                continue
            nxt = orders[i][pos - 1]
            if len(constraints) == 1:
                saved = p.cost[i, choice[i]] - p.cost[i, nxt]
            else:
                saved = sum((c[i, choice[i]] - c[i, nxt]) / max(abs(bound), 1e-30) for c, bound in broken)
            lost = score[i, choice[i]] - score[i, nxt]
            ratio = lost / saved if saved > 0 else math.inf
            if best_ratio is None or ratio < best_ratio:
                best, best_ratio = (i, nxt), ratio
        if best is None:
            return None
        choice[best[0]] = best[1]
    return choice


def bound_by(p: Problem, choice: list[int], budget: float | None = None) -> str:
    """Which constraints hold ``choice`` back: for each one-layer widening the estimate prefers
    that breaks a constraint, the constraint it breaks by the most (relative to its bound);
    "budget" for the swept budget, else the limit's cost kind; several joined by commas in
    constraint order; "" when nothing holds the point back (every layer at its widest, or no
    constraint)."""
    constraints = p.constraints(budget)
    if not constraints and not p.caps:
        return ""
    n = len(p.layers)
    rows = np.arange(n)
    used = {name: float(c[rows, choice].sum()) for name, c, _ in constraints}
    order = list(np.argsort(p.bits))
    gain = p.gain
    names = set()
    for i in range(n):
        for wider in order[order.index(choice[i]) + 1:]:
            if gain[i, wider] <= gain[i, choice[i]]:
                continue
            capped = [cap.kind for cap in p.caps if not cap.allowed[i, wider]]
            if capped:
                names.update(capped)
                continue
            excess = {name: (used[name] - c[i, choice[i]] + c[i, wider] - bound) / max(abs(bound), 1e-30) for name, c, bound in constraints}
            broken = {name: e for name, e in excess.items() if e > 1e-12}
            if broken:
                names.add(max(broken, key=broken.get))
    order_names = [name for name, _, _ in constraints] + [cap.kind for cap in p.caps]
    return ",".join(dict.fromkeys(name for name in order_names if name in names))


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


class SearchConfig(OptionModel):
    """Parameters of a search."""

    target: str = "cpu-int8-ort"
    budget_kind: str = "weight_kib"
    act_bits: integer(1) = 8
    n_budgets: integer(0) = 6
    uniform_bits: Annotated[tuple[integer(1), ...], BeforeValidator(lambda v: distinct(v, "bit-widths") if isinstance(v, (list, tuple)) else v)] = (8, 6, 4, 3)
    n_random: integer(0) = 3
    seed: integer(0) = 0
    objective: choice(OBJECTIVES) = "output_mse"
    latency_runs: integer(0) = 50  # onnxruntime latency of each front point's export (0 = skip)
    ptq: PTQConfig = Field(default_factory=PTQConfig)

    @field_validator("budget_kind")
    @classmethod
    def _registered_budget_kind(cls, v):
        try:
            if not get_cost_kind(v).measured:  # a measured additive kind (latency_ms) needs a cost table: checked by search
                _budget_kind(v)  # a registered, computed, additive cost kind (the registry's one-line message)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return v


def measure(task, model, assignment: dict[str, int], act_bits: int, ptq: PTQConfig) -> float:
    q = quantize_task(task, model, assignment_spec(assignment, act_bits), ptq)
    return task.score(predict(q, task.data.eval.x), task.data.eval)


def _latency(task, model, assignment: dict[str, int], config: "SearchConfig") -> float:
    """p50 onnxruntime latency (batch 1, one thread) of the exported QCDQ model of an assignment."""
    import tempfile
    from pathlib import Path

    from ..export.qcdq import export_qcdq
    from ..export.verify import latency_ms

    q = quantize_task(task, model, assignment_spec(assignment, config.act_bits), config.ptq)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_qcdq(q, task.example_input(), Path(tmp) / "candidate.onnx")
        return latency_ms(path, task.example_input(), runs=config.latency_runs, warmup=10)["p50"]


def pareto_mask(cost: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """True where no other point is at most as costly and strictly better (or cheaper and as good)."""
    keep = np.ones(len(cost), bool)
    for i in range(len(cost)):
        dominated = (cost <= cost[i]) & (metric >= metric[i]) & ((cost < cost[i]) | (metric > metric[i]))
        keep[i] = not dominated.any()
    return keep


def point_costs(costs: dict[str, LayerCost], assignment: dict, act_bits) -> dict:
    """A point's cost columns: ``totals`` of its cost table (every computed cost kind of the
    registry, plus peak_act_bytes)."""
    table = totals(cost_table(costs, assignment, act_bits))
    return {"peak_act_bytes": table["peak_act_bytes"], **{k: table[k] for k in COST_KINDS if k in table}}


def _cost_row(table: dict) -> dict:
    """Cost columns in a fixed order: weight_kib, bops, peak_act_bytes, then the other computed kinds."""
    first = {k: table[k] for k in ("weight_kib", "bops", "peak_act_bytes") if k in table}
    return {**first, **{k: v for k, v in table.items() if k not in first}}


def front_on(points: pd.DataFrame, axis: str, metric: str = "measured_metric") -> pd.Series:
    """The Pareto front of ``points`` on ``axis`` (lower is better) and ``metric`` (higher is
    better), recomputed for that axis: a bool Series on ``points.index``. Random baselines, points
    over a budget (``within_budgets`` False) and points with no value on ``axis`` or ``metric``
    (NaN: a latency not measured) are never on it."""
    if axis not in points or metric not in points:
        raise SpecError(f"front_on: the points have no {axis if axis not in points else metric!r} column; they have {', '.join(map(str, points.columns))}")
    x = pd.to_numeric(points[axis], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(points[metric], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if "kind" in points:
        ok &= (points["kind"] != "random").to_numpy()
    if "within_budgets" in points:
        ok &= points["within_budgets"].fillna(True).astype(bool).to_numpy()
    out = np.zeros(len(points), bool)
    out[ok] = pareto_mask(x[ok], y[ok])
    return pd.Series(out, index=points.index, name=f"on_front_{axis}")


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
    additive = {k: v for k, v in values.items() if get_cost_kind(k).additive}
    bits = list(target.weight_bits)
    if cost_table is not None:
        bits = [b for b in bits if b in cost_table.bits]
        if not bits:
            raise SpecError(f"the {cost_table.target} cost table holds bits {', '.join(map(str, cost_table.bits))}, none of target "
                            f"{target.name}'s {', '.join(map(str, target.weight_bits))}")
    costs = layer_costs(model, task.example_input())
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


class _Measured:
    """What one search measures of its candidates, each configuration (its bits as JSON) once:
    read from the store where a sound row is stored under the same key, else measured and stored
    at once (one transaction per row). ``computed``: how many configurations had anything
    measured in this call; ``from_store``: how many had everything read from the store."""

    def __init__(self, store, task, model, config: "SearchConfig", s: _Setup):
        self.store, self.task, self.model, self.config, self.s = store, task, model, config, s
        self._recorders: dict[str, SweepRecorder] = {}
        self._computed: set[str] = set()
        self._stored: set[str] = set()
        self._asked: dict[str, dict] = {}  # a caller's measure_costs: not stored

    @property
    def computed(self) -> int:
        return len(self._computed)

    @property
    def from_store(self) -> int:
        return len(self._stored - self._computed)

    def _recorder(self, what: str) -> SweepRecorder:
        """The rows of one kind of measurement, under the key of everything that determines it."""
        if what not in self._recorders:
            c, extra = self.config, {}
            key = {"act_bits": c.act_bits}
            if what == "metric":
                key["ptq"] = c.ptq.to_dict()
            elif what == "target":
                from .cost_tables import get_cost_source

                key["target"] = self.s.table.target
                extra["toolchain"] = get_cost_source(self.s.table.target).version()
            else:  # latency
                import onnxruntime

                from ..export.verify import host_cpu

                key.update({"ptq": c.ptq.to_dict(), "latency_runs": c.latency_runs})
                extra.update({"onnxruntime": onnxruntime.__version__, "cpu": f"{host_cpu()} x{os.cpu_count()}"})  # a clock of this machine
            sweep = sweep_fingerprint(f"search_{what}", self.task, self.model, key, SEARCH_VERSION, **extra)
            fields = ("measured_metric",) if what == "metric" else ()
            self._recorders[what] = SweepRecorder(self.store, sweep, f"search_{what}",
                                                  check=lambda key, row: None if _sound(row, fields) else f"expected numbers{' under ' + ', '.join(fields) if fields else ''}")
        return self._recorders[what]

    def _lookup(self, what: str, bits: str, fields: tuple) -> dict | None:
        """The stored row of ``what`` for the configuration ``bits``; None when there is none or
        it is unsound (then warned about once and dropped, so it is computed again)."""
        rec = self._recorder(what)
        row = rec.done.get(bits)
        if row is not None and not _sound(row, fields):
            warnings.warn(f"result store {self.store.path}: a stored {what} row of {bits} is unreadable; it is computed again",
                          RuntimeWarning, stacklevel=4)
            del rec.done[bits]
            row = None
        return row

    def _get(self, what: str, bits: str, fields: tuple, compute: Callable[[], dict]) -> dict:
        row = self._lookup(what, bits, fields)
        if row is None:
            row = self._recorder(what).put(bits, {k: float(v) for k, v in compute().items()})
            self._computed.add(bits)
        else:
            self._stored.add(bits)
        return row

    def missing(self, assignment: dict[str, int]) -> tuple[str, ...]:
        """What of ``assignment`` is neither stored nor asked yet: "metric", "target" (its
        numbers on the cost table's target), both or none."""
        bits = json.dumps(assignment, sort_keys=True)
        out = () if self._lookup("metric", bits, ("measured_metric",)) is not None else ("metric",)
        if self.s.table is not None:
            known = self._lookup("target", bits, ()) is not None if self.s.default_costs else bits in self._asked
            out += () if known else ("target",)
        return out

    def measure_all(self, assignments: list[dict[str, int]], executor, progress: bool = False) -> None:
        """Measure on ``executor`` what the store lacks of ``assignments``, each configuration
        once (one unit per configuration), storing each unit's numbers here, in the calling
        process, as it finishes: a search stopped part-way resumes from what was stored.
        Afterwards :meth:`metric` and :meth:`on_target` read these numbers without measuring."""
        units = {}
        for assignment in assignments:
            bits = json.dumps(assignment, sort_keys=True)
            if bits not in units and (what := self.missing(assignment)):
                units[bits] = (bits, what, tuple(assignment.items()))
        if not units:
            return
        work = _SearchWork(self.task, self.model, self.config, self.s.table.target if self.s.table is not None else None,
                           self.s.measure_costs)
        with tqdm(total=len(units), desc=f"search {self.task.name}", disable=not progress) as bar:
            for (bits, _, _), result in executor.run(_search_unit, work, list(units.values())):
                if "metric" in result:
                    self._recorder("metric").put(bits, {"measured_metric": float(result["metric"])})
                if "target" in result:
                    if self.s.default_costs:
                        self._recorder("target").put(bits, {k: float(v) for k, v in result["target"].items()})
                    else:
                        self._asked[bits] = result["target"]
                self._computed.add(bits)
                bar.update()

    def metric(self, assignment: dict[str, int]) -> float:
        """The measured metric of ``assignment`` (built, calibrated, evaluated)."""
        c = self.config
        bits = json.dumps(assignment, sort_keys=True)
        return self._get("metric", bits, ("measured_metric",),
                         lambda: {"measured_metric": measure(self.task, self.model, assignment, c.act_bits, c.ptq)})["measured_metric"]

    def on_target(self, assignment: dict[str, int]) -> dict[str, float]:
        """The target's own numbers of ``assignment`` (``measure_costs``); stored only for the
        default ``measure_point``; a caller's callable is asked once per configuration in every search."""
        s, c = self.s, self.config
        bits = json.dumps(assignment, sort_keys=True)
        if not s.default_costs:  # asked once per configuration of this search
            if bits not in self._asked:
                self._asked[bits] = dict(s.measure_costs(self.task, self.model, assignment, s.table.target, c.act_bits))
                self._computed.add(bits)
            return self._asked[bits]
        return self._get("target", bits, (), lambda: dict(s.measure_costs(self.task, self.model, assignment, s.table.target, c.act_bits)))

    def latency(self, bits: str) -> float:
        """p50 onnxruntime latency of the configuration ``bits`` (JSON of an assignment)."""
        return self._get("latency", bits, ("latency_ms",),
                         lambda: {"latency_ms": _latency(self.task, self.model, json.loads(bits), self.config)})["latency_ms"]


class _SearchWork:
    """A search's payload: what a unit (one configuration's measurements) needs, in any process.
    ``target``: the cost table's target (None: no numbers on a target are measured)."""

    def __init__(self, task, model, config: "SearchConfig", target: str | None, measure_costs: Callable | None):
        self.task, self.model, self.config, self.target, self.measure_costs = task, model, config, target, measure_costs

    def measure(self, unit: tuple) -> dict:
        """The numbers of one unit ``(bits, what, assignment items)``: ``{"metric": float}`` and
        ``{"target": {kind: value}}`` for what it names."""
        _, what, items = unit
        assignment, c, out = dict(items), self.config, {}
        if "metric" in what:
            out["metric"] = float(measure(self.task, self.model, assignment, c.act_bits, c.ptq))
        if "target" in what:
            out["target"] = dict(self.measure_costs(self.task, self.model, assignment, self.target, c.act_bits))
        return out


def _search_unit(work: _SearchWork, unit: tuple) -> dict:
    return work.measure(unit)


def _check_sendable(measure_costs: Callable | None, executor) -> None:
    """A caller's ``measure_costs`` runs in the executor's workers: it must pickle (cloudpickle
    also sends lambdas and closures); one-line ExecutorError naming it otherwise."""
    from ..infra.executors import ExecutorError, LocalExecutor

    if measure_costs is None or isinstance(executor, LocalExecutor):
        return
    import cloudpickle

    try:
        cloudpickle.dumps(measure_costs)
    except Exception as exc:  # pickling raises TypeError, PicklingError, AttributeError, ...
        raise ExecutorError(f"measure_costs {short_repr(measure_costs)} cannot be sent to executor {executor.describe()} "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); expected a picklable "
                            f"callable (a module-level function), or executor 'local'") from None


def _over_computed(s: _Setup, config, assignment: dict[str, int]) -> bool:
    """Whether the computed costs of ``assignment`` break a limit or budget the program could
    not carry (a kind not additive that depends on the weights): such a point is never measured."""
    table = point_costs(s.costs, assignment, config.act_bits)
    computed = {k: v for k, v in s.hard.items() if s.table is None or k not in s.table.kinds}
    return bool(over_limits(table, computed))


def _sound(row, fields: tuple) -> bool:
    """A stored row holds a number under each of ``fields`` (and nothing but numbers)."""
    return (isinstance(row, dict) and all(f in row for f in fields)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values()))


def _row(s: _Setup, task, model, config, kind: str, budget: float, choice: list[int], measured: _Measured) -> dict | None:
    """One evaluated candidate (built, calibrated, measured; on the target too with a cost table);
    None when its computed costs break a limit or budget the program could not carry."""
    assignment = s.p.assignment(choice)
    if _over_computed(s, config, assignment):  # a kind the program cannot carry (not additive, depends on the weights)
        return None
    table = point_costs(s.costs, assignment, config.act_bits)
    key = json.dumps(assignment, sort_keys=True)
    metric = measured.metric(assignment)
    on_target = measured.on_target(assignment) if s.table is not None else {}
    row = {"kind": kind, "budget": budget, **_cost_row(table)}
    if s.table is not None:
        for k in s.table.kinds:
            row[k] = float(on_target.get(k, math.nan))
            row[f"{k}_estimate"] = s.table.estimate(assignment, k)
    caps = dict(s.limits)  # the profile's limits hold on the target's own numbers too (the mcu's ram_kib on TFLite Micro's arena)
    for k, v in s.hard.items():
        caps[k] = min(v, caps.get(k, math.inf))
    # a kind the target was asked for and gave no number (NaN: TFLite Micro could not allocate the
    # model) fails its cap: the configuration does not run there
    failed = [k for k in (s.table.kinds if s.table is not None else ()) if k in caps and math.isnan(row[k])]
    over = [k for k, v in caps.items() if k in row and (k in failed or _value(row, k) > v + _tol(v))]
    row.update({"estimated_metric": s.p.estimate(choice), "estimated_error": -s.p.score(choice), "measured_metric": metric, "bits": key,
                "bound_by": bound_by(s.p, choice, budget if kind in ("ilp", "greedy") else None), "within_budgets": not over,
                "over_budgets": ",".join(over)})
    return row


def _value(row: dict, kind: str) -> float:
    """A point's value of ``kind``: measured on the target, its estimate where not measured (NaN)."""
    v = row[kind]
    return row.get(f"{kind}_estimate", v) if (v is None or (isinstance(v, float) and math.isnan(v))) else v


def _finish(df: pd.DataFrame, s: _Setup, task, model, config, measured: _Measured) -> pd.DataFrame:
    if config.latency_runs and "on_front" in df and (s.table is None or "latency_ms" not in s.table.kinds):
        df["latency_ms"] = np.nan
        df.loc[df["on_front"], "latency_ms"] = [measured.latency(b) for b in df.loc[df["on_front"], "bits"]]
    elif "latency_ms" not in df:
        df["latency_ms"] = np.nan
    df.attrs.update({"task": task.name, "target": s.target.name, "budget_kind": config.budget_kind, "fp_metric": s.p.fp_metric,
                     "act_bits": config.act_bits, "limits": dict(s.limits), "limit_sources": dict(s.sources), "budgets": dict(s.budgets),
                     "cost_target": None if s.table is None else s.table.target, "bits": list(s.p.bits),
                     "computed": measured.computed, "from_store": measured.from_store})
    return df


@fixed_threads()
def search(task, model, sens: pd.DataFrame, config: SearchConfig = SearchConfig(), budgets: dict[str, float] | list[float] | None = None,
           progress: bool = True, extra_budgets: tuple = (), limits: dict[str, float] | None = None, cost_table=None,
           max_drop: float | None = None, measure_costs: Callable | None = None, max_iterations: int = 8,
           store: "ResultStore | None | bool" = None, executor=None) -> pd.DataFrame:
    """ILP (and greedy) assignments over a sweep of budgets, uniform and random baselines, all measured.

    ``budgets``: a mapping (cost kind -> value) is a set of hard budgets held at once (additive
    kinds as sum constraints, others, a maximum over layers, as forbidden (layer, bits)), read
    from ``cost_table`` where it has the kind, else from the formula; a list is the swept values
    of ``config.budget_kind`` (as before; default: a sweep from the cheapest to the dearest
    assignment). ``limits``: hard limits (cost kind -> value) on top of the target profile's own
    budgets, which they may tighten but not loosen; the profile's limits always hold.

    ``cost_table`` (a :class:`workbench.search.cost_tables.TargetCostTable`): per-layer costs measured
    on a deployment target; its kinds (``latency_ms``, ``cycles`` ...) become budgetable, and
    ``config.budget_kind`` may be one of them. Every candidate is then measured on the target
    by ``measure_costs(task, model, assignment, cost_table.target, act_bits) -> {kind: value}``
    (default :func:`workbench.search.cost_tables.measure_point`): the columns of the table's kinds hold
    the target's measured numbers, ``<kind>_estimate`` the table's estimate.

    ``max_drop``: an accuracy target instead of a sweep; returns :func:`search_accuracy_target`'s
    frame (read its docstring).

    One row per evaluated configuration: kind, budget, one column per computed cost kind
    (weight_kib, bops, flash_kib, macs, peak_act_kib, ...; peak_act_bytes too), estimated_metric,
    measured_metric, the per-layer bits as JSON, bound_by (what held the point back: "budget",
    a limit's or budget's cost kind, or ""), within_budgets (False: a measured number broke a limit or a
    budget, or the target gave no number for a capped kind (NaN: it could not run the
    configuration); kept, never on the front; ``over_budgets`` names which), on_front (Pareto front of
    the measured points of the solvers and the uniform assignments within the budgets; random
    baselines are shown, never on the front) and latency_ms. ``df.attrs["limits"]`` holds the
    limits applied, ``attrs["budgets"]`` the budgets. The search chooses bits for Conv/Linear
    layers only: embedding tables are not varied (every point leaves them float) nor counted in
    its costs (:func:`workbench.core.cost.embedding_costs` prices them).

    ``store``: a :class:`~workbench.infra.store.ResultStore`, None for the default one in the cache
    folder, or False for none. A configuration measured before under the same key (model weights,
    data, bits, activation bits, PTQ configuration; the target and its toolchain version for its
    numbers on the target; the runs, onnxruntime version and host CPU for latency) is read from it, not
    built again; ``attrs["computed"]`` and ``attrs["from_store"]`` say how many distinct
    configurations were measured now and how many came from the store. A caller's
    ``measure_costs`` is not stored: every search asks it again.

    ``executor``: where the candidates are measured (see :mod:`workbench.infra.executors`: ``"local"``
    by default, ``"process:N"``, ``"ray"``, or an Executor). Each distinct configuration (its bits)
    is one unit, measured once however many solvers or baselines proposed it, and only where the
    store lacks it; its numbers are stored by this process as the unit finishes (a search stopped
    part-way resumes from them), and the rows are the same, in the same order, on every executor
    (``attrs["executor"]`` names it). A caller's ``measure_costs`` then runs in the workers: it
    must pickle (cloudpickle: lambdas and closures do), else a one-line ExecutorError before any
    work. The latency of the front points (``config.latency_runs``) is always measured here, one
    at a time: a clock shared with other workers would not be the model's latency. With
    ``max_drop`` every iteration depends on the one before, so the accuracy target measures its
    points here one at a time whatever ``executor`` says (``attrs["executor"]`` is "local").

    Bad input (an unknown cost kind, a budget no configuration meets, budgets that contradict
    each other, a measured kind with no cost table, a bad ``max_drop``) is a one-line SpecError
    before any model is built.
    """
    from ..infra.executors import make_executor

    sweep = None
    if budgets is not None and not isinstance(budgets, Mapping):
        sweep, budgets = budgets, None
        if isinstance(sweep, (str, bytes)) or not isinstance(sweep, (list, tuple, np.ndarray, pd.Series)):
            raise SpecError(f"budgets {short_repr(sweep)}; expected a mapping of cost kind to value, or a list of {config.budget_kind} values")
        sweep = [check_budget_value(b, f"budgets[{i}]") for i, b in enumerate(sweep)]
    extra_budgets = tuple(check_budget_value(b, f"extra_budgets[{i}]") for i, b in enumerate(extra_budgets))
    max_drop = check_max_drop(max_drop)
    executor = make_executor(executor)  # an unknown name: one line, before any work
    if max_drop is not None:
        df = search_accuracy_target(task, model, sens, max_drop, config, budgets=budgets, limits=limits, cost_table=cost_table,
                                    measure_costs=measure_costs, max_iterations=max_iterations, progress=progress, store=store)
        df.attrs["executor"] = "local"  # each iteration depends on the one before: measured here, one at a time
        return df
    s = _setup(task, model, sens, config, budgets, limits, cost_table, measure_costs)
    if s.table is not None and not s.default_costs:  # a caller's measure_costs runs in the workers
        _check_sendable(s.measure_costs, executor)
    measured = _Measured(resolve_store(store), task, model, config, s)  # a corrupt store moved aside, a read-only one refused, before any work
    p = s.p
    unit = get_cost_kind(config.budget_kind).unit
    uniform = {b: [p.bits.index(b)] * len(p.layers) for b in config.uniform_bits if b in p.bits}
    uniform = {b: c for b, c in uniform.items() if p.within_limits(c)}  # a uniform width over a limit is no candidate
    if sweep is None:
        low, high = smallest_budget(p), float(p.cost.max(axis=1).sum()) + p.offset
        if p.limits or p.caps:  # beyond what the limits allow, a larger budget changes nothing
            top = solve_ilp(p, high)
            if top is None:
                raise SpecError(f"no assignment meets every limit at once ({', '.join(f'{k} <= {v:g}' for k, v in s.hard.items())})")
            high = max(low, p.total_cost(top))
        sweep = [p.total_cost(c) for c in uniform.values()] + list(np.linspace(low, high, config.n_budgets))
    sweep = sorted(set(list(sweep) + [float(b) for b in extra_budgets]))
    for b in sweep:
        check_budget(p, b, unit)

    candidates = []
    for budget in sweep:
        for kind, solver in (("ilp", solve_ilp), ("greedy", solve_greedy)):
            choice = solver(p, budget)
            if choice is not None:
                candidates.append((kind, budget, choice))
    for b, choice in uniform.items():
        candidates.append((f"uniform-{b}", p.total_cost(choice), choice))
    rng = np.random.default_rng(config.seed)
    for budget in [p.total_cost(c) for c in uniform.values()][: config.n_random]:
        for _ in range(1000):
            choice = list(rng.integers(0, len(p.bits), len(p.layers)))
            if p.total_cost(choice) <= budget and p.within_limits(choice):
                candidates.append(("random", budget, [int(c) for c in choice]))
                break

    # Every distinct configuration the store lacks is measured first (on the executor), then the
    # rows are assembled in the candidates' order from what was measured or stored.
    assignments = [p.assignment(choice) for _, _, choice in candidates]
    measured.measure_all([a for a in assignments if not _over_computed(s, config, a)], executor, progress)
    rows = []
    for kind, budget, choice in candidates:
        row = _row(s, task, model, config, kind, budget, choice, measured)
        if row is not None:
            rows.append(row)
    df = pd.DataFrame(rows)
    # The front is drawn over every measured candidate of the search space: the solvers' points
    # and the uniform assignments (feasible points too), not the random baselines nor a point a
    # measured number put over a budget.
    df["on_front"] = front_on(df, config.budget_kind).to_numpy() if len(df) else np.zeros(0, bool)
    df = _finish(df, s, task, model, config, measured)
    df.attrs["executor"] = executor.describe()
    return df


@fixed_threads()
def search_accuracy_target(task, model, sens: pd.DataFrame, max_drop: float, config: SearchConfig = SearchConfig(),
                           budgets: dict[str, float] | None = None, limits: dict[str, float] | None = None, cost_table=None,
                           measure_costs: Callable | None = None, max_iterations: int = 8, margin: float = 0.0,
                           progress: bool = True, store: "ResultStore | None | bool" = None) -> pd.DataFrame:
    """The cheapest configuration (on ``config.budget_kind``) whose MEASURED metric is within
    ``max_drop`` of the float metric (``sens.attrs["fp_metric"]``): ``measured >= fp - max_drop``,
    an absolute drop in the metric's own units (0.005 = half a point of accuracy), under every
    budget and limit.

    Each iteration solves an exact ILP: minimise the cost subject to the estimated metric
    ``>= fp - max_drop + margin`` and the budgets, then builds and measures that assignment (on
    the target too, with ``cost_table``). When the measured drop is too big (or a measured cost
    breaks a budget), a no-good cut removes that assignment, the margin rises to the observed
    optimism (estimate - measured, the largest seen), and the program is solved again, until a
    point holds, the program is infeasible, or ``max_iterations`` points have been measured. When
    the raised margin leaves no configuration, the next one is the cheapest of the best estimate
    left, as long as that estimate reaches ``fp - max_drop + margin``: a single very optimistic
    estimate does not make a reachable target unreachable.

    Returns a DataFrame with one row per iteration (kind ``target-<i>``), the columns of
    :func:`search` plus ``required_estimate``, ``drop`` (fp - measured), ``met_drop`` and
    ``chosen`` (True on the one row chosen, the first that met the drop within the budgets).
    ``attrs["chosen"]``: that row's index, or None when the target is unreachable;
    ``attrs["reached"]``: whether it was reached; ``attrs["computed"]`` / ``attrs["from_store"]``
    and ``store`` as in :func:`search`; ``attrs["message"]``: one line saying what was
    chosen, or that the target is unreachable and what came closest (the best measured point
    and its drop); ``attrs["max_drop"]``, ``attrs["fp_metric"]``. It raises nothing for an
    unreachable target: read ``attrs["reached"]``.
    """
    max_drop = check_max_drop(max_drop)
    if max_drop is None:
        raise SpecError("max_drop None; expected a number in [0, 1]")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise SpecError(f"max_iterations {max_iterations!r}; expected a positive integer")
    s = _setup(task, model, sens, config, budgets, limits, cost_table, measure_costs)
    measured = _Measured(resolve_store(store), task, model, config, s)
    p = s.p
    floor = p.fp_metric - max_drop
    rows, cuts = [], []
    optimism, chosen, why_stop = float(margin), None, "max_iterations"
    bar = tqdm(total=max_iterations, desc=f"accuracy target {task.name}", disable=not progress)
    for i in range(max_iterations):
        need = floor + optimism
        choice = solve_min_cost(p, need, cuts)
        if choice is None and optimism > margin:
            # The margin is a heuristic: one very optimistic estimate may lift it over every
            # configuration left. Then the next one is the cheapest of the best estimate left,
            # as long as that estimate still reaches the target.
            best = _best_estimate(p, cuts)
            if best is not None and best >= floor + margin - 1e-12:
                need = best
                choice = solve_min_cost(p, need, cuts)
        if choice is None:
            why_stop = "infeasible"
            break
        row = _row(s, task, model, config, f"target-{i}", p.total_cost(choice), choice, measured)
        cuts.append(choice)
        bar.update()
        if row is None:  # a computed cost over a limit the program cannot carry
            continue
        met = row["measured_metric"] >= floor - 1e-12
        row.update({"required_estimate": need, "drop": p.fp_metric - row["measured_metric"], "met_drop": bool(met)})
        rows.append(row)
        if met and row["within_budgets"]:
            chosen = len(rows) - 1
            break
        if not met:
            optimism = max(optimism, row["estimated_metric"] - row["measured_metric"])
    bar.close()
    cols = list(rows[0]) if rows else ["kind", "budget", "estimated_metric", "measured_metric", "bits", "bound_by", "within_budgets",
                                       "required_estimate", "drop", "met_drop"]
    df = pd.DataFrame(rows, columns=cols)
    df["chosen"] = np.arange(len(df)) == (chosen if chosen is not None else -1)
    df["on_front"] = df["chosen"]
    df = _finish(df, s, task, model, config, measured)
    kind = get_cost_kind(config.budget_kind)
    if chosen is not None:
        r = df.iloc[chosen]
        message = (f"{r['kind']}: {config.budget_kind} {r[config.budget_kind]:.6g} {kind.unit}, measured {r['measured_metric']:.4f} "
                   f"(drop {r['drop']:.4g} <= {max_drop:g} below float {p.fp_metric:.4f})")
    else:
        ok = df[df["within_budgets"].astype(bool)] if len(df) else df
        stop = {"infeasible": "no configuration left whose estimate can reach it within the budgets",
                "max_iterations": f"{max_iterations} iterations measured"}[why_stop]
        if len(ok):
            best = ok.loc[ok["measured_metric"].idxmax()]
            closest = (f"closest: {best['kind']} measured {best['measured_metric']:.4f} (drop {best['drop']:.4g}) at "
                       f"{config.budget_kind} {best[config.budget_kind]:.6g} {kind.unit}")
        else:
            closest = "nothing within the budgets was measured"
        message = f"accuracy target unreachable: no configuration measured a drop <= {max_drop:g} below float {p.fp_metric:.4f} ({stop}); {closest}"
    df.attrs.update({"chosen": None if chosen is None else int(df.index[chosen]), "reached": chosen is not None, "message": message,
                     "max_drop": max_drop})
    return df


def best_within(points: pd.DataFrame, budget: float, budget_kind: str = "weight_kib", limits: dict[str, float] | None = None) -> pd.Series:
    """The best measured candidate (solver or uniform, not random) whose cost fits ``budget`` and
    every limit (the search's ``attrs["limits"]`` and ``limits``) and budget (``within_budgets``); ties go to the cheaper one, then
    to one solved at ``budget``."""
    get_cost_kind(budget_kind)
    if budget_kind not in points:
        raise SpecError(f"the points have no {budget_kind!r} column; cost columns are {', '.join(k for k in COST_KINDS if k in points)}")
    applied = {**points.attrs.get("limits", {})}
    for name, value in (limits or {}).items():
        get_cost_kind(name)
        applied[name] = min(float(value), applied.get(name, math.inf))
    ok = (points["kind"] != "random") & (points[budget_kind] <= budget * (1 + 1e-12))
    if "within_budgets" in points:
        ok &= points["within_budgets"].fillna(True).astype(bool)
    for name, value in applied.items():
        if name in points:
            ok &= points[name] <= value + _tol(value)
    fit = points[ok]
    if fit.empty:
        extra = "".join(f", {k} <= {v:g}" for k, v in applied.items())
        raise SpecError(f"no evaluated candidate fits a budget of {budget:.6g} {budget_kind}{extra}")
    # ties go to the cheaper point, then to a point solved at this very budget (its bound_by speaks of it)
    fit = fit.assign(_other_budget=(fit["budget"] - budget).abs() > _tol(budget)) if "budget" in fit else fit.assign(_other_budget=False)
    return fit.sort_values(["measured_metric", budget_kind, "_other_budget"], ascending=[False, True, True], kind="stable").iloc[0].drop("_other_budget")


def pruned_candidates(task, model, pruning: list, bits: tuple = (8, 4), act_bits: int = 8, ptq: PTQConfig = PTQConfig(),
                      latency_runs: int = 0, progress: bool = True) -> pd.DataFrame:
    """Pruned-and-quantised points on the search's axes: each pruning spec (pruned, fine-tuned as
    it says) at each uniform weight bit-width, built, calibrated and measured like search points.

    Rows have the columns of :func:`search` plus ``pruning`` (the spec as JSON); ``kind`` is
    ``pruned@<spec> w<bits>``. There is no additive estimate for them (``estimated_*`` are NaN).
    Join them to a search with :func:`join_points`.
    """
    from ..core.pruning import PruningSpec, prune

    rows = []
    specs = [PruningSpec.parse(p) for p in pruning]
    bar = tqdm(total=len(specs) * len(bits), desc=f"prune + quantise {task.name}", disable=not progress)
    for spec in specs:
        pruned = prune(task, model, spec)
        costs = layer_costs(pruned, task.example_input())
        for b in bits:
            assignment = {name: b for name in costs}
            table = point_costs(costs, assignment, act_bits)
            metric = measure(task, pruned, assignment, act_bits, ptq)
            latency = math.nan
            if latency_runs:
                latency = _latency(task, pruned, assignment, SearchConfig(act_bits=act_bits, latency_runs=latency_runs, ptq=ptq))
            rows.append({"kind": f"pruned@{spec.label} w{b}", "budget": table["weight_kib"], **_cost_row(table),
                         "estimated_metric": math.nan, "estimated_error": math.nan,
                         "measured_metric": metric, "bits": json.dumps(assignment, sort_keys=True), "bound_by": "", "on_front": False, "latency_ms": latency,
                         "pruning": json.dumps(spec.to_dict(), sort_keys=True)})
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def join_points(points: pd.DataFrame, more: pd.DataFrame, budget_kind: str | None = None) -> pd.DataFrame:
    """Search points and pruned-and-quantised points in one table, the measured front drawn anew
    over both (random baselines stay off it); ``pruning`` is empty for unpruned points. Points of
    ``more`` over a limit of the search (``points.attrs["limits"]``) are left out."""
    budget_kind = budget_kind or points.attrs.get("budget_kind", "weight_kib")
    limits = points.attrs.get("limits", {})
    if len(more) and limits:
        ok = np.ones(len(more), bool)
        for name, value in limits.items():
            if name in more:
                ok &= (more[name] <= value + _tol(value)).to_numpy()
        more = more[ok]
    df = pd.concat([points.assign(pruning=points.get("pruning", "")), more], ignore_index=True)
    df["pruning"] = df["pruning"].fillna("")
    if "bound_by" in df:
        df["bound_by"] = df["bound_by"].fillna("")
    df["on_front"] = front_on(df, budget_kind).to_numpy()
    df.attrs.update(points.attrs)
    return df
