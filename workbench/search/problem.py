"""The search problem: per-(layer, bits) estimated metric change and cost, from a sensitivity table.

:class:`Problem` holds what the solvers (:mod:`workbench.search.solvers`) read: the searched
layers, their allowed bit-widths, each (layer, bits)'s metric change from a quantise-one weight
sweep (the estimate is additive), output MSE (the tie-break) and cost in the budget's kind, plus
the hard constraints as :class:`Limit` (an additive kind: a sum constraint) and :class:`Cap` (a
non-additive kind: forbidden (layer, bits)). :func:`build_problem` builds one;
:func:`kind_values` reads one cost kind from a per-target cost table or the formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.cost import LayerCost, cost_table, get_cost_kind
from ..core.cost import budget_kind as _budget_kind
from ..core.cost import cost_table as cost_table_of
from ..infra.errors import SpecError


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



def artifact_overhead(costs, kind: str) -> float:
    """The measured artifact overhead of a realised kind that ``costs`` carries
    (:class:`~workbench.core.cost.LayerCosts`, :func:`workbench.search.realised.realised_costs`); 0 otherwise."""
    return float(getattr(costs, "overhead", {}).get(kind, 0.0))



def dominated(cost: np.ndarray, bits: list[int], allowed: np.ndarray) -> np.ndarray:
    """(layers, bits): True where a wider allowed width of the same layer costs no more (an
    artifact stores 2 and 3 bits in the 4-bit container of onnxruntime: they buy nothing)."""
    out = np.zeros(cost.shape, bool)
    for j, b in enumerate(bits):
        wider = [k for k, w in enumerate(bits) if w > b]
        for k in wider:
            out[:, j] |= allowed[:, k] & (cost[:, k] <= cost[:, j] + _tol(cost[:, j]))
    return out



def offered(costs: dict[str, LayerCost], layers: list[str], bits: list[int], budget_kind: str, act_bits: int = 8) -> np.ndarray:
    """(layers, bits): True where ``budget_kind`` offers the width: every width of a kind that is
    not realised; of a realised kind (``onnx_kib``, ``tflite_kib``), the widths no wider width of
    that layer stores in as few bytes (:func:`dominated`; onnxruntime: 4 and 8 bits)."""
    cost = cost_matrix(costs, layers, list(bits), budget_kind, act_bits)
    if not get_cost_kind(budget_kind).artifact:
        return np.ones(cost.shape, bool)
    return ~dominated(cost, list(bits), np.ones(cost.shape, bool))


def offered_bits(costs: dict[str, LayerCost], bits, budget_kind: str, act_bits: int = 8) -> tuple[int, ...]:
    """The widths of ``bits`` a search budgeting ``budget_kind`` offers some layer of ``costs``
    (:func:`offered`): what its sensitivity sweep needs (onnx_kib: 4 and 8 of 2-8)."""
    mask = offered(costs, list(costs), list(bits), budget_kind, act_bits)
    return tuple(b for j, b in enumerate(bits) if mask[:, j].any())


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
        offset = (float(k.value(rest_table)) if others else 0.0) + artifact_overhead(costs, kind)
        return cost_matrix(costs, layers, list(bits), kind, act_bits), offset, -math.inf, "formula"
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
    the budget is in the target's units (its overhead in ``Problem.offset``). A realised
    ``budget_kind`` (``onnx_kib``, ``tflite_kib``) takes its artifact's measured overhead from
    ``costs`` (:func:`workbench.search.realised.realised_costs`) as the offset, and forbids every
    (layer, bits) a wider allowed width of that layer costs no more than (:func:`dominated`)."""
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
    realised = bk.artifact and not bk.measured and not (cost_table is not None and budget_kind in cost_table.kinds)
    need = offered(costs, layers, list(bits), budget_kind, act_bits) if realised else np.ones(delta.shape, bool)
    missing = np.zeros(delta.shape, bool)
    for i, layer in enumerate(layers):
        rows = sw[sw["layer"] == layer]
        for j, b in enumerate(bits):
            hit = rows[rows["weight_bits"] == b]
            if hit.empty and not need[i, j]:  # a width the artifact stores no smaller than a wider one: never offered, no row needed
                delta[i, j], mse[i, j], missing[i, j] = -1.0, 0.0, True
                continue
            if hit.empty:
                wanted = sorted({bits[k] for k in np.flatnonzero(need.any(axis=0))})
                raise SpecError(f"the sensitivity table has no row for layer {layer} at {b} weight bits; sweep bits {', '.join(map(str, wanted))}")
            r = hit.iloc[0]
            d = r["metric_delta"] if math.isfinite(r["metric_delta"]) else -1.0  # a NaN case is the worst possible
            # A layer alone never improves the model: a positive change is evaluation noise, and
            # summing noise would steer the search. Ties are then broken by the output error.
            delta[i, j], mse[i, j] = min(0.0, d), r["output_mse"]
    if cost_table is not None and budget_kind in cost_table.kinds:
        cost, offset, _, _ = kind_values(budget_kind, costs, layers, list(bits), act_bits, cost_table)
    else:  # a realised kind's offset: its artifact's measured overhead
        cost, offset = cost_matrix(costs, layers, list(bits), budget_kind, act_bits), artifact_overhead(costs, budget_kind)
    others = {name: c for name, c in costs.items() if name not in layers}  # not searched: at 8 bits, as the measured model
    rest = cost_table_of(others, {}, act_bits)
    lims = [Limit(kind, float(value), cost_matrix(costs, layers, list(bits), kind, act_bits),
                  (float(get_cost_kind(kind).value(rest)) if others else 0.0) + artifact_overhead(costs, kind), (sources or {}).get(kind, ""))
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
    p = Problem(layers, list(bits), delta, mse, cost, float(sens.attrs.get("fp_metric", 0.0)), objective, tuple(lims), tuple(caps), offset,
                runs)
    if bk.artifact and not bk.measured:  # realised bytes: a width the artifact stores no smaller than a wider one is never offered
        from dataclasses import replace

        allowed = p.allowed
        p = replace(p, runs=(np.ones(cost.shape, bool) if runs is None else runs) & ~dominated(cost, list(bits), allowed))
    if (missing & p.allowed).any():  # a limit forbade the wider width that made a missing row's width pointless
        i, j = np.argwhere(missing & p.allowed)[0]
        raise SpecError(f"the sensitivity table has no row for layer {layers[i]} at {bits[j]} weight bits, which the limits leave "
                        f"as its cheapest; sweep bits {', '.join(map(str, bits))}")
    return p



def smallest_budget(p: Problem) -> float:
    """The budget kind's cheapest value (every layer at its cheapest allowed bits)."""
    return float(np.where(p.allowed, p.cost, np.inf).min(axis=1).sum()) + p.offset
