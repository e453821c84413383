"""Measured points of a search: their cost columns, the Pareto front, the best within a budget, joining point sets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.cost import COST_KINDS, LayerCost, cost_table, get_cost_kind, totals
from ..infra.errors import SpecError
from .problem import _tol


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



def best_within(points: pd.DataFrame, budget: float, budget_kind: str = "weight_kib", limits: dict[str, float] | None = None) -> pd.Series:
    """The best measured candidate (any kind but the random baselines: solver, uniform, refined,
    stored) whose cost fits ``budget`` and every limit (the search's ``attrs["limits"]`` and
    ``limits``) and budget (``within_budgets``).

    Ties are broken the same way whatever the rows' order: the cheaper point, then one solved
    at ``budget``, then the lower ``bits`` JSON, then the kind's name. Over a superset of points
    (a search's frame holds the configurations measured before as "stored" rows) a larger
    budget never gives a lower measured metric."""
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
    keys = ["measured_metric", budget_kind, "_other_budget"] + [k for k in ("bits", "kind") if k in fit]
    order = fit.sort_values(keys, ascending=[False] + [True] * (len(keys) - 1), kind="stable")
    return order.iloc[0].drop("_other_budget")



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
