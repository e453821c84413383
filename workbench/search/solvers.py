"""Solvers of a search :class:`~workbench.search.problem.Problem`: the exact integer linear programs and the greedy fallback.

:func:`solve_ilp` maximises the estimate under a budget (scipy.optimize.milp), :func:`solve_greedy`
is the heuristic fallback, :func:`solve_min_cost` is the cheapest assignment whose estimate
reaches a floor (the accuracy target's program, with no-good cuts), and :func:`bound_by` names the
constraints that hold a solution back.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .problem import Problem, _tol


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
    extra = [LinearConstraint(p.delta.ravel()[None, :], min_estimate - p.fp_metric - 1e-12, np.inf), *no_good_cuts(p, cuts)]
    return _milp(p, objective, None, extra)



def no_good_cuts(p: Problem, cuts) -> list:
    """One linear constraint per assignment of ``cuts`` (a choice index per layer) that excludes
    exactly that assignment from the program's solutions (at most n - 1 of its n choices)."""
    n, k = p.cost.shape
    out = []
    for cut in cuts:
        row = np.zeros(n * k)
        row[[i * k + c for i, c in enumerate(cut)]] = 1
        out.append(LinearConstraint(row[None, :], -np.inf, n - 1))
    return out


def _best_estimate(p: Problem, cuts: list[list[int]] = ()) -> float | None:
    """The highest estimated metric of an assignment within every limit and cap, unlike every
    assignment of ``cuts``; None when none is left."""
    choice = _milp(p, -p.delta.ravel(), None, no_good_cuts(p, cuts))
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
