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

Selection is monotone and honest: the frame also holds, as rows of kind "stored", the
configurations the store already holds under the same measurement key (model weights, data,
activation bits, PTQ configuration; the target and toolchain for its numbers on a target) that
this search did not propose, over its layers, at its allowed widths, within its limits, read
and never measured again. :func:`~workbench.search.front.best_within` over the frame is then
the best measured point within a budget among everything measured for this task, spec space and
target: raising the budget never lowers the chosen point's measured metric. A solver's point
whose measured metric falls more than ``config.refine_tolerance`` below its estimate corrects
the estimate (the miss attributed to the layers it put below their widest bits, at those bits
and narrower) and the ILP is solved again at its budget; the next point is measured, at most
``config.refine_rounds`` times (rows of kind "refined", ``attrs["refinements"]`` the log).

``max_drop`` turns the search into an accuracy target (:func:`search_accuracy_target`): the
cheapest configuration whose measured metric is within ``max_drop`` of the float metric.

What a candidate measures is kept in a :class:`~workbench.infra.store.ResultStore` (``store=``, like the
sweeps): its metric under a key of the model weights, data, activation bits and PTQ configuration;
its numbers on the target (default ``measure_point``) under one of the weights, data, activation
bits, target and toolchain version; its latency under one of the weights, data, activation bits,
PTQ configuration, number of runs, onnxruntime version and the host's CPU (model and count: a
store copied to another machine measures latency again); each row named by the bits
assignment. A second identical search is a lookup and builds nothing.

The search is split by responsibility: :mod:`~workbench.search.problem` (the estimate and the
constraints as a program), :mod:`~workbench.search.solvers` (ILP, greedy, min-cost),
:mod:`~workbench.search.config` (:class:`SearchConfig`), :mod:`~workbench.search.constraints`
(limits and budgets checked before any work), :mod:`~workbench.search.measuring` (candidates
measured once each, stored, turned into rows), :mod:`~workbench.search.front` (the Pareto front,
:func:`best_within`, :func:`join_points`) and :mod:`~workbench.search.accuracy_target`. This
module holds the driver, :func:`search`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from ..core.cost import get_cost_kind
from ..core.spec import short_repr
from ..infra.determinism import fixed_threads
from ..infra.errors import SpecError
from ..infra.store import ResultStore, resolve_store
from .accuracy_target import search_accuracy_target
from .config import SearchConfig
from .constraints import _setup, check_budget, check_budget_value, check_max_drop
from .front import front_on
from .measuring import _check_sendable, _finish, _Measured, _over_computed, _row
from .problem import Problem, smallest_budget
from .solvers import _milp, no_good_cuts, solve_greedy, solve_ilp


def _budget_sweep(s, config: SearchConfig, sweep: list[float] | None, extra_budgets: tuple, uniform: dict) -> list[float]:
    """The swept budgets (``config.budget_kind``), sorted, each checked reachable: ``sweep`` or
    the uniform assignments' costs and ``config.n_budgets`` from the cheapest to the dearest
    assignment the limits allow; ``extra_budgets`` added."""
    p = s.p
    unit = get_cost_kind(config.budget_kind).unit
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
    return sweep


def _candidates(p: Problem, config: SearchConfig, sweep: list[float], uniform: dict) -> list[tuple[str, float, list[int]]]:
    """(kind, budget, choice) of every candidate, in order: the ILP's and the greedy solver's at
    each swept budget, the uniform assignments, then up to ``config.n_random`` random baselines
    (one per uniform assignment's cost, seeded by ``config.seed``)."""
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
            if p.allowed.all():
                choice = list(rng.integers(0, len(p.bits), len(p.layers)))
            else:  # forbidden widths (dominated on a realised kind, or out of a cap): drawn among each layer's allowed ones
                choice = [int(rng.choice(np.flatnonzero(row))) for row in p.allowed]
            if p.total_cost(choice) <= budget and p.within_limits(choice):
                candidates.append(("random", budget, [int(c) for c in choice]))
                break
    return candidates


def _choice_of(p: Problem, assignment: dict) -> list[int] | None:
    """The program's choice (bit index per layer) of ``assignment``; None when it is not over
    exactly the program's layers, or uses a width the program does not allow."""
    if set(assignment) != set(p.layers) or any(assignment[layer] not in p.bits for layer in p.layers):
        return None
    return [p.bits.index(assignment[layer]) for layer in p.layers]



