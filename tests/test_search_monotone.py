"""Monotone, honest selection (issue 30, item 2): the chosen point is the best measured point
within the budget among everything the store holds for the task's key, and a missed prediction
corrects the estimate and measures the re-solved point."""

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.sensitivity import SensitivityConfig, sensitivity
from workbench.infra.store import ResultStore
from workbench.search.config import SearchConfig
from workbench.search.front import best_within
from workbench.search.precision import search

BITS = (2, 3, 4, 5, 6, 7, 8)
# explicit budgets in weight KiB: the default budget kind may become a realised one
FAST = dict(budget_kind="weight_kib", uniform_bits=(8, 4), n_random=1, latency_runs=0)


@pytest.fixture(scope="module")
def small(digits_small_sweep):
    return digits_small_sweep  # digits on 256/64/128 samples and its 2-8-bit sweep (conftest)


def _widths(sens, task, model):
    """The digits-cnn layers' weight KiB at 2 and 8 bits (the cheapest and dearest assignment)."""
    from workbench.core.cost import cost_table, layer_costs, totals

    costs = layer_costs(model, task.example_input())
    layers = set(sens["layer"])
    sub = {k: v for k, v in costs.items() if k in layers}
    return [totals(cost_table(sub, {k: b for k in sub}, 8))["weight_kib"] for b in (2, 8)]


def test_rising_budgets_never_lower_the_chosen_metric(small, tmp_path):
    task, model, sens = small
    store = ResultStore(tmp_path / "results.sqlite")
    low, high = _widths(sens, task, model)
    chosen, seen = [], set()
    for budget in np.linspace(low * 1.2, high, 5):
        df = search(task, model, sens, SearchConfig(**FAST), budgets=[float(budget)], progress=False, store=store)
        best = best_within(df, float(budget), "weight_kib")
        assert best["weight_kib"] <= budget * (1 + 1e-9)
        chosen.append(float(best["measured_metric"]))
        # every configuration measured before under this key is in the frame, once, not measured again
        assert seen <= set(df["bits"]) and df.loc[df["kind"] == "stored", "bits"].is_unique
        assert df.attrs["computed"] == len(set(df["bits"]) - seen)
        seen |= set(df["bits"])
    assert chosen == sorted(chosen), chosen
    assert chosen[-1] > chosen[0]  # the sweep spans points that differ


def test_a_larger_budget_chooses_the_stored_point_its_own_candidates_do_not_beat(small, tmp_path):
    """Search 1 at B1 measures a good point; search 2 at B2 > B1 proposes only worse points (an
    estimate that says a sensitive layer loses nothing at 2 bits, no good uniform baseline): its
    frame holds search 1's points as "stored" rows and best_within chooses one of them."""
    task, model, sens = small
    store = ResultStore(tmp_path / "results.sqlite")
    low, high = _widths(sens, task, model)
    b1 = low + 0.45 * (high - low)
    first = search(task, model, sens, SearchConfig(**FAST), budgets=[b1], progress=False, store=store)
    best1 = best_within(first, b1, "weight_kib")
    assert first.attrs["stored"] == 0 and (first["kind"] != "stored").all()

    # a misleading estimate: every layer loses nothing at 2 bits and a lot at 3 to 7; ranked by
    # that estimate the solvers put the layers that do not fit at 8 bits at 2 bits
    misleading = sens.copy()
    misleading.loc[misleading["weight_bits"] < 8, "metric_delta"] = -0.5
    misleading.loc[misleading["weight_bits"] == 2, "metric_delta"] = 0.0
    b2 = b1 * 1.05
    cfg = SearchConfig(**{**FAST, "uniform_bits": (2,), "n_random": 0, "objective": "metric", "refine_rounds": 0})
    second = search(task, model, misleading, cfg, budgets=[b2], progress=False, store=store)
    own = second[(second["kind"] != "stored") & (second["weight_kib"] <= b2)]
    assert len(own) and own["measured_metric"].max() < best1["measured_metric"]  # its own candidates are worse
    stored = second[second["kind"] == "stored"]
    assert set(stored["bits"]) == set(first["bits"]) - set(second.loc[second["kind"] != "stored", "bits"])
    assert second.attrs["stored"] == len(stored) and second.attrs["computed"] == own["bits"].nunique()
    # stored rows: measured before (never again), this search's estimate, never random, on the front where they belong
    by_bits = first.drop_duplicates("bits").set_index("bits")["measured_metric"]
    assert stored["measured_metric"].tolist() == [by_bits[b] for b in stored["bits"]]
    assert stored["budget"].tolist() == stored["weight_kib"].tolist() == sorted(stored["weight_kib"])
    best2 = best_within(second, b2, "weight_kib")
    assert best2["kind"] == "stored" and best2["measured_metric"] >= best1["measured_metric"]
    assert stored["estimated_metric"].tolist() == pytest.approx([_estimate(misleading, b) for b in stored["bits"]])  # this search's estimate
    assert second.loc[second["on_front"]].sort_values("measured_metric")["kind"].iloc[-1] == "stored"  # the front counts them


