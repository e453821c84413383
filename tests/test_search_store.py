"""Search candidates are kept in the result store: a second identical search measures nothing."""

import copy
import json
import sqlite3
import threading

import pandas as pd
import pytest
import torch

from workbench.search.config import SearchConfig
from workbench.search.precision import search
from workbench.infra.store import ResultStore

BITS = (2, 3, 4, 5, 6, 7, 8)
SMALL = dict(n_budgets=2, uniform_bits=(8, 4), n_random=1)


@pytest.fixture(scope="module")
def small(digits_small_sweep):
    return digits_small_sweep  # digits on 256/64/128 samples and its 2-8-bit sweep (conftest)


def _run(small, store, **config):
    task, model, sens = small
    cfg = SearchConfig(**{"target": "fpga-dataflow", "latency_runs": 0, **SMALL, **config})
    return search(task, model, sens, cfg, progress=False, store=store)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    skip = {"computed", "from_store"}
    assert {k: v for k, v in a.attrs.items() if k not in skip} == {k: v for k, v in b.attrs.items() if k not in skip}


def test_second_search_is_a_lookup(small, tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    first = _run(small, store, target="cpu-int8-ort", latency_runs=3)  # latency of the front points is stored too
    n = first["bits"].nunique()
    assert first.attrs["computed"] == n and first.attrs["from_store"] == 0 and n >= 3
    assert first["latency_ms"].notna().any()
    again = _run(small, ResultStore(tmp_path / "results.sqlite"), target="cpu-int8-ort", latency_runs=3)
    assert again.attrs["computed"] == 0 and again.attrs["from_store"] == n
    _same(first, again)
    # without a store everything is measured again, to the same numbers (latency, a clock, left out)
    none = _run(small, False, target="cpu-int8-ort")
    assert none.attrs["computed"] == n and none.attrs["from_store"] == 0
    pd.testing.assert_frame_equal(first.drop(columns="latency_ms"), none.drop(columns="latency_ms"), check_exact=True)


def test_act_bits_and_weights_change_the_key(small, tmp_path):
    task, model, sens = small
    store = ResultStore(tmp_path / "results.sqlite")
    first = _run(small, store)
    n = first["bits"].nunique()
    six = _run(small, store, act_bits=6)
    assert six.attrs["computed"] == six["bits"].nunique() and six.attrs["from_store"] == 0
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3  # one weight moved: a different model
    moved = search(task, other, sens, SearchConfig(target="fpga-dataflow", latency_runs=0, **SMALL), progress=False, store=store)
    assert moved.attrs["computed"] == moved["bits"].nunique() and moved.attrs["from_store"] == 0
    # the PTQ configuration is part of the key too; the target profile (only which bits may be chosen) is not
    calib = _run(small, store, ptq={"calib_samples": 16})
    assert calib.attrs["from_store"] == 0
    cpu = _run(small, store, target="cpu-int8-ort", budget_kind="bops")  # fpga-dataflow's kind: the same candidates
    assert cpu.attrs["computed"] == 0 and cpu.attrs["from_store"] == cpu["bits"].nunique() == n


def test_corrupt_entry_is_computed_again(small, tmp_path):
    path = tmp_path / "results.sqlite"
    first = _run(small, ResultStore(path))
    with sqlite3.connect(path) as db:  # one row damaged on disk, another stored without its number
        keys = [k for (k,) in db.execute("SELECT case_key FROM rows WHERE kind = 'search_metric' ORDER BY seq")]
        db.execute("UPDATE rows SET payload = 'not json{' WHERE case_key = ?", (keys[0],))
        db.execute("UPDATE rows SET payload = '{\"measured_metric\": \"high\"}' WHERE case_key = ?", (keys[1],))
    with pytest.warns(RuntimeWarning, match="moved to the store's set_aside table and is computed again") as caught:
        again = _run(small, ResultStore(path))
    assert sum("set_aside" in str(w.message) for w in caught) == 2
    assert again.attrs["computed"] == 2 and again.attrs["from_store"] == first["bits"].nunique() - 2
    _same(first, again)


def test_a_store_opened_in_one_thread_serves_others(tmp_path):
    """Widgets sweep in a background thread on the store the notebook opened."""
    import threading

    store = ResultStore(tmp_path / "store.sqlite")
    errors = []

    def write(i):
        try:
            for k in range(20):
                store.put("s", "test", f"{i}-{k}", {"i": i, "k": k})
            store.rows("s")
        except Exception as exc:  # an SQLite object used in another thread would fail here
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and store.count("s") == 80
    assert sorted(r["k"] for r in store.rows("s").values() if r["i"] == 2) == list(range(20))



def _cycles(task, model, assignment, target, act_bits):
    """A caller's measure_costs (module level, so it pickles): the target's cycles, from the bits alone."""
    return {"cycles": float(sum(b * b for b in assignment.values()) * 1000 + act_bits)}


class _Unpicklable:
    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, task, model, assignment, target, act_bits):
        return _cycles(task, model, assignment, target, act_bits)