def _stored_rows(s, task, model, config: SearchConfig, measured: _Measured, proposed: set[str]) -> list[dict]:
    """Rows of kind "stored": the configurations the store holds under this search's key (see
    :meth:`_Measured.stored_configurations`) that no candidate of this search proposed (bits in
    ``proposed``), over exactly this search's layers, at widths this search allows, within its
    limits and budgets; their costs computed like any row's, estimated_metric from this
    search's estimate, the metric (and target numbers) read from the store, never measured.
    Ordered by the budget kind's cost, then bits (not by the order they were stored in)."""
    p, out = s.p, []
    for assignment in measured.stored_configurations():
        bits = json.dumps(assignment, sort_keys=True)
        choice = _choice_of(p, assignment)
        if bits in proposed or choice is None or not p.within_limits(choice) or _over_computed(s, config, assignment):
            continue
        row = _row(s, task, model, config, "stored", p.total_cost(choice), choice, measured)
        if row is not None:
            out.append(row)
    return sorted(out, key=lambda r: (r["budget"], r["bits"]))



def _correction(p: Problem, delta: np.ndarray, choice: list[int], miss: float) -> dict[str, float]:
    """Attribute an optimistic ``miss`` (estimate minus measured, > 0) of ``choice`` to the
    layers it put below their widest allowed bits, in proportion to their estimated loss there
    (equally where none is estimated), and subtract each layer's share from ``delta`` (in place)
    at the chosen bits and every narrower width of that layer. Returns layer -> share (empty:
    every layer is at its widest, nothing to correct)."""
    widest = [max((b for b, ok in zip(p.bits, p.allowed[i]) if ok), default=p.bits[c]) for i, c in enumerate(choice)]
    low = [i for i, c in enumerate(choice) if p.bits[c] < widest[i]]
    if not low:
        return {}
    loss = np.array([max(0.0, -float(delta[i, choice[i]])) for i in low])
    weights = loss / loss.sum() if loss.sum() > 0 else np.full(len(low), 1.0 / len(low))
    out = {}
    for i, w in zip(low, weights):
        share = float(miss * w)
        narrower = [j for j, b in enumerate(p.bits) if b <= p.bits[choice[i]]]
        delta[i, narrower] -= share
        out[p.layers[i]] = share
    return out



def _solve_excluding(p: Problem, budget: float, cuts: list[list[int]]) -> list[int] | None:
    """The ILP's choice at ``budget`` (every limit and cap held) unlike every choice of ``cuts``
    (no-good cuts); None when none is left."""
    return _milp(p, -p.gain.ravel() * (1e3 / p._eps), budget, no_good_cuts(p, cuts))



def _say(text: str, progress: bool) -> None:
    logging.getLogger("workbench.search").info(text)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)



def _refine(s, task, model, config: SearchConfig, solved: list[tuple[dict, list[int]]], cuts: list[list[int]], measured: _Measured,
            executor, progress: bool) -> tuple[list[dict], list[dict]]:
    """Rounds of refinement after a missed prediction: ``(rows of kind "refined", the log)``.

    Each round looks at the points of the round before (``solved``: the ILP's rows and choices
    at first): a point whose measured metric is more than ``config.refine_tolerance`` below its
    estimate (under the corrections so far) corrects the estimate (:func:`_correction`: the miss
    is attributed to the layers it put below their widest bits), and the ILP is solved again at
    that point's budget on the corrected estimate (maximising it, ties to the lower output
    error, whatever ``config.objective``), unlike every configuration this search measured
    (``cuts``, grown as it goes); the new points are measured (on ``executor``) and are the next
    round's. At most ``config.refine_rounds`` rounds; a round with no miss ends it. A refined
    row's estimated_metric is the corrected estimate it was chosen on. The log has one entry per
    missed point: round, budget, bits, predicted, measured, correction (layer -> metric
    subtracted at those bits and narrower) and next (the re-solved bits, None when nothing
    fits) with next_predicted."""
    p, rows_out, log = s.p, [], []
    delta = p.delta.copy()
    idx = np.arange(len(p.layers))
    for rnd in range(1, config.refine_rounds + 1):
        missed = []
        for row, choice in sorted(solved, key=lambda rc: (rc[0]["budget"], rc[0]["bits"])):
            predicted = p.fp_metric + float(delta[idx, choice].sum())
            if predicted - row["measured_metric"] > config.refine_tolerance:
                missed.append((row, choice, predicted))
        if not missed:
            break
        entries = []
        for row, choice, predicted in missed:
            miss = p.fp_metric + float(delta[idx, choice].sum()) - row["measured_metric"]  # after this round's earlier corrections
            correction = _correction(p, delta, choice, miss) if miss > 0 else {}
            entries.append({"round": rnd, "budget": float(row["budget"]), "bits": row["bits"], "predicted": predicted,
                            "measured": float(row["measured_metric"]), "correction": correction})
        corrected = dataclasses.replace(p, delta=delta.copy(), objective="metric")
        proposals = []
        for e in entries:
            choice = _solve_excluding(corrected, e["budget"], cuts)
            e["next"] = None if choice is None else json.dumps(p.assignment(choice), sort_keys=True)
            e["next_predicted"] = None if choice is None else corrected.estimate(choice)
            _say(f"search {task.name}: at budget {e['budget']:.6g} {config.budget_kind} the point predicted {e['predicted']:.4f} "
                 f"measured {e['measured']:.4f}; estimate corrected, round {rnd} "
                 + (f"measures {e['next']} (predicted {e['next_predicted']:.4f})" if choice is not None else "has no other point to try"),
                 progress)
            if choice is not None:
                proposals.append((e["budget"], choice))
        log += entries
        cuts += [c for _, c in proposals if c not in cuts]
        todo = [p.assignment(c) for _, c in proposals]
        measured.measure_all([a for a in todo if not _over_computed(s, config, a)], executor, progress)
        solved = []
        for budget, choice in proposals:
            row = _row(s, task, model, config, "refined", budget, choice, measured)
            if row is not None:
                row["estimated_metric"] = corrected.estimate(choice)
                rows_out.append(row)
                solved.append((row, choice))
        if not solved:
            break
    return rows_out, log