def _estimate(sens, bits: str) -> float:
    """The search's additive estimate of a configuration, by hand: the float metric plus each
    layer's quantise-one change at its bits (a gain counts as none)."""
    one = sens[sens["mode"] == "quantise-one"]
    total = sens.attrs["fp_metric"]
    for layer, b in json.loads(bits).items():
        total += min(0.0, float(one[(one["layer"] == layer) & (one["weight_bits"] == b)]["metric_delta"].iloc[0]))
    return total


def test_stored_rows_keep_to_the_search_space(small, tmp_path):
    """Configurations of another activation bit-width, or at widths this search does not allow,
    or over its limits, are not this search's rows."""
    task, model, sens = small
    store = ResultStore(tmp_path / "results.sqlite")
    low, high = _widths(sens, task, model)
    mid = (low + high) / 2
    search(task, model, sens, SearchConfig(**FAST), budgets=[low * 1.1, mid], progress=False, store=store)
    six = search(task, model, sens, SearchConfig(**{**FAST, "act_bits": 6, "target": "fpga-dataflow"}), budgets=[mid], progress=False, store=store)
    assert six.attrs["stored"] == 0  # another key
    # a search allowed 4 and 8 bits only sees the stored points at those widths
    sens48 = sensitivity(task, model, SensitivityConfig(weight_bits=(4, 8)), store=False, progress=False)
    mcu = search(task, model, sens48, SearchConfig(**{**FAST, "target": "mcu"}), budgets=[high], progress=False, store=store)
    for bits in mcu.loc[mcu["kind"] == "stored", "bits"]:
        assert set(json.loads(bits).values()) <= {4, 8}
    # a limit: no stored row over it
    limited = search(task, model, sens, SearchConfig(**FAST), budgets=[mid], limits={"weight_kib": mid}, progress=False, store=store)
    assert limited.attrs["stored"] >= 1 and (limited.loc[limited["kind"] == "stored", "weight_kib"] <= mid * (1 + 1e-9)).all()


def _optimistic(sens):
    """The sensitivity table a user edited: 2 and 3 bits cost nothing (an optimistic estimate)."""
    opt = sens.copy()
    opt.loc[opt["weight_bits"] <= 3, "metric_delta"] = 0.0
    return opt