def _hand_table(task, model):
    """A per-layer table of cycles at 4 and 8 weight bits (what a target would measure)."""
    from workbench.core.cost import layer_costs
    from workbench.search.cost_tables import TargetCostTable

    costs = layer_costs(model, task.example_input())
    rows = [{"layer": name, "weight_bits": b, "cycles": float(c.macs * b)} for name, c in costs.items() for b in (4, 8)]
    return TargetCostTable(task.name, "hand-npu", 8, (4, 8), ("cycles",), pd.DataFrame(rows), {"cycles": 100.0})


def test_process_executor_gives_the_same_rows_and_resumes(small, tmp_path):
    """Candidates measured in two worker processes: the rows of the in-process search, each
    configuration once; what a stopped search stored is read, not measured again."""
    path = tmp_path / "results.sqlite"
    local = _run(small, ResultStore(path))
    n = local["bits"].nunique()
    assert local.attrs["computed"] == n and len(local) > n  # some configurations proposed twice, measured once
    assert local.attrs["executor"] == "local"
    # a search stopped part-way: the store holds the metric of some configurations only
    done = list(dict.fromkeys(local["bits"]))[: n // 2]
    with sqlite3.connect(path) as db:
        db.execute(f"DELETE FROM rows WHERE kind = 'search_metric' AND case_key NOT IN ({','.join('?' * len(done))})", done)
    task, model, sens = small
    cfg = SearchConfig(target="fpga-dataflow", latency_runs=0, **SMALL)
    pooled = search(task, model, sens, cfg, progress=False, store=ResultStore(path), executor="process:2")
    assert pooled.attrs["executor"] == "process:2"
    assert pooled.attrs["computed"] == n - len(done) and pooled.attrs["from_store"] == len(done)
    pd.testing.assert_frame_equal(pooled, local, check_exact=True)
    # every configuration is now stored: the same search on the pool measures nothing
    again = search(task, model, sens, cfg, progress=False, store=ResultStore(path), executor="process:2")
    assert again.attrs["computed"] == 0 and again.attrs["from_store"] == n
    pd.testing.assert_frame_equal(again, local, check_exact=True)


def test_process_executor_measures_on_the_target_with_the_callers_function(small):
    """With a cost table, the caller's measure_costs runs in the workers, to the same rows; one
    that does not pickle is a one-line ExecutorError before any work."""
    from workbench.infra.executors import ExecutorError

    task, model, sens = small
    table = _hand_table(task, model)
    cfg = SearchConfig(target="fpga-dataflow", latency_runs=0, **SMALL)
    with pytest.raises(ExecutorError, match=r"measure_costs .* cannot be sent to executor process:2 .*expected a picklable") as caught:
        search(task, model, sens, cfg, cost_table=table, measure_costs=_Unpicklable(), progress=False, store=False, executor="process:2")
    assert "\n" not in str(caught.value)
    local = search(task, model, sens, cfg, cost_table=table, measure_costs=_Unpicklable(), progress=False, store=False)  # here it runs
    pooled = search(task, model, sens, cfg, cost_table=table, measure_costs=_cycles, progress=False, store=False, executor="process:2")
    assert local["cycles"].tolist() == [_cycles(task, model, json.loads(b), "hand-npu", 8)["cycles"] for b in local["bits"]]
    assert pooled.attrs["computed"] == local.attrs["computed"] == local["bits"].nunique()
    pd.testing.assert_frame_equal(pooled, local, check_exact=True)


def test_stored_latency_belongs_to_the_machine_that_measured_it(small, tmp_path, monkeypatch):
    import workbench.export.verify

    store = ResultStore(tmp_path / "results.sqlite")
    first = _run(small, store, target="cpu-int8-ort", latency_runs=3)
    n_latency = int(first["latency_ms"].notna().sum())
    assert n_latency >= 1
    again = _run(small, ResultStore(tmp_path / "results.sqlite"), target="cpu-int8-ort", latency_runs=3)
    assert again.attrs["computed"] == 0  # same machine: latency read back too
    pd.testing.assert_series_equal(again["latency_ms"], first["latency_ms"], check_exact=True)
    # the same store on a host with another CPU: metrics are still read back, latency is measured again
    monkeypatch.setattr(workbench.export.verify, "host_cpu", lambda cpuinfo=None: "Another CPU 9000")
    other = _run(small, ResultStore(tmp_path / "results.sqlite"), target="cpu-int8-ort", latency_runs=3)
    fresh = other["latency_ms"].notna()
    assert other.attrs["computed"] == other.loc[fresh, "bits"].nunique() >= 1  # only the latencies are measured again
    pd.testing.assert_series_equal(other["measured_metric"], first["measured_metric"], check_exact=True)
    assert fresh.sum() == n_latency and other.loc[fresh, "latency_ms"].tolist() != first.loc[fresh, "latency_ms"].tolist()