def _all_rows(s, task, model, config: SearchConfig, candidates: list, measured: _Measured, executor, progress: bool) -> tuple[list[dict], list[dict]]:
    """The rows of a search and its refinement log: every distinct configuration of
    ``candidates`` the store lacks is measured first (on ``executor``), the rows assembled in the
    candidates' order from what was measured or stored; then the refined points
    (:func:`_refine`), then the stored ones no candidate proposed (:func:`_stored_rows`)."""
    p = s.p
    assignments = [p.assignment(choice) for _, _, choice in candidates]
    measured.measure_all([a for a in assignments if not _over_computed(s, config, a)], executor, progress)
    rows, solved = [], []
    for kind, budget, choice in candidates:
        row = _row(s, task, model, config, kind, budget, choice, measured)
        if row is not None:
            rows.append(row)
            if kind == "ilp":
                solved.append((row, choice))
    cuts = [list(c) for c in dict.fromkeys(tuple(c) for _, _, c in candidates)]
    refined, refinements = _refine(s, task, model, config, solved, cuts, measured, executor, progress)
    rows += refined
    rows += _stored_rows(s, task, model, config, measured, {r["bits"] for r in rows})
    return rows, refinements



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
    baselines are shown, never on the front) and latency_ms. Kinds: "ilp", "greedy", "uniform-<bits>",
    "random", "refined" (the ILP re-solved after a missed prediction) and "stored" (measured
    before, see below). ``df.attrs["limits"]`` holds the
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

    Stored configurations: every configuration the store holds under this search's key (the
    metric's; with a cost table, its numbers on the target must be stored too, which only the
    default ``measure_point`` does) that no candidate proposed, over exactly this search's layers
    and allowed widths, within its limits and budgets, is a row of kind "stored" (its budget: its
    own cost; estimated_metric: this search's estimate; the metric read from the store, never
    measured; its latency read from the store only, NaN where none is), ordered by cost then
    bits. It is on the front where it belongs there and never a random baseline; ``best_within``
    may choose it. ``attrs["stored"]`` counts them; they count in neither ``computed`` nor
    ``from_store``.

    Refinement: when an ILP point's measured metric falls more than ``config.refine_tolerance``
    below its estimate, the miss is attributed to the layers it put below their widest bits (in
    proportion to their estimated loss there) and subtracted from the estimate at those bits and
    narrower; the ILP is solved again at that budget on the corrected estimate, unlike every
    configuration this search measured, and the new point is measured (a row of kind "refined",
    its estimated_metric the corrected estimate), and checked in turn: at most
    ``config.refine_rounds`` rounds. ``attrs["refinements"]`` lists each missed point (round,
    budget, bits, predicted, measured, correction per layer, next bits and next_predicted); the
    progress output and the ``workbench.search`` logger say so.

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
    uniform = {b: [p.bits.index(b)] * len(p.layers) for b in config.uniform_bits if b in p.bits}
    uniform = {b: c for b, c in uniform.items() if p.within_limits(c)}  # a uniform width over a limit is no candidate
    sweep = _budget_sweep(s, config, sweep, extra_budgets, uniform)
    candidates = _candidates(p, config, sweep, uniform)

    rows, refinements = _all_rows(s, task, model, config, candidates, measured, executor, progress)
    df = pd.DataFrame(rows)
    # The front is drawn over every measured candidate of the search space: the solvers' points
    # and the uniform assignments (feasible points too), not the random baselines nor a point a
    # measured number put over a budget.
    df["on_front"] = front_on(df, config.budget_kind).to_numpy() if len(df) else np.zeros(0, bool)
    df = _finish(df, s, task, model, config, measured)
    df.attrs["executor"] = executor.describe()
    df.attrs["refinements"] = refinements
    df.attrs["stored"] = int((df["kind"] == "stored").sum()) if len(df) else 0
    return df