def test_a_missed_prediction_is_refined_and_the_next_point_measured(small, tmp_path, caplog):
    task, model, sens = small
    low, high = _widths(sens, task, model)
    budget = low + 0.2 * (high - low)  # the optimistic estimate misses here by more than 0.005
    cfg = SearchConfig(**{**FAST, "refine_tolerance": 0.005, "refine_rounds": 2})
    caplog.set_level(logging.INFO, logger="workbench.search")
    df = search(task, model, _optimistic(sens), cfg, budgets=[budget], progress=False, store=ResultStore(tmp_path / "r.sqlite"))
    log = df.attrs["refinements"]
    assert log and log[0]["round"] == 1 and log[0]["budget"] == pytest.approx(budget)
    first = log[0]
    assert first["predicted"] - first["measured"] > 0.005
    ilp = df[df["kind"] == "ilp"].iloc[0]
    assert first["bits"] == ilp["bits"] and first["measured"] == ilp["measured_metric"] and first["predicted"] == ilp["estimated_metric"]
    # the miss is attributed to the layers below their widest bits, all of it
    assert sum(first["correction"].values()) == pytest.approx(first["predicted"] - first["measured"])
    assert set(first["correction"]) == {k for k, b in json.loads(first["bits"]).items() if b < 8}
    # the re-solved point is measured: a row of kind "refined" at the same budget, a configuration no other row has
    refined = df[df["kind"] == "refined"]
    assert first["next"] is not None and first["next"] in set(refined["bits"])
    row = refined[refined["bits"] == first["next"]].iloc[0]
    assert row["budget"] == pytest.approx(budget) and row["weight_kib"] <= budget * (1 + 1e-9)
    assert np.isfinite(row["measured_metric"]) and row["estimated_metric"] == pytest.approx(first["next_predicted"])
    assert first["next_predicted"] < first["predicted"] + 1e-12  # the corrected estimate is less optimistic
    assert first["next"] not in set(df.loc[df["kind"] != "refined", "bits"])
    assert len({e["round"] for e in log}) <= 2 and len(refined) <= 2
    assert df.attrs["computed"] == df["bits"].nunique()
    assert any("estimate corrected, round 1" in r.getMessage() for r in caplog.records)
    # no refinement when the rounds are off, or the tolerance is wide
    for off in ({"refine_rounds": 0}, {"refine_tolerance": 1.0}):
        plain = search(task, model, _optimistic(sens), SearchConfig(**{**FAST, **off}), budgets=[budget], progress=False, store=False)
        assert plain.attrs["refinements"] == [] and (plain["kind"] != "refined").all()
        # the same rows but the refined ones (the front aside: a refined point may push others off it)
        pd.testing.assert_frame_equal(plain.drop(columns="on_front"), df[df["kind"] != "refined"].drop(columns="on_front"), check_exact=True)


def test_same_search_same_rows(small, tmp_path):
    """Deterministic: the same search twice (fresh stores, and again on a store that holds the
    first's points) gives the same rows, refinements and choice."""
    task, model, sens = small
    low, high = _widths(sens, task, model)
    budgets = [low + 0.2 * (high - low), low + 0.3 * (high - low)]
    cfg = SearchConfig(**{**FAST, "refine_tolerance": 0.005})
    opt = _optimistic(sens)
    a = search(task, model, opt, cfg, budgets=budgets, progress=False, store=ResultStore(tmp_path / "a.sqlite"))
    b = search(task, model, opt, cfg, budgets=budgets, progress=False, store=ResultStore(tmp_path / "b.sqlite"))
    again = search(task, model, opt, cfg, budgets=budgets, progress=False, store=ResultStore(tmp_path / "a.sqlite"))
    for other in (b, again):
        pd.testing.assert_frame_equal(a, other, check_exact=True)
        assert other.attrs["refinements"] == a.attrs["refinements"] != [] and other.attrs["stored"] == 0
        assert best_within(other, budgets[-1], "weight_kib").equals(best_within(a, budgets[-1], "weight_kib"))
    assert again.attrs["computed"] == 0 and again.attrs["from_store"] == a["bits"].nunique()


def test_best_within_ties_do_not_depend_on_row_order(small):
    task, model, sens = small
    df = search(task, model, sens, SearchConfig(**FAST), budgets=[_widths(sens, task, model)[1]], progress=False, store=False)
    tied = pd.concat([df, df.assign(kind="stored", budget=df["weight_kib"])], ignore_index=True)
    top = tied["measured_metric"].max()
    picks = {best_within(tied.sample(frac=1, random_state=seed), math.inf, "weight_kib")[["bits", "kind"]].to_json() for seed in range(6)}
    assert len(picks) == 1
    best = best_within(tied, math.inf, "weight_kib")
    assert best["measured_metric"] == top
    # among the equally good, the cheapest
    assert best["weight_kib"] == tied.loc[tied["measured_metric"] == top, "weight_kib"].min()
