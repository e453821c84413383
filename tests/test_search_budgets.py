"""Search in the target's own units: several hard budgets at once (cost table or formula), every
candidate measured on the target, an accuracy target (max_drop), the front recomputed per axis,
and bad input as one-line SpecErrors before any work."""

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench.core.cost import cost_table, layer_costs, totals
from workbench.search.cost_tables import TargetCostTable
from workbench.runs.report import pareto_traces
from workbench.search.accuracy_target import search_accuracy_target
from workbench.search.config import SearchConfig
from workbench.search.front import best_within, front_on
from workbench.search.precision import search
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

BITS = (2, 4, 8)
FAST = dict(n_budgets=2, n_random=1, latency_runs=0, uniform_bits=(8, 4, 2), budget_kind="weight_kib")  # every width offered


def one_line(exc) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


@pytest.fixture(scope="module")
def sens(digits):
    task, model = digits
    return sensitivity(task, model, SensitivityConfig(weight_bits=BITS), store=False, progress=False)


@pytest.fixture(scope="module")
def cpu248(tmp_path_factory):
    """cpu-int8-ort's profile at the swept widths 2, 4 and 8 only."""
    path = tmp_path_factory.mktemp("targets") / "cpu248.yaml"
    path.write_text("name: cpu248\nweight_bits: [2, 4, 8]\nact_bits: [8]\ncost: weight_kib\nbudgets: {weight_kib: null}\n")
    return str(path)


def hand_table(task, model, target="hand-npu") -> TargetCostTable:
    """A per-layer table as a target would measure it: latency grows with MACs and weight bits,
    cycles shrink with bits (narrow weights are unpacked in software), a per-layer weight buffer
    in RAM (a maximum over layers) grows with bits; each kind has an overhead."""
    costs = layer_costs(model, task.example_input())
    rows = [{"layer": name, "weight_bits": b, "latency_ms": c.macs * (0.5 + b / 16) * 1e-5, "cycles": c.macs * (12 - b) / 4.0,
             "ram_kib": c.weights * b / 8 / 1024} for name, c in costs.items() for b in BITS]
    return TargetCostTable(task.name, target, 8, BITS, ("latency_ms", "cycles", "ram_kib"), pd.DataFrame(rows),
                           {"latency_ms": 0.05, "cycles": 1000.0, "ram_kib": 0.5})


