"""Measuring a search's candidates: built, calibrated, evaluated (and on the target), each configuration once.

:class:`_Measured` reads what a :class:`~workbench.infra.store.ResultStore` holds of a
configuration and measures the rest (on an executor: one unit per configuration, stored by the
calling process as each finishes); :func:`_row` turns a candidate into its row and
:func:`_finish` adds the front's latency and the frame's attrs;
:meth:`_Measured.stored_configurations` lists what the store already holds under the search's key
(the search's rows of kind "stored", read, never measured again). :func:`pruned_candidates`
measures pruned-and-quantised points on the search's axes.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core.cost import layer_costs
from ..core.spec import assignment_spec, short_repr
from ..export.pipeline import PTQConfig, quantize_task
from ..infra.store import SweepRecorder, sweep_fingerprint
from ..tasks.evaluate import predict
from .config import SearchConfig
from .constraints import _Setup, over_limits
from .front import _cost_row, point_costs
from .problem import _tol
from .solvers import bound_by


SEARCH_VERSION = "1"  # what a stored candidate's numbers mean; bump when measuring changes



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

    def _get(self, what: str, bits: str, fields: tuple, compute: Callable[[], dict], count: bool = True) -> dict:
        """The stored row of ``what`` for ``bits``, else ``compute()``'s, stored at once.
        ``count``: whether reading it counts in ``from_store`` (a row of kind "stored", which
        no candidate of this search proposed, does not)."""
        row = self._lookup(what, bits, fields)
        if row is None:
            row = self._recorder(what).put(bits, {k: float(v) for k, v in compute().items()})
            self._computed.add(bits)
        elif count:
            self._stored.add(bits)
        return row

    def stored_configurations(self) -> list[dict[str, int]]:
        """Every configuration (layer -> weight bits) the store holds a sound metric of under this
        search's key (model weights, data, activation bits, PTQ configuration, code versions),
        in the order they were stored; with a cost table, only those whose numbers on its target
        are stored too (the default ``measure_point`` only: a caller's ``measure_costs`` stores
        nothing, so then none). Nothing is measured; no store, no configurations."""
        if self.store is None:
            return []
        out = []
        for bits in list(self._recorder("metric").done):
            try:
                assignment = json.loads(bits)
            except ValueError:
                continue
            if not (isinstance(assignment, dict) and all(isinstance(b, int) and not isinstance(b, bool) for b in assignment.values())):
                continue
            if not self.missing(assignment):
                out.append(assignment)
        return out

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

    def metric(self, assignment: dict[str, int], count: bool = True) -> float:
        """The measured metric of ``assignment`` (built, calibrated, evaluated)."""
        c = self.config
        bits = json.dumps(assignment, sort_keys=True)
        return self._get("metric", bits, ("measured_metric",),
                         lambda: {"measured_metric": measure(self.task, self.model, assignment, c.act_bits, c.ptq)}, count)["measured_metric"]

    def on_target(self, assignment: dict[str, int], count: bool = True) -> dict[str, float]:
        """The target's own numbers of ``assignment`` (``measure_costs``); stored only for the
        default ``measure_point``; a caller's callable is asked once per configuration in every search."""
        s, c = self.s, self.config
        bits = json.dumps(assignment, sort_keys=True)
        if not s.default_costs:  # asked once per configuration of this search
            if bits not in self._asked:
                self._asked[bits] = dict(s.measure_costs(self.task, self.model, assignment, s.table.target, c.act_bits))
                self._computed.add(bits)
            return self._asked[bits]
        return self._get("target", bits, (), lambda: dict(s.measure_costs(self.task, self.model, assignment, s.table.target, c.act_bits)), count)

    def latency(self, bits: str, measure_it: bool = True) -> float:
        """p50 onnxruntime latency of the configuration ``bits`` (JSON of an assignment);
        ``measure_it`` False: the stored one only (NaN when none is stored)."""
        if not measure_it:
            row = self._lookup("latency", bits, ("latency_ms",))
            return math.nan if row is None else float(row["latency_ms"])
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
    None when its computed costs break a limit or budget the program could not carry. A row of
    kind "stored" reads what the store holds (it must hold it) and does not count in ``from_store``."""
    assignment = s.p.assignment(choice)
    if _over_computed(s, config, assignment):  # a kind the program cannot carry (not additive, depends on the weights)
        return None
    table = point_costs(s.costs, assignment, config.act_bits)
    key = json.dumps(assignment, sort_keys=True)
    count = kind != "stored"
    metric = measured.metric(assignment, count)
    on_target = measured.on_target(assignment, count) if s.table is not None else {}
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
                "bound_by": bound_by(s.p, choice, budget if kind in ("ilp", "greedy", "refined") else None), "within_budgets": not over,
                "over_budgets": ",".join(over)})
    return row



def _value(row: dict, kind: str) -> float:
    """A point's value of ``kind``: measured on the target, its estimate where not measured (NaN)."""
    v = row[kind]
    return row.get(f"{kind}_estimate", v) if (v is None or (isinstance(v, float) and math.isnan(v))) else v



def _finish(df: pd.DataFrame, s: _Setup, task, model, config, measured: _Measured) -> pd.DataFrame:
    if config.latency_runs and "on_front" in df and (s.table is None or "latency_ms" not in s.table.kinds):
        df["latency_ms"] = np.nan
        front = df.loc[df["on_front"]]  # a stored point's latency is read from the store only (NaN where none is)
        df.loc[df["on_front"], "latency_ms"] = [measured.latency(b, kind != "stored") for b, kind in zip(front["bits"], front["kind"])]
    elif "latency_ms" not in df:
        df["latency_ms"] = np.nan
    df.attrs.update({"task": task.name, "target": s.target.name, "budget_kind": config.budget_kind, "fp_metric": s.p.fp_metric,
                     "act_bits": config.act_bits, "limits": dict(s.limits), "limit_sources": dict(s.sources), "budgets": dict(s.budgets),
                     "cost_target": None if s.table is None else s.table.target, "bits": list(s.p.bits),
                     "computed": measured.computed, "from_store": measured.from_store})
    return df



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
