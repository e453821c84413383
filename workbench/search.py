"""Mixed-precision search: per-layer weight bits under a budget, from a sensitivity table.

The estimate of an assignment is additive: ``fp_metric + sum over layers of metric_delta(layer,
bits)`` from a quantise-one weight sweep (positive changes, which are evaluation noise, count as
zero; ties are broken by the layers' output MSE). An exact integer linear program (scipy.optimize.milp)
maximises it under a budget of any additive cost kind (``workbench.cost.COST_KINDS``: packed
weight KiB, BOPs, MACs, ...); a greedy heuristic is the fallback. Sweeping budgets gives a front;
every candidate on it is then really built, calibrated and measured, beside uniform and random
baselines at the same budgets.

Limits are hard: the target profile's budgets with a value (the ``mcu``'s flash_kib 256 and
ram_kib 64) and the caller's ``limits``. Additive ones are further linear constraints of the
program (and the greedy solver and the baselines respect them); a limit on a kind the weight bits
do not change (peak activation RAM at fixed activation bits) is checked once, before any work. No
point over a limit is ever returned; ``bound_by`` says which constraint held each point back.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from scipy.optimize import Bounds, LinearConstraint, milp
from tqdm.auto import tqdm

from .cost import COST_KINDS, LayerCost, budget_kind as _budget_kind, cost_table, get_cost_kind, layer_costs, load_target, totals
from .errors import SpecError
from .evaluate import predict
from .options import OptionModel, choice, integer
from .pipeline import PTQConfig, quantize_task
from .spec import QuantSpec
from .determinism import fixed_threads


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
class Problem:
    """Layers, allowed bits, per-(layer, bits) estimated metric change and cost."""

    layers: list[str]
    bits: list[int]
    delta: np.ndarray  # (layers, bits): metric change when only that layer is at those bits
    mse: np.ndarray  # (layers, bits): output MSE, a tie-breaker finer than the metric
    cost: np.ndarray  # (layers, bits): cost in the budget's unit
    fp_metric: float

    objective: str = "output_mse"
    limits: tuple = ()  # Limit, one per additive hard limit

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
        return float(self.cost[np.arange(len(self.layers)), choice].sum())

    def constraints(self, budget: float | None) -> list[tuple[str, np.ndarray, float]]:
        """(name, per-(layer, bits) cost, bound) of the budget (named "budget"; left out when
        ``budget`` is None) and of every limit."""
        own = [("budget", self.cost, float(budget))] if budget is not None else []
        return own + [(lim.kind, lim.cost, lim.room) for lim in self.limits]

    def within_limits(self, choice: list[int]) -> bool:
        rows = np.arange(len(self.layers))
        return all(float(lim.cost[rows, choice].sum()) <= lim.room + _tol(lim.room) for lim in self.limits)

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


def build_problem(sens: pd.DataFrame, costs: dict[str, LayerCost], bits: list[int], budget_kind: str, act_bits: int = 8,
                  objective: str = "output_mse", limits: dict[str, float] | None = None, sources: dict[str, str] | None = None) -> Problem:
    """Turn a quantise-one weight sweep into a search problem over ``bits``, budgeting the
    additive cost kind ``budget_kind``; ``limits`` (additive kinds only) become constraints too."""
    _budget_kind(budget_kind)
    if objective not in OBJECTIVES:
        raise SpecError(f"objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
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
    cost = cost_matrix(costs, layers, list(bits), budget_kind, act_bits)
    others = {name: c for name, c in costs.items() if name not in layers}  # not searched: at 8 bits, as the measured model
    rest = cost_table(others, {}, act_bits)
    lims = tuple(Limit(kind, float(value), cost_matrix(costs, layers, list(bits), kind, act_bits),
                       float(get_cost_kind(kind).value(rest)) if others else 0.0, (sources or {}).get(kind, ""))
                 for kind, value in (limits or {}).items())
    return Problem(layers, list(bits), delta, mse, cost, float(sens.attrs.get("fp_metric", 0.0)), objective, lims)


def smallest_budget(p: Problem) -> float:
    return float(p.cost.min(axis=1).sum())


def solve_ilp(p: Problem, budget: float) -> list[int] | None:
    """Exact: maximise the score subject to one bit-width per layer, total cost <= budget and
    every limit of the problem."""
    n, k = p.cost.shape
    # In units of a thousandth of the tie-break step, so the solver's absolute tolerances
    # (about 1e-6) are far finer than any difference between assignments that matters.
    objective = -p.gain.ravel() * (1e3 / p._eps)
    one_per_layer = np.zeros((n, n * k))
    for i in range(n):
        one_per_layer[i, i * k : (i + 1) * k] = 1
    constraints = [LinearConstraint(one_per_layer, 1, 1)]
    constraints += [LinearConstraint(c.ravel()[None, :], -np.inf, bound + _tol(bound)) for _, c, bound in p.constraints(budget)]
    res = milp(objective, constraints=constraints, integrality=np.ones(n * k), bounds=Bounds(0, 1), options={"mip_rel_gap": 1e-12})
    if res.status != 0 or res.x is None:
        return None
    return [int(np.argmax(res.x[i * k : (i + 1) * k])) for i in range(n)]


def solve_greedy(p: Problem, budget: float) -> list[int] | None:
    """Start at the widest bits; lower the layer that loses least score per unit of cost saved
    (with limits: per unit saved of every constraint still broken, each relative to its bound)."""
    n, k = p.cost.shape
    order = np.argsort(p.bits)  # indices from narrowest to widest
    choice = [int(order[-1])] * n
    score = p.gain
    rows = np.arange(n)
    constraints = p.constraints(budget)
    while broken := [(c, bound) for _, c, bound in constraints if float(c[rows, choice].sum()) > bound + _tol(bound)]:
        best, best_ratio = None, None
        for i in range(n):
            pos = list(order).index(choice[i])
            if pos == 0:
                continue
            nxt = int(order[pos - 1])
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
    if not constraints:
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
            excess = {name: (used[name] - c[i, choice[i]] + c[i, wider] - bound) / max(abs(bound), 1e-30) for name, c, bound in constraints}
            broken = {name: e for name, e in excess.items() if e > 1e-12}
            if broken:
                names.add(max(broken, key=broken.get))
    return ",".join(name for name, _, _ in constraints if name in names)


def check_budget(p: Problem, budget: float, unit: str) -> None:
    low = smallest_budget(p)
    if budget < low:
        raise SpecError(f"no assignment meets a budget of {budget:.6g} {unit}; the smallest reachable is {low:.6g} {unit} "
                        f"(every layer at {min(p.bits)} bits)")


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
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise SpecError(f"limit {name}={value!r}; expected a positive number") from None
        if not (math.isfinite(value) and value > 0):
            raise SpecError(f"limit {name}={value!r}; expected a positive number")
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
            low = float(lim.cost.min(axis=1).sum()) + lim.offset
            if low > value + _tol(value):
                raise SpecError(f"no assignment meets {who} {name} limit of {value:g} {kind.unit}; the smallest reachable is "
                                f"{low:.6g} {kind.unit} (every layer at its cheapest of {', '.join(map(str, p.bits))} bits)")
        elif not kind.weight_dependent:
            need = kind.value(cost_table(costs, {}, act_bits))
            if need > value + _tol(value):
                raise SpecError(f"{who} {name} limit of {value:g} {kind.unit} is below the model's {need:.6g} {kind.unit} "
                                f"({kind.label} at {act_bits} activation bits, whatever the weight bits)")


def over_limits(values: dict, limits: dict[str, float]) -> list[str]:
    """The limits a point's computed costs (kind -> value) break."""
    return [name for name, value in limits.items() if name in values and values[name] > value + _tol(value)]