class Target:
    """A stand-in for the target's own measurement: the table's estimate, 4% slower where a layer
    runs at 8 bits (what a per-layer table does not see); counts its calls."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, task, model, assignment, target, act_bits):
        assert target == self.table.target and act_bits == 8
        self.calls.append(json.dumps(assignment, sort_keys=True))
        slow = 1.04 if 8 in assignment.values() else 1.0
        return {k: self.table.estimate(assignment, k) * (slow if k == "latency_ms" else 1.0) for k in self.table.kinds}


def ram_of(table, bits: dict) -> float:
    return max(float(table.table[(table.table.layer == k) & (table.table.weight_bits == b)]["ram_kib"].iloc[0]) for k, b in bits.items()) + 0.5


def test_several_budgets_at_once_from_a_cost_table_and_the_formula(digits, sens):
    task, model = digits
    table = hand_table(task, model)
    costs = layer_costs(model, task.example_input())
    w = {b: totals(cost_table(costs, {n: b for n in costs}, 8)) for b in BITS}
    lat = {b: table.estimate({n: b for n in costs}, "latency_ms") for b in BITS}
    budgets = {"weight_kib": (w[4]["weight_kib"] + w[8]["weight_kib"]) / 2, "bops": (w[2]["bops"] + w[8]["bops"]) / 2,
               "latency_ms": lat[4] * 1.01, "ram_kib": ram_of(table, {n: 4 for n in costs}) + 1e-6}
    measured = Target(table)
    df = search(task, model, sens, SearchConfig(**FAST), budgets=budgets, cost_table=table, measure_costs=measured, progress=False)
    assert df.attrs["budgets"] == budgets and df.attrs["cost_target"] == "hand-npu"
    assert {"latency_ms", "latency_ms_estimate", "cycles", "cycles_estimate", "within_budgets", "over_budgets"} <= set(df.columns)
    assert sorted(set(measured.calls)) == sorted(measured.calls) == sorted(set(df["bits"]))  # every candidate measured once, on the target
    for _, r in df.iterrows():  # what the program holds: the formula kinds, the table's estimates, no (layer, bits) over the RAM cap
        assert r["weight_kib"] <= budgets["weight_kib"] + 1e-9 and r["bops"] <= budgets["bops"] + 1e-9
        assert r["latency_ms_estimate"] <= budgets["latency_ms"] * (1 + 1e-9)
        assert ram_of(table, json.loads(r["bits"])) <= budgets["ram_kib"]
        # the columns hold the target's measured numbers; a point over a budget measured is flagged, kept, off the front
        assert r["latency_ms"] == pytest.approx(measured(task, model, json.loads(r["bits"]), "hand-npu", 8)["latency_ms"])
        assert r["within_budgets"] == (r["latency_ms"] <= budgets["latency_ms"] * (1 + 1e-12))
    flagged = df[~df["within_budgets"]]  # within the table's estimate, over the budget as measured (a layer at 8 bits: 4% slower)
    assert len(flagged) and (flagged["over_budgets"] == "latency_ms").all() and not flagged["on_front"].any()
    assert df["on_front"].any()
    assert {"ilp", "greedy", "uniform-4", "uniform-2"} <= set(df["kind"]) and "uniform-8" not in set(df["kind"])
    held = set(",".join(df["bound_by"]).split(",")) - {""}
    assert held and held <= {"budget", "weight_kib", "bops", "latency_ms", "ram_kib"}


def test_a_measured_kind_is_a_budget_kind_with_a_table_and_best_within_skips_flagged_points(digits, sens):
    task, model = digits
    table = hand_table(task, model)
    costs = layer_costs(model, task.example_input())
    lat8 = table.estimate({n: 8 for n in costs}, "latency_ms")
    measured = Target(table)
    df = search(task, model, sens, SearchConfig(**{**FAST, "budget_kind": "latency_ms"}), cost_table=table, measure_costs=measured,
                extra_budgets=(lat8,), progress=False)
    solved = df[df["kind"].isin(["ilp", "greedy"])]
    assert (solved["latency_ms_estimate"] <= solved["budget"] * (1 + 1e-9)).all()
    assert len(df[df["kind"] == "uniform-8"]) == 1 and df.loc[df["kind"] == "uniform-8", "latency_ms"].iloc[0] > lat8  # measured 4% over
    best = best_within(df, lat8, "latency_ms")
    assert best["latency_ms"] <= lat8 and bool(best["within_budgets"])


def test_a_profile_limit_holds_on_the_targets_own_number(digits, sens, tmp_path):
    """A profile's RAM limit the formula meets (peak activations) but the target's measured RAM
    breaks (the hand table keeps each layer's weights in RAM): the point is flagged, never chosen."""
    task, model = digits
    table = hand_table(task, model)
    costs = layer_costs(model, task.example_input())
    formula_ram = totals(cost_table(costs, {}, 8))["ram_kib"]
    limit = max(formula_ram, ram_of(table, {n: 4 for n in costs})) * 1.001  # 4-bit everywhere fits, 8-bit somewhere does not
    assert ram_of(table, {n: 8 for n in costs}) > limit
    profile = tmp_path / "ram.yaml"
    profile.write_text(f"name: ram\nweight_bits: [2, 4, 8]\nact_bits: [8]\ncost: weight_kib\nbudgets: {{ram_kib: {limit}}}\n")
    df = search(task, model, sens, SearchConfig(target=str(profile), **FAST), cost_table=table, measure_costs=Target(table), progress=False)
    over = df["ram_kib"] > limit
    assert over.any() and (~df.loc[over, "within_budgets"]).all() and (df.loc[over, "over_budgets"] == "ram_kib").all()
    assert not df.loc[over, "on_front"].any() and (df.loc[~over, "within_budgets"]).all()
    assert best_within(df, math.inf, "weight_kib")["ram_kib"] <= limit


def test_what_the_target_cannot_run_is_never_picked_nor_counted_as_reachable(digits, sens):
    """A NaN in the cost table (the target has no kernel for that layer at those bits): the search
    never proposes it, and a budget only it would meet is out of reach, said so in one line."""
    task, model = digits
    table = hand_table(task, model)
    costs = layer_costs(model, task.example_input())
    big = max(costs, key=lambda n: costs[n].weights)  # the layer whose 2-bit RAM sets the cheapest maximum
    rows = table.table.copy()
    rows.loc[(rows["layer"] == big) & (rows["weight_bits"] == 2), ["latency_ms", "ram_kib"]] = math.nan
    table = TargetCostTable(table.task, table.target, 8, BITS, table.kinds, rows, table.overhead)
    df = search(task, model, sens, SearchConfig(**FAST), cost_table=table, measure_costs=Target(table), progress=False)
    assert "uniform-2" not in set(df["kind"]) and all(json.loads(b)[big] != 2 for b in df["bits"])
    cheapest = ram_of(table, {n: (4 if n == big else 2) for n in costs})
    with pytest.raises(wb.infra.SpecError) as err:
        search(task, model, sens, SearchConfig(**FAST), budgets={"ram_kib": cheapest * 0.999}, cost_table=table, measure_costs=Target(table),
               progress=False)
    assert one_line(err.value).startswith(f"no configuration meets the budget ram_kib <= {cheapest * 0.999:g} KiB")
    assert f"the cheapest reachable is {cheapest:.6g} KiB" in str(err.value)


def test_accuracy_target_generous_drop_returns_a_cheap_point_within_it(digits, sens, cpu248):
    task, model = digits
    fp = sens.attrs["fp_metric"]
    df = search(task, model, sens, SearchConfig(target=cpu248, **FAST), max_drop=0.05, progress=False)
    assert df.attrs["reached"] and df["kind"].str.fullmatch(r"target-\d+").all()
    chosen = df.loc[df.attrs["chosen"]]
    assert bool(chosen["chosen"]) and df["chosen"].sum() == 1 and bool(chosen["met_drop"])
    assert chosen["measured_metric"] >= fp - 0.05 and chosen["drop"] == pytest.approx(fp - chosen["measured_metric"])
    costs = layer_costs(model, task.example_input())
    assert chosen["weight_kib"] < totals(cost_table(costs, {n: 8 for n in costs}, 8))["weight_kib"]  # cheaper than int8 everywhere
    assert "drop" in df.attrs["message"] and one_line(df.attrs["message"])


def test_accuracy_target_zero_drop_returns_the_wider_point_or_says_unreachable(digits, sens, cpu248):
    task, model = digits
    fp = sens.attrs["fp_metric"]
    df = search_accuracy_target(task, model, sens, 0.0, SearchConfig(target=cpu248, **FAST), max_iterations=3, progress=False)
    assert 1 <= len(df) <= 4  # three iterations, then the widest configuration where none held
    if df.attrs["reached"]:
        chosen = df.loc[df.attrs["chosen"]]
        assert chosen["measured_metric"] >= fp and 2 not in json.loads(chosen["bits"]).values()
    else:
        assert df.attrs["chosen"] is None and not df["chosen"].any() and not df["met_drop"].any()
        message = one_line(df.attrs["message"])
        assert message.startswith("accuracy target unreachable: the widest configuration (every layer at 8 bits) measured ")
        best = df.loc[df["measured_metric"].idxmax()]
        assert f"closest: {best['kind']} measured {best['measured_metric']:.4f}" in message
    for i, (_, r) in enumerate(df.iterrows()):  # every failed iteration's point is cut, so each is new
        assert r["kind"] == f"target-{i}"
    assert df["bits"].is_unique


def test_an_optimistic_estimate_is_cut_and_the_margin_raised_until_the_drop_holds(digits, sens, cpu248):
    task, model = digits
    optimistic = sens.assign(metric_delta=sens["metric_delta"] * 0.2)  # the estimate sees a fifth of each layer's loss
    optimistic.attrs = dict(sens.attrs)
    fp = sens.attrs["fp_metric"]
    df = search_accuracy_target(task, model, optimistic, 0.01, SearchConfig(target=cpu248, **FAST), progress=False)
    assert df.attrs["reached"] and len(df) >= 2 and df["bits"].is_unique
    chosen = df.attrs["chosen"]
    assert chosen == df.index[-1] and df.loc[chosen, "measured_metric"] >= fp - 0.01
    before = df.loc[: chosen - 1]
    assert not before["met_drop"].any() and (before["drop"] > 0.01).all()
    # the required estimate rose by the optimism seen (estimate - measured)
    # (or, where that is above every estimate left, the best estimate left, which the next point has:
    # which of the two happens depends on the baseline, i.e. on the CPU that trained it)
    raised, need = fp - 0.01 + before.loc[0, "estimated_metric"] - before.loc[0, "measured_metric"], df.loc[1, "required_estimate"]
    assert need == pytest.approx(raised) or (fp - 0.01 < need < raised and df.loc[1, "estimated_metric"] == pytest.approx(need)), (need, raised)
    # an estimate that sees no loss at all: every point the loop measures is far off; before it gives up
    # the widest configuration (every layer at 8 bits) is measured, and it holds the drop
    # (tests/test_accuracy_target_widest.py has the unreachable case)
    blind = sens.assign(metric_delta=0.0)
    blind.attrs = dict(sens.attrs)
    df = search_accuracy_target(task, model, blind, 0.01, SearchConfig(target=cpu248, **FAST), max_iterations=2, progress=False)
    assert df.attrs["reached"] and len(df) == 3 and df.attrs["chosen"] == df.attrs["widest"] == df.index[2]
    assert not df.loc[:1, "met_drop"].any() and set(json.loads(df.loc[2, "bits"]).values()) == {8}
    assert "no cheaper configuration measured reached it (2 iterations measured)" in one_line(df.attrs["message"])


def test_accuracy_target_in_the_target_units_under_budgets(digits, sens):
    task, model = digits
    table = hand_table(task, model)
    measured = Target(table)
    costs = layer_costs(model, task.example_input())
    budget = {"ram_kib": ram_of(table, {n: 4 for n in costs}) + 1e-6}
    df = search(task, model, sens, SearchConfig(**{**FAST, "budget_kind": "latency_ms"}), budgets=budget, cost_table=table,
                measure_costs=measured, max_drop=0.05, progress=False)
    assert df.attrs["reached"], df.attrs["message"]
    chosen = df.loc[df.attrs["chosen"]]
    assert chosen["measured_metric"] >= df.attrs["fp_metric"] - 0.05 and ram_of(table, json.loads(chosen["bits"])) <= budget["ram_kib"]
    assert "latency_ms" in df.attrs["message"] and len(measured.calls) == len(df)


def test_front_is_recomputed_per_axis_and_points_without_a_value_are_shown():
    points = pd.DataFrame({
        "kind": ["ilp", "ilp", "uniform-8", "uniform-4", "random", "ilp"],
        "weight_kib": [1.0, 2.0, 4.0, 1.5, 0.5, 3.0],
        "bops": [4.0, 1.0, 3.0, 2.0, 0.1, 5.0],
        "latency_ms": [1.0, np.nan, 2.0, 0.5, 0.1, np.nan],
        "measured_metric": [0.5, 0.8, 0.9, 0.6, 0.99, 0.7],
        "estimated_metric": [0.5, 0.8, 0.9, 0.6, 0.99, 0.7],
        "bits": ["{}"] * 6, "within_budgets": [True, True, True, True, True, True]})
    assert list(front_on(points, "weight_kib")) == [True, True, True, True, False, False]
    assert list(front_on(points, "bops")) == [False, True, True, False, False, False]  # another axis, another front
    assert list(front_on(points, "latency_ms")) == [False, False, True, True, False, False]  # NaN: never on it
    flagged = points.assign(within_budgets=[True, True, False, True, True, True])
    assert not front_on(flagged, "weight_kib").iloc[2]
    traces = {t.name: t for t in pareto_traces(points, "latency_ms")}
    assert list(traces["measured front"].x) == [0.5, 2.0]
    missing = traces["no latency_ms value (2)"]
    assert list(missing.customdata) == [1, 5] and set(missing.x) == {0.1} and all("no latency p50 (ms) value" in t for t in missing.text)
    assert sum(len(t.x) for t in traces.values() if t.mode == "markers") == len(points)
    assert list(pareto_traces(points, "bops")[-1].x) == [1.0, 3.0]


def test_bad_budgets_and_max_drop_are_one_line_errors_before_any_work(digits, sens, monkeypatch):
    search_module = sys.modules["workbench.search.measuring"]
    task, model = digits
    monkeypatch.setattr(search_module, "measure", lambda *a, **k: pytest.fail("nothing may be measured"))
    table = hand_table(task, model)
    never = lambda *a, **k: pytest.fail("nothing may be measured on the target")  # noqa: E731
    cfg = SearchConfig(**FAST)
    with pytest.raises(wb.infra.SpecError, match=r"^unknown cost kind 'latency_msec' \(did you mean 'latency_ms'\?\); expected one of weight_kib") as info:
        search(task, model, sens, cfg, budgets={"latency_msec": 5}, cost_table=table, measure_costs=never, progress=False)
    one_line(info.value)
    with pytest.raises(wb.infra.SpecError, match=r"^budget latency_ms: latency_ms is measured, not computed, so only a per-target cost table prices it \(no cost table was given\)"):
        search(task, model, sens, cfg, budgets={"latency_ms": 5}, progress=False)
    with pytest.raises(wb.infra.SpecError, match=r"^budget kind latency_ms: latency_ms is measured"):
        search(task, model, sens, SearchConfig(**{**FAST, "budget_kind": "latency_ms"}), progress=False)
    with pytest.raises(wb.infra.SpecError, match=r"^budget weight_kib=-1; expected a positive number in KiB"):
        search(task, model, sens, cfg, budgets={"weight_kib": -1}, progress=False)
    costs = layer_costs(model, task.example_input())
    lat2 = table.estimate({n: 2 for n in costs}, "latency_ms")
    with pytest.raises(wb.infra.SpecError, match=r"^no configuration meets the budget latency_ms <= 0\.001 ms \(hand-npu cost table\); the cheapest "
                                           rf"reachable is {lat2:.6g} ms \(cheapest reachable per budget: weight_kib [\d.]+ KiB, latency_ms {lat2:.6g} ms\)$"):
        search(task, model, sens, cfg, budgets={"weight_kib": 100, "latency_ms": 0.001}, cost_table=table, measure_costs=never, progress=False)
    # fewer cycles needs wider weights, fewer KiB narrower ones: each reachable alone, not together
    w = {b: totals(cost_table(costs, {n: b for n in costs}, 8))["weight_kib"] for b in BITS}
    cyc8 = table.estimate({n: 8 for n in costs}, "cycles")
    with pytest.raises(wb.infra.SpecError, match=r"^the budgets weight_kib <= [\d.]+ KiB, cycles <= [\d.e+]+ cycles contradict each other: each is reachable "
                                           r"alone, not all together; the cheapest reachable of each with the others held: weight_kib [\d.e+]+ KiB, cycles [\d.e+]+ cycles$") as info:
        search(task, model, sens, cfg, budgets={"weight_kib": w[2] + 0.01, "cycles": cyc8 * 1.001}, cost_table=table, measure_costs=never, progress=False)
    one_line(info.value)
    for bad in (-0.1, 1.5, "0.01", True, math.nan):
        with pytest.raises(wb.infra.SpecError, match=r"^max_drop .*; expected a number in \[0, 1\]: the largest allowed drop"):
            search(task, model, sens, cfg, max_drop=bad, progress=False)


def test_a_real_onnxruntime_cost_table(digits, sens):
    cost_tables = pytest.importorskip("workbench.search.cost_tables")
    if not hasattr(cost_tables, "build_cost_table") or "onnxruntime" not in getattr(cost_tables, "COST_SOURCES", {}):
        pytest.skip("workbench.search.cost_tables.build_cost_table and the onnxruntime cost source are not on this branch yet")
    task, model = digits
    table = cost_tables.build_cost_table(task, model, "onnxruntime", bits=BITS, act_bits=8)
    kind = "latency_ms" if "latency_ms" in table.kinds else table.kinds[0]
    df = search(task, model, sens, SearchConfig(budget_kind="weight_kib", n_budgets=1, n_random=0, latency_runs=0, uniform_bits=(8, 2)),
                cost_table=table, progress=False)
    assert df[kind].notna().all() and f"{kind}_estimate" in df


def test_cli_max_drop_on_a_profile_and_bad_budgets(digits, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from workbench.cli import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["search", "digits-cnn", "--target", "mcu", "--max-drop", "0.05", "--out", "found"])
    assert res.exit_code == 0, (res.output, res.stderr)
    points = pd.read_csv(tmp_path / "found" / "pareto.csv")
    assert points["kind"].str.startswith("target-").all() and points["chosen"].sum() == 1
    chosen = points[points["chosen"]].iloc[0]
    assert chosen["drop"] <= 0.05 and chosen["flash_kib"] <= 256 and "cost minimised: tflite_kib" in res.stdout  # mcu budgets its realised TFLite file
    assert (tmp_path / "found" / "recipe.yaml").exists()
    for args, message in [
        (["--budget", "latency_ms=5"], "error: --budget 'latency_ms=5': latency_ms is measured, not computed, so only a target's cost table "
                                       "prices it (target cpu-int8-ort is a profile with no cost table); give --target one of"),
        (["--budget", "weight_kib=8", "--max-drop", "2"], "error: max_drop 2.0; expected a number in [0, 1]"),
        (["--budget", "weight_kib=8", "--max-drop", "-0.1"], "error: max_drop -0.1; expected a number in [0, 1]"),
        (["--budget", "weight_kib=8", "--target", "npu9"], "error: unknown target 'npu9'; expected a profile (cpu-int8-ort, fpga-dataflow, mcu)"),
        (["--budget", "weight_kib=8", "--profile", "mcu"], "error: --profile 'mcu': only with a deployment --target"),
        (["--budget", "weight_kib=8", "--budget", "cycle=3"], "error: --budget 'cycle=3': unknown cost kind 'cycle' (did you mean 'cycles'?)"),
    ]:
        bad = CliRunner().invoke(app, ["search", "digits-cnn", *args, "--out", str(tmp_path / "bad")])
        assert bad.exit_code == 2 and bad.stderr.startswith(message) and bad.stderr.count("\n") == 1, bad.stderr[-2000:]
        assert not (tmp_path / "bad").exists()
    helptext = CliRunner().invoke(app, ["search", "--help"]).output
    assert "--max-drop" in helptext and "--profile" in helptext and "latency_ms" in helptext


def test_cli_widths_joins_width_trials_promotes_a_pruned_point_and_resumes(digits, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.runs.recipe import load_recipe

    monkeypatch.chdir(tmp_path)
    args = ["search", "digits-cnn", "--target", "mcu", "--budget", "macs=300000", "--widths", "--finetune-epochs", "0", "--out", "w"]
    res = CliRunner().invoke(app, [*args, "--trials", "4"])
    assert res.exit_code == 0, (res.output, res.stderr)
    points = pd.read_csv(tmp_path / "w" / "pareto.csv")
    width = points[points["kind"] == "width"]
    assert len(width) >= 1 and (width["macs"] <= 300000).all() and width["pruning"].str.contains("layer_sparsity").all()
    line = next(x for x in res.stdout.splitlines() if x.startswith("bits-only:"))
    assert "bits-only: none within the budgets; width+bits: " in line and "chosen: width+bits" in line and "0 resumed" in line
    recipe, _ = load_recipe(tmp_path / "w" / "recipe.yaml")  # MACs below the unpruned model's: only a pruned point fits
    assert recipe.pruning is not None and recipe.pruning.layer_sparsity
    again = CliRunner().invoke(app, [*args, "--trials", "5"])  # the same folder continues the study
    assert again.exit_code == 0, (again.output, again.stderr)
    assert "4 resumed" in again.stdout and len(pd.read_csv(tmp_path / "w" / "widths" / "trials.csv")) == 5


def test_cli_widths_bad_options_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    for args, message in [(["--trials", "0"], "error: --trials 0: expected a whole number of width-search trials >= 1"),
                          (["--width-choices", "1.0,1.5"], "error: --width-choices '1.0,1.5': expected distinct comma-separated shares"),
                          (["--finetune-epochs", "-1"], "error: --finetune-epochs -1: expected a whole number of epochs >= 0")]:
        bad = CliRunner().invoke(app, ["search", "digits-cnn", "--budget", "weight_kib=8", "--widths", *args, "--out", str(tmp_path / "bad")])
        assert bad.exit_code == 2 and bad.stderr.startswith(message) and bad.stderr.count("\n") == 1, bad.stderr[-2000:]
        assert not (tmp_path / "bad").exists()
