"""Mixed-precision search: per-layer weight bits under a budget, from a sensitivity table.

The estimate of an assignment is additive: ``fp_metric + sum over layers of metric_delta(layer,
bits)`` from a quantise-one weight sweep (positive changes, which are evaluation noise, count as
zero; ties are broken by the layers' output MSE). An exact integer linear program (scipy.optimize.milp)
maximises it under a budget on packed weight KiB or BOPs; a greedy heuristic is the fallback.
Sweeping budgets gives a front; every candidate on it is then really built, calibrated and
measured, beside uniform and random baselines at the same budgets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from tqdm.auto import tqdm

from .cost import LayerCost, cost_table, layer_costs, load_target, totals
from .errors import SpecError
from .evaluate import predict
from .pipeline import PTQConfig, quantize_task
from .spec import QuantSpec
from .determinism import fixed_threads

BUDGET_KINDS = ("weight_kib", "bops")


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

    def assignment(self, choice: list[int]) -> dict[str, int]:
        return {layer: self.bits[c] for layer, c in zip(self.layers, choice)}


OBJECTIVES = ("output_mse", "metric")


def build_problem(sens: pd.DataFrame, costs: dict[str, LayerCost], bits: list[int], budget_kind: str, act_bits: int = 8,
                  objective: str = "output_mse") -> Problem:
    """Turn a quantise-one weight sweep into a search problem over ``bits``."""
    if budget_kind not in BUDGET_KINDS:
        raise SpecError(f"budget kind {budget_kind!r}; expected one of {', '.join(BUDGET_KINDS)}")
    if objective not in OBJECTIVES:
        raise SpecError(f"objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    sw = sens[(sens["mode"] == "quantise-one")]
    for col in ("weight_format", "act_format"):  # the search picks integer widths: other formats' rows are columns it does not read
        if col in sw:
            sw = sw[sw[col].isna() | (sw[col] == "int")]
    layers = [layer for layer in sw.sort_values("depth")["layer"].drop_duplicates() if layer in costs]
    delta = np.zeros((len(layers), len(bits)))
    mse = np.zeros_like(delta)
    cost = np.zeros_like(delta)
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
            c = costs[layer]
            cost[i, j] = (math.ceil(c.weights * b / 8) + 4 * c.biases) / 1024 if budget_kind == "weight_kib" else c.macs * b * act_bits
    return Problem(layers, list(bits), delta, mse, cost, float(sens.attrs.get("fp_metric", 0.0)), objective)


def smallest_budget(p: Problem) -> float:
    return float(p.cost.min(axis=1).sum())


def solve_ilp(p: Problem, budget: float) -> list[int] | None:
    """Exact: maximise the score subject to one bit-width per layer and total cost <= budget."""
    n, k = p.cost.shape
    # In units of a thousandth of the tie-break step, so the solver's absolute tolerances
    # (about 1e-6) are far finer than any difference between assignments that matters.
    objective = -p.gain.ravel() * (1e3 / p._eps)
    one_per_layer = np.zeros((n, n * k))
    for i in range(n):
        one_per_layer[i, i * k : (i + 1) * k] = 1
    constraints = [LinearConstraint(one_per_layer, 1, 1), LinearConstraint(p.cost.ravel()[None, :], -np.inf, budget * (1 + 1e-12))]
    res = milp(objective, constraints=constraints, integrality=np.ones(n * k), bounds=Bounds(0, 1), options={"mip_rel_gap": 1e-12})
    if res.status != 0 or res.x is None:
        return None
    return [int(np.argmax(res.x[i * k : (i + 1) * k])) for i in range(n)]


def solve_greedy(p: Problem, budget: float) -> list[int] | None:
    """Start at the widest bits; lower the layer that loses least score per unit of cost saved."""
    n, k = p.cost.shape
    order = np.argsort(p.bits)  # indices from narrowest to widest
    choice = [int(order[-1])] * n
    score = p.gain
    while p.total_cost(choice) > budget * (1 + 1e-12):
        best, best_ratio = None, None
        for i in range(n):
            pos = list(order).index(choice[i])
            if pos == 0:
                continue
            nxt = int(order[pos - 1])
            saved = p.cost[i, choice[i]] - p.cost[i, nxt]
            lost = score[i, choice[i]] - score[i, nxt]
            ratio = lost / saved if saved > 0 else math.inf
            if best_ratio is None or ratio < best_ratio:
                best, best_ratio = (i, nxt), ratio
        if best is None:
            return None
        choice[best[0]] = best[1]
    return choice


def check_budget(p: Problem, budget: float, unit: str) -> None:
    low = smallest_budget(p)
    if budget < low:
        raise SpecError(f"no assignment meets a budget of {budget:.6g} {unit}; the smallest reachable is {low:.6g} {unit} "
                        f"(every layer at {min(p.bits)} bits)")


def assignment_spec(assignment: dict[str, int], act_bits: int | str = 8, base: QuantSpec | None = None) -> QuantSpec:
    base = base or QuantSpec()
    return QuantSpec.parse({**base.to_dict(), "act_bits": act_bits, "layers": {k: {"weight_bits": v} for k, v in assignment.items()}})


@dataclass(frozen=True)
class SearchConfig:
    """Parameters of a search."""

    target: str = "cpu-int8-ort"
    budget_kind: str = "weight_kib"
    act_bits: int = 8
    n_budgets: int = 6
    uniform_bits: tuple = (8, 6, 4, 3)
    n_random: int = 3
    seed: int = 0
    objective: str = "output_mse"
    latency_runs: int = 50  # onnxruntime latency of each front point's export (0 = skip)
    ptq: PTQConfig = field(default_factory=PTQConfig)


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


@fixed_threads()
def search(task, model, sens: pd.DataFrame, config: SearchConfig = SearchConfig(), budgets: list[float] | None = None,
           progress: bool = True, extra_budgets: tuple = ()) -> pd.DataFrame:
    """ILP (and greedy) assignments over a sweep of budgets, uniform and random baselines, all measured.

    One row per evaluated configuration: kind, budget, weight_kib, bops, estimated_metric,
    measured_metric, on_front (Pareto front of the measured points of the solvers and the uniform
    assignments; random baselines are shown, never on the front) and the per-layer bits as JSON.
    """
    target = load_target(config.target)
    if config.act_bits not in target.act_bits:
        raise SpecError(f"act_bits {config.act_bits} is not allowed by target {target.name}; it allows {target.act_bits}")
    costs = layer_costs(model, task.example_input())
    p = build_problem(sens, costs, target.weight_bits, config.budget_kind, config.act_bits, config.objective)
    unit = "KiB" if config.budget_kind == "weight_kib" else "BOPs"
    uniform = {b: [p.bits.index(b)] * len(p.layers) for b in config.uniform_bits if b in p.bits}
    if budgets is None:
        low, high = smallest_budget(p), float(p.cost.max(axis=1).sum())
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
            if p.total_cost(choice) <= budget:
                candidates.append(("random", budget, [int(c) for c in choice]))
                break

    rows, measured = [], {}
    for kind, budget, choice in tqdm(candidates, desc=f"search {task.name}", disable=not progress):
        assignment = p.assignment(choice)
        key = json.dumps(assignment, sort_keys=True)
        if key not in measured:
            measured[key] = measure(task, model, assignment, config.act_bits, config.ptq)
        table = totals(cost_table(costs, assignment, config.act_bits))
        rows.append({"kind": kind, "budget": budget, "weight_kib": table["weight_kib"], "bops": table["bops"],
                     "peak_act_bytes": table["peak_act_bytes"], "estimated_metric": p.estimate(choice), "estimated_error": -p.score(choice), "measured_metric": measured[key],
                     "bits": key})
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
    df.attrs.update({"task": task.name, "target": target.name, "budget_kind": config.budget_kind, "fp_metric": p.fp_metric, "act_bits": config.act_bits})
    return df


def best_within(points: pd.DataFrame, budget: float, budget_kind: str = "weight_kib") -> pd.Series:
    """The best measured candidate (solver or uniform, not random) whose cost fits ``budget``;
    ties go to the cheaper one."""
    fit = points[(points["kind"] != "random") & (points[budget_kind] <= budget * (1 + 1e-12))]
    if fit.empty:
        raise SpecError(f"no evaluated candidate fits a budget of {budget:.6g} {budget_kind}")
    return fit.sort_values(["measured_metric", budget_kind], ascending=[False, True]).iloc[0]


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
            table = totals(cost_table(costs, assignment, act_bits))
            metric = measure(task, pruned, assignment, act_bits, ptq)
            latency = math.nan
            if latency_runs:
                latency = _latency(task, pruned, assignment, SearchConfig(act_bits=act_bits, latency_runs=latency_runs, ptq=ptq))
            rows.append({"kind": f"pruned@{spec.label} w{b}", "budget": table["weight_kib"], "weight_kib": table["weight_kib"], "bops": table["bops"],
                         "peak_act_bytes": table["peak_act_bytes"], "estimated_metric": math.nan, "estimated_error": math.nan,
                         "measured_metric": metric, "bits": json.dumps(assignment, sort_keys=True), "on_front": False, "latency_ms": latency,
                         "pruning": json.dumps(spec.to_dict(), sort_keys=True)})
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def join_points(points: pd.DataFrame, more: pd.DataFrame, budget_kind: str | None = None) -> pd.DataFrame:
    """Search points and pruned-and-quantised points in one table, the measured front drawn anew
    over both (random baselines stay off it); ``pruning`` is empty for unpruned points."""
    budget_kind = budget_kind or points.attrs.get("budget_kind", "weight_kib")
    df = pd.concat([points.assign(pruning=points.get("pruning", "")), more], ignore_index=True)
    df["pruning"] = df["pruning"].fillna("")
    searched = (df["kind"] != "random").to_numpy()
    front = np.zeros(len(df), bool)
    front[searched] = pareto_mask(df.loc[searched, budget_kind].to_numpy(), df.loc[searched, "measured_metric"].to_numpy())
    df["on_front"] = front
    df.attrs.update(points.attrs)
    return df