def assignment_spec(assignment: dict[str, int], act_bits: int | str = 8, base: QuantSpec | None = None) -> QuantSpec:
    base = base or QuantSpec()
    return QuantSpec.parse({**base.to_dict(), "act_bits": act_bits, "layers": {k: {"weight_bits": v} for k, v in assignment.items()}})


class SearchConfig(OptionModel):
    """Parameters of a search."""

    target: str = "cpu-int8-ort"
    budget_kind: str = "weight_kib"
    act_bits: integer(1) = 8
    n_budgets: integer(0) = 6
    uniform_bits: tuple[integer(1), ...] = (8, 6, 4, 3)
    n_random: integer(0) = 3
    seed: integer(0) = 0
    objective: choice(OBJECTIVES) = "output_mse"
    latency_runs: integer(0) = 50  # onnxruntime latency of each front point's export (0 = skip)
    ptq: PTQConfig = Field(default_factory=PTQConfig)

    @field_validator("budget_kind")
    @classmethod
    def _registered_budget_kind(cls, v):
        try:
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

    from .export import export_qcdq
    from .verify import latency_ms

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


@fixed_threads()
def search(task, model, sens: pd.DataFrame, config: SearchConfig = SearchConfig(), budgets: list[float] | None = None,
           progress: bool = True, extra_budgets: tuple = (), limits: dict[str, float] | None = None) -> pd.DataFrame:
    """ILP (and greedy) assignments over a sweep of budgets, uniform and random baselines, all measured.

    ``budgets``: the swept values of ``config.budget_kind`` (any additive cost kind of
    ``workbench.cost.COST_KINDS``; default: a sweep from the cheapest to the dearest assignment).
    ``limits``: hard limits (cost kind -> value) on top of the target profile's own budgets, which
    they may tighten but not loosen; no returned point is over any of them.

    One row per evaluated configuration: kind, budget, one column per computed cost kind
    (weight_kib, bops, flash_kib, macs, peak_act_kib, ...; peak_act_bytes too), estimated_metric,
    measured_metric, the per-layer bits as JSON, bound_by (what held the point back: "budget",
    a limit's cost kind, or ""), on_front (Pareto front of the measured points of the solvers and
    the uniform assignments; random baselines are shown, never on the front) and latency_ms.
    ``df.attrs["limits"]`` holds the limits applied. The search chooses bits for Conv/Linear
    layers only: embedding tables are not varied (every point leaves them float) nor counted in
    its costs (:func:`workbench.cost.embedding_costs` prices them).
    """
    target = load_target(config.target)
    bkind = _budget_kind(config.budget_kind)
    if config.act_bits not in target.act_bits:
        raise SpecError(f"act_bits {config.act_bits} is not allowed by target {target.name}; it allows {target.act_bits}")
    values, sources = resolve_limits(target, limits)
    additive = {k: v for k, v in values.items() if get_cost_kind(k).additive}
    costs = layer_costs(model, task.example_input())
    p = build_problem(sens, costs, target.weight_bits, config.budget_kind, config.act_bits, config.objective, additive, sources)
    check_limits(p, costs, values, sources, config.act_bits)
    unit = bkind.unit
    uniform = {b: [p.bits.index(b)] * len(p.layers) for b in config.uniform_bits if b in p.bits}
    uniform = {b: c for b, c in uniform.items() if p.within_limits(c)}  # a uniform width over a limit is no candidate
    if budgets is None:
        low, high = smallest_budget(p), float(p.cost.max(axis=1).sum())
        if p.limits:  # beyond what the limits allow, a larger budget changes nothing
            top = solve_ilp(p, high)
            if top is None:
                raise SpecError(f"no assignment meets every limit at once ({', '.join(f'{k} <= {v:g}' for k, v in values.items())})")
            high = max(low, p.total_cost(top))
        budgets = [p.total_cost(c) for c in uniform.values()] + list(np.linspace(low, high, config.n_budgets))
    budgets = sorted(set(list(budgets) + [float(b) for b in extra_budgets]))
    for b in budgets:
        check_budget(p, b, unit)

    candidates = []
    for budget in budgets:
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

    rows, measured = [], {}
    for kind, budget, choice in tqdm(candidates, desc=f"search {task.name}", disable=not progress):
        assignment = p.assignment(choice)
        table = point_costs(costs, assignment, config.act_bits)
        if over_limits(table, values):  # a kind the program cannot carry (not additive, depends on the weights)
            continue
        key = json.dumps(assignment, sort_keys=True)
        if key not in measured:
            measured[key] = measure(task, model, assignment, config.act_bits, config.ptq)
        held = bound_by(p, choice, budget if kind in ("ilp", "greedy") else None)
        rows.append({"kind": kind, "budget": budget, **_cost_row(table), "estimated_metric": p.estimate(choice),
                     "estimated_error": -p.score(choice), "measured_metric": measured[key], "bits": key, "bound_by": held})
    df = pd.DataFrame(rows)
    # The front is drawn over every measured candidate of the search space: the solvers' points
    # and the uniform assignments (feasible points too), not the random baselines.
    searched = (df["kind"] != "random").to_numpy()
    front = np.zeros(len(df), bool)
    front[searched] = pareto_mask(df.loc[searched, config.budget_kind].to_numpy(), df.loc[searched, "measured_metric"].to_numpy())
    df["on_front"] = front
    df["latency_ms"] = np.nan
    if config.latency_runs:
        df.loc[df["on_front"], "latency_ms"] = [
            _latency(task, model, json.loads(b), config) for b in df.loc[df["on_front"], "bits"]]
    df.attrs.update({"task": task.name, "target": target.name, "budget_kind": config.budget_kind, "fp_metric": p.fp_metric, "act_bits": config.act_bits,
                     "limits": dict(values), "limit_sources": dict(sources)})
    return df


def best_within(points: pd.DataFrame, budget: float, budget_kind: str = "weight_kib", limits: dict[str, float] | None = None) -> pd.Series:
    """The best measured candidate (solver or uniform, not random) whose cost fits ``budget`` and
    every limit (the search's ``attrs["limits"]`` and ``limits``); ties go to the cheaper one, then
    to one solved at ``budget``."""
    get_cost_kind(budget_kind)
    if budget_kind not in points:
        raise SpecError(f"the points have no {budget_kind!r} column; cost columns are {', '.join(k for k in COST_KINDS if k in points)}")
    applied = {**points.attrs.get("limits", {})}
    for name, value in (limits or {}).items():
        get_cost_kind(name)
        applied[name] = min(float(value), applied.get(name, math.inf))
    ok = (points["kind"] != "random") & (points[budget_kind] <= budget * (1 + 1e-12))
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
    from .pruning import PruningSpec, prune

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
    searched = (df["kind"] != "random").to_numpy()
    front = np.zeros(len(df), bool)
    front[searched] = pareto_mask(df.loc[searched, budget_kind].to_numpy(), df.loc[searched, "measured_metric"].to_numpy())
    df["on_front"] = front
    df.attrs.update(points.attrs)
    return df
