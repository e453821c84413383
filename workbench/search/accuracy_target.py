"""The accuracy-target search: the cheapest configuration whose measured metric is within ``max_drop`` of float.

:func:`search_accuracy_target` alternates an exact program (the cheapest assignment whose
estimate reaches the target, :func:`workbench.search.solvers.solve_min_cost`) with measuring its
answer, cutting off each miss and raising the margin by the observed optimism. Before it answers
"unreachable" it measures the widest configuration the target offers (:func:`widest_choice`):
an estimate that is wrong about every cheaper point cannot hide a target the widest point meets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core.cost import get_cost_kind
from ..infra.determinism import fixed_threads
from ..infra.errors import SpecError
from ..infra.store import ResultStore, resolve_store
from .config import SearchConfig
from .constraints import _setup, check_max_drop
from .measuring import _finish, _Measured, _row
from .problem import Problem
from .solvers import _best_estimate, _milp, solve_min_cost


def widest_choice(p: Problem, costs: dict) -> list[int] | None:
    """The widest configuration the target offers: every searched layer at the profile's widest
    weight bits; where that breaks a limit, a budget or a cap (or the cost table's target cannot
    run a layer there), the assignment with the most weight bits (sum over layers of weights x
    bits) that meets them all, ties to the lower output error. None when nothing meets them."""
    n = len(p.layers)
    top = [int(np.argmax(p.bits))] * n
    if p.within_limits(top):
        return top
    weights = np.array([max(int(costs[layer].weights), 1) for layer in p.layers], float)
    size = weights[:, None] * np.asarray(p.bits, float)[None, :]
    objective = -size / float(size.max()) + 1e-9 * p.mse_norm / max(n, 1)
    return _milp(p, objective.ravel())


def describe_choice(p: Problem, choice: list[int]) -> str:
    """A configuration in a few words: "every layer at 8 bits", or "every layer at 8 bits but
    conv1 4, fc 4" (the most common width, then the layers at another)."""
    bits = [p.bits[c] for c in choice]
    common = Counter(bits).most_common(1)[0][0]
    rest = [f"{layer} {b}" for layer, b in zip(p.layers, bits) if b != common]
    return f"every layer at {common} bits" + (f" but {', '.join(rest)}" if rest else "")


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

    When the loop gives up (infeasible, or ``max_iterations`` measured) without a point that
    holds, the widest configuration the target offers (:func:`widest_choice`: every layer at the
    profile's widest weight bits at ``config.act_bits``, or the widest within the limits and
    budgets) is measured too, unless the loop already measured it: one more row, so at most
    ``max_iterations + 1``. Where it holds, it is the answer (nothing cheaper measured held);
    the target is "unreachable" only when that point too misses it.

    Returns a DataFrame with one row per measured point (kind ``target-<i>``), the columns of
    :func:`search` plus ``required_estimate`` (NaN on the widest point measured after the loop:
    no program chose it), ``drop`` (fp - measured), ``met_drop``, ``widest`` (True on the widest
    configuration's row) and ``chosen`` (True on the one row chosen: the first of the loop that
    met the drop within the budgets, else the widest where it did).
    ``attrs["chosen"]``: that row's index, or None when the target is unreachable;
    ``attrs["reached"]``: whether it was reached; ``attrs["widest"]``: the widest
    configuration's row index (None when none was measured); ``attrs["computed"]`` /
    ``attrs["from_store"]`` and ``store`` as in :func:`search`; ``attrs["message"]``: one line
    saying what was chosen, or that the target is unreachable, what the widest configuration
    measured and what came closest (the best measured point and its drop);
    ``attrs["max_drop"]``, ``attrs["fp_metric"]``. It raises nothing for an unreachable target:
    read ``attrs["reached"]``.
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
    widest = widest_choice(p, s.costs)
    rows, cuts = [], []

    def evaluate(choice: list[int], need: float) -> dict | None:
        """Build and measure ``choice`` as the next point; its row (None: over a limit the program cannot carry)."""
        row = _row(s, task, model, config, f"target-{len(cuts)}", p.total_cost(choice), choice, measured)
        cuts.append(choice)
        if row is None:
            return None
        met = row["measured_metric"] >= floor - 1e-12
        row.update({"required_estimate": need, "drop": p.fp_metric - row["measured_metric"], "met_drop": bool(met),
                    "widest": choice == widest})
        rows.append(row)
        return row

    optimism, chosen, why_stop = float(margin), None, "max_iterations"
    bar = tqdm(total=max_iterations, desc=f"accuracy target {task.name}", disable=not progress)
    for _ in range(max_iterations):
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
        row = evaluate(choice, need)
        bar.update()
        if row is None:  # a computed cost over a limit the program cannot carry
            continue
        if row["met_drop"] and row["within_budgets"]:
            chosen = len(rows) - 1
            break
        if not row["met_drop"]:
            optimism = max(optimism, row["estimated_metric"] - row["measured_metric"])
    bar.close()
    if chosen is None and widest is not None and widest not in cuts:  # the loop gives up: the widest point is measured before "unreachable"
        row = evaluate(widest, float("nan"))
        if row is not None and row["met_drop"] and row["within_budgets"]:
            chosen = len(rows) - 1
    cols = list(rows[0]) if rows else ["kind", "budget", "estimated_metric", "measured_metric", "bits", "bound_by", "within_budgets",
                                       "required_estimate", "drop", "met_drop", "widest"]
    df = pd.DataFrame(rows, columns=cols)
    df["chosen"] = np.arange(len(df)) == (chosen if chosen is not None else -1)
    df["on_front"] = df["chosen"]
    df = _finish(df, s, task, model, config, measured)
    at = np.flatnonzero(df["widest"].astype(bool).to_numpy()) if len(df) else []
    message = _message(df, p, config, max_drop, chosen, why_stop, max_iterations, widest)
    df.attrs.update({"chosen": None if chosen is None else int(df.index[chosen]), "reached": chosen is not None, "message": message,
                     "max_drop": max_drop, "widest": int(df.index[at[0]]) if len(at) else None})
    return df


