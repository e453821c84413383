"""The accuracy-target search: the cheapest configuration whose measured metric is within ``max_drop`` of float.

:func:`search_accuracy_target` alternates an exact program (the cheapest assignment whose
estimate reaches the target, :func:`workbench.search.solvers.solve_min_cost`) with measuring its
answer, cutting off each miss and raising the margin by the observed optimism.
"""

from __future__ import annotations

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
from .solvers import _best_estimate, solve_min_cost


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
