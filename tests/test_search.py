import json

import numpy as np
import pytest

import workbench as wb
from workbench.core.cost import cost_table, layer_costs, load_target, totals
from workbench.search.config import SearchConfig
from workbench.search.front import pareto_mask
from workbench.search.precision import search
from workbench.search.problem import build_problem, smallest_budget
from workbench.search.solvers import solve_greedy, solve_ilp
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

BITS = (2, 3, 4, 5, 6, 7, 8)


@pytest.fixture(scope="module")
def digits_sens(digits):
    task, model = digits
    return sensitivity(task, model, SensitivityConfig(weight_bits=BITS), store=False, progress=False)


def test_cost_model_counts(digits):
    task, model = digits
    costs = layer_costs(model, task.example_input())
    t = cost_table(costs, {name: 4 for name in costs}, 8)
    c = costs["features.3"]
    assert (c.weights, c.biases, c.macs) == (16 * 32 * 9, 32, 32 * 8 * 8 * 16 * 9)
    row = t.set_index("layer").loc["features.3"]
    assert row["weight_bytes"] == 16 * 32 * 9 // 2 + 4 * 32 and row["bops"] == c.macs * 4 * 8
    tot = totals(t)
    assert tot["weight_bytes"] == t["weight_bytes"].sum() and tot["peak_act_bytes"] == t["act_bytes"].max()
    assert load_target("fpga-dataflow").cost == "bops" and load_target("mcu").weight_bits == [4, 8]
    with pytest.raises(wb.infra.SpecError, match="unknown target 'npu'; expected one of cpu-int8-ort, fpga-dataflow, mcu"):
        load_target("npu")


@pytest.mark.parametrize("kind", ["weight_kib", "bops"])
@pytest.mark.parametrize("objective", ["output_mse", "metric"])
def test_ilp_respects_budget_and_beats_greedy(digits, digits_sens, kind, objective):
    """On the estimate the solvers optimise, the exact ILP is never worse than greedy, and optimal."""
    task, model = digits
    p = build_problem(digits_sens, layer_costs(model, task.example_input()), list(BITS), kind, objective=objective)
    low, high = smallest_budget(p), float(p.cost.max(axis=1).sum())
    for budget in np.linspace(low, high, 25):
        ilp, greedy = solve_ilp(p, budget), solve_greedy(p, budget)
        assert ilp is not None and greedy is not None
        assert p.total_cost(ilp) <= budget * (1 + 1e-9) and p.total_cost(greedy) <= budget * (1 + 1e-9)
        assert p.score(ilp) >= p.score(greedy) - 1e-10
    # exhaustive check on a small budget grid: nothing feasible scores higher than the ILP
    import itertools

    budget = (low + high) / 2
    best = max(p.score(list(c)) for c in itertools.product(range(len(BITS)), repeat=len(p.layers)) if p.total_cost(list(c)) <= budget)
    assert p.score(solve_ilp(p, budget)) == pytest.approx(best, abs=1e-10)


def test_unreachable_budget_names_the_smallest(digits, digits_sens):
    task, model = digits
    with pytest.raises(wb.infra.SpecError, match=r"no assignment meets a budget of 1 KiB; the smallest reachable is 3\.8\d+ KiB"):
        search(task, model, digits_sens, SearchConfig(budget_kind="weight_kib"), budgets=[1.0], progress=False)


@pytest.fixture(scope="module")
def resnet_full():
    task = wb.create_task("ic-resnet8")
    model = wb.load_or_train_baseline(task, progress=False)
    return task, model, sensitivity(task, model, SensitivityConfig(weight_bits=BITS), store=False, progress=False)


def test_measured_front_beats_uniform_precision(resnet_full):
    task, model, sens = resnet_full
    df = search(task, model, sens, SearchConfig(n_budgets=2, budget_kind="weight_kib"), progress=False)  # every width offered
    assert {"ilp", "greedy", "uniform-8", "uniform-6", "uniform-4", "uniform-3", "random"} <= set(df["kind"])
    assert df["on_front"].any() and not df.loc[df["kind"] == "random", "on_front"].any()
    front = df[df["on_front"]]
    mixed_better = 0
    for _, u in df[df["kind"].str.startswith("uniform")].iterrows():
        covering = front[(front["weight_kib"] <= u["weight_kib"] + 1e-9) & (front["measured_metric"] >= u["measured_metric"])]
        assert len(covering), f"the front does not cover {u['kind']}"
        solved = df[df["kind"].isin(["ilp", "greedy"]) & (df["weight_kib"] <= u["weight_kib"] + 1e-9)]
        mixed_better += bool((solved["measured_metric"] > u["measured_metric"]).any())
    assert mixed_better >= 1  # a mixed assignment beats uniform precision at one budget or more
    for _, r in df.iterrows():
        assert r["weight_kib"] <= r["budget"] + 1e-9
        assert len(json.loads(r["bits"])) == 10


def test_pareto_mask():
    cost = np.array([1.0, 2.0, 2.0, 3.0, 0.5])
    metric = np.array([0.5, 0.9, 0.8, 0.9, 0.1])
    assert list(pareto_mask(cost, metric)) == [True, True, False, False, True]