def _message(df: pd.DataFrame, p: Problem, config: SearchConfig, max_drop: float, chosen: int | None, why_stop: str,
             max_iterations: int, widest: list[int] | None) -> str:
    """The accuracy target's one line: the chosen point (and, when it is the widest, that nothing
    cheaper measured held), or "unreachable" with what the widest configuration measured, why
    the loop stopped and what came closest."""
    bk = config.budget_kind
    unit = get_cost_kind(bk).unit
    fp = p.fp_metric
    stop = {"infeasible": "no configuration left whose estimate can reach it within the budgets",
            "max_iterations": f"{max_iterations} iterations measured"}[why_stop]
    wide = df[df["widest"].astype(bool)] if len(df) else df
    what = "the widest configuration" + (f" ({describe_choice(p, widest)})" if widest is not None else "")
    if chosen is not None:
        r = df.iloc[chosen]
        head = f"{r['kind']}" + (f" ({what})" if bool(r["widest"]) else "")
        tail = "" if not bool(r["widest"]) else (f"; no cheaper configuration measured reached it ({stop})" if len(df) > 1 else
                                                f"; the only point measured ({stop})")
        return (f"{head}: {bk} {r[bk]:.6g} {unit}, measured {r['measured_metric']:.4f} "
                f"(drop {r['drop']:.4g} <= {max_drop:g} below float {fp:.4f}){tail}")
    if len(wide):
        w = wide.iloc[0]
        over = "" if bool(w["within_budgets"]) else f", over the budgets {w['over_budgets']}"
        head = (f"accuracy target unreachable: {what} measured {w['measured_metric']:.4f}, {w['drop']:.4g} below float {fp:.4f}{over}; "
                f"target max_drop {max_drop:g} ({stop})")
    else:
        none = "none meets the limits and budgets" if widest is None else "it breaks a limit the program cannot carry"
        head = (f"accuracy target unreachable: no configuration measured a drop <= {max_drop:g} below float {fp:.4f} ({stop}; "
                f"the widest configuration was not measured: {none})")
    ok = df[df["within_budgets"].astype(bool)] if len(df) else df
    if len(ok):
        best = ok.loc[ok["measured_metric"].idxmax()]
        closest = f"closest: {best['kind']} measured {best['measured_metric']:.4f} (drop {best['drop']:.4g}) at {bk} {best[bk]:.6g} {unit}"
    else:
        closest = "nothing within the budgets was measured"
    return f"{head}; {closest}"
