"""The accuracy-target loop is complete: before it says "unreachable" it measures the widest
configuration the target offers (every layer at the profile's widest bits, or the widest within
the limits and budgets); that point is the answer where nothing cheaper held, and "unreachable"
says what it measured."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.sensitivity import SensitivityConfig, sensitivity
from workbench.core.cost import cost_table, layer_costs, totals
from workbench.search.accuracy_target import search_accuracy_target, widest_choice
from workbench.search.config import SearchConfig
from workbench.search.constraints import _setup
from workbench.search.measuring import measure

FAST = dict(n_budgets=2, n_random=1, latency_runs=0)


@pytest.fixture(scope="module")
def sens(digits):
    task, model = digits
    return sensitivity(task, model, SensitivityConfig(weight_bits=(2, 3, 4, 8)), store=False, progress=False)


def profile(tmp_path_factory, name: str, bits: list[int]) -> str:
    path = tmp_path_factory.mktemp("targets") / f"{name}.yaml"
    path.write_text(f"name: {name}\nweight_bits: {bits}\nact_bits: [8]\ncost: weight_kib\nbudgets: {{weight_kib: null}}\n")
    return str(path)


@pytest.fixture(scope="module")
def cpu248(tmp_path_factory):
    return profile(tmp_path_factory, "cpu248", [2, 4, 8])


@pytest.fixture(scope="module")
def cpu23(tmp_path_factory):
    """A profile whose widest weights are 3 bits: its widest configuration loses accuracy on digits."""
    return profile(tmp_path_factory, "cpu23", [2, 3])


def uniform_metric(digits, bits: int) -> float:
    task, model = digits
    costs = layer_costs(model, task.example_input())
    return measure(task, model, {name: bits for name in costs}, 8, SearchConfig().ptq)


def with_delta(sens, delta):
    out = sens.assign(metric_delta=delta)
    out.attrs = dict(sens.attrs)
    return out


def test_an_estimate_that_sees_no_loss_misses_the_cheap_points_and_the_widest_is_the_answer(digits, sens, cpu248):
    # the estimate sees no loss at all: the loop measures the cheapest points, which are far off,
    # and gives up after max_iterations; the widest point (every layer at 8 bits) is measured then
    task, model = digits
    fp = sens.attrs["fp_metric"]
    w8 = uniform_metric(digits, 8)
    max_drop = max(fp - w8, 0.0) + 0.005  # W8 holds it
    df = search_accuracy_target(task, model, with_delta(sens, 0.0), max_drop, SearchConfig(target=cpu248, **FAST), max_iterations=2,
                                progress=False, store=False)
    assert df.attrs["reached"] and len(df) == 3, df.attrs["message"]
    cheap, last = df.iloc[:2], df.iloc[2]
    assert not cheap["met_drop"].any() and not cheap["widest"].any() and (cheap["drop"] > max_drop).all()
    assert df.attrs["chosen"] == df.index[2] == df.attrs["widest"] and bool(last["chosen"]) and df["chosen"].sum() == 1
    costs = layer_costs(model, task.example_input())
    assert json.loads(last["bits"]) == {name: 8 for name in costs} and last["kind"] == "target-2"
    assert last["measured_metric"] == pytest.approx(w8) and last["measured_metric"] >= fp - max_drop
    assert last["weight_kib"] == pytest.approx(totals(cost_table(costs, {n: 8 for n in costs}, 8))["weight_kib"])
    message = df.attrs["message"]
    assert "\n" not in message and message.startswith("target-2 (the widest configuration (every layer at 8 bits)): weight_kib ")
    assert f"measured {w8:.4f}" in message and "no cheaper configuration measured reached it (2 iterations measured)" in message


def test_an_estimate_that_says_nothing_reaches_the_target_still_measures_the_widest(digits, sens, cpu248):
    # a pessimistic estimate (every layer at every width loses a whole point): the program finds
    # nothing that reaches the target and would give up at once; the widest point is measured
    task, model = digits
    fp = sens.attrs["fp_metric"]
    w8 = uniform_metric(digits, 8)
    max_drop = max(fp - w8, 0.0) + 0.005
    df = search_accuracy_target(task, model, with_delta(sens, -1.0), max_drop, SearchConfig(target=cpu248, **FAST), progress=False,
                                store=False)
    assert df.attrs["reached"] and len(df) == 1 and bool(df.iloc[0]["widest"]) and bool(df.iloc[0]["chosen"])
    assert np.isnan(df.iloc[0]["required_estimate"]) and df.iloc[0]["measured_metric"] == pytest.approx(w8)
    assert "(no configuration left whose estimate can reach it within the budgets)" in df.attrs["message"]
    assert "no cheaper configuration" not in df.attrs["message"] and "the only point measured" in df.attrs["message"]


def test_a_target_the_widest_reaches_is_answered_by_it_or_something_cheaper(digits, sens, cpu248):
    # the true estimate: the answer holds the drop and costs no more than the widest point
    task, model = digits
    fp = sens.attrs["fp_metric"]
    w8 = uniform_metric(digits, 8)
    max_drop = max(fp - w8, 0.0) + 0.002
    df = search_accuracy_target(task, model, sens, max_drop, SearchConfig(target=cpu248, **FAST), max_iterations=3, progress=False,
                                store=False)
    assert df.attrs["reached"], df.attrs["message"]
    chosen = df.loc[df.attrs["chosen"]]
    costs = layer_costs(model, task.example_input())
    w8_kib = totals(cost_table(costs, {n: 8 for n in costs}, 8))["weight_kib"]
    assert chosen["measured_metric"] >= fp - max_drop and chosen["weight_kib"] <= w8_kib + 1e-9
    assert bool(chosen["widest"]) == (json.loads(chosen["bits"]) == {n: 8 for n in costs})
    assert len(df) <= 4 and df["bits"].is_unique


def test_unreachable_only_when_the_widest_misses_too_and_the_message_says_what_it_measured(digits, sens, cpu23):
    # a target whose widest weights are 3 bits, and no drop allowed: 3-bit weights lose accuracy here
    task, model = digits
    fp = sens.attrs["fp_metric"]
    w3 = uniform_metric(digits, 3)
    assert w3 < fp, "precondition: every layer at 3 bits is below float on digits"
    df = search_accuracy_target(task, model, sens, 0.0, SearchConfig(target=cpu23, uniform_bits=(3, 2), **FAST), max_iterations=2,
                                progress=False, store=False)
    assert not df.attrs["reached"] and df.attrs["chosen"] is None and not df["chosen"].any() and not df["met_drop"].any()
    costs = layer_costs(model, task.example_input())
    widest = df.loc[df.attrs["widest"]]
    assert json.loads(widest["bits"]) == {n: 3 for n in costs} and widest["measured_metric"] == pytest.approx(w3)
    assert df["widest"].sum() == 1 and df["bits"].is_unique and len(df) <= 3
    message = df.attrs["message"]
    assert "\n" not in message
    assert message.startswith(f"accuracy target unreachable: the widest configuration (every layer at 3 bits) measured {w3:.4f}, "
                              f"{fp - w3:.4g} below float {fp:.4f}; target max_drop 0 (")
    best = df.loc[df["measured_metric"].idxmax()]
    assert f"; closest: {best['kind']} measured {best['measured_metric']:.4f}" in message


def test_the_widest_within_a_budget_is_the_most_weight_bits_that_fits(digits, sens, cpu248):
    # every layer at 8 bits breaks the budget: the widest is the fitting assignment with the most weight bits
    task, model = digits
    costs = layer_costs(model, task.example_input())
    w8_kib = totals(cost_table(costs, {n: 8 for n in costs}, 8))["weight_kib"]
    config = SearchConfig(target=cpu248, **FAST)
    budget = 0.7 * w8_kib
    s = _setup(task, model, sens, config, {"weight_kib": budget}, None, None, None)
    p = s.p
    choice = widest_choice(p, s.costs)
    assert choice is not None and p.within_limits(choice) and choice != [p.bits.index(8)] * len(p.layers)

    def size(c):
        return sum(costs[layer].weights * p.bits[j] for layer, j in zip(p.layers, c))

    best = max((c for c in itertools.product(range(len(p.bits)), repeat=len(p.layers)) if p.within_limits(list(c))), key=size)
    assert size(choice) == size(best)
    free = _setup(task, model, sens, config, None, None, None, None).p
    assert widest_choice(free, s.costs) == [free.bits.index(8)] * len(free.layers)  # no budget: every layer at 8 bits


def test_cli_unreachable_names_the_widest_point_and_exits_1(digits, cpu23, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from workbench.cli import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["search", "digits-cnn", "--target", cpu23, "--max-drop", "0", "--out", "found"])
    assert res.exit_code == 1, (res.output, res.stderr)
    error = res.stderr.splitlines()[-1]  # after the sweep's progress bars
    assert error.startswith("error: accuracy target unreachable: the widest configuration (every layer at 3 bits) measured ")
    assert "; target max_drop 0 (" in error and res.stderr.count("error:") == 1
    points = pd.read_csv(tmp_path / "found" / "pareto.csv")
    widest = points[points["widest"]]
    assert len(widest) == 1 and not points["met_drop"].any() and not (tmp_path / "found" / "recipe.yaml").exists()
    assert f"measured {widest['measured_metric'].iloc[0]:.4f}, " in error
