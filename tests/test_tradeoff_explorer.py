import json
import time

import pytest

import workbench as wb
from widgets import TradeoffExplorer
from workbench.recipe import check_recipe_against, load_recipe
from workbench.search import SearchConfig, search
from workbench.sensitivity import SensitivityConfig, sensitivity


@pytest.fixture(scope="module")
def searched(digits):
    task, model = digits
    sens = sensitivity(task, model, SensitivityConfig(weight_bits=(2, 3, 4, 5, 6, 7, 8)), store=False, progress=False)
    return sens, search(task, model, sens, SearchConfig(n_budgets=3, n_random=1), progress=False)


@pytest.fixture()
def explorer(digits, searched, tmp_path):
    task, model = digits
    sens, points = searched
    return TradeoffExplorer(task, model, sens, points, out_dir=tmp_path / "recipes")


def test_chart_shows_every_point_and_the_front(explorer, searched):
    _, points = searched
    markers = [t for t in explorer.figure.data if t.mode == "markers"]
    assert sum(len(t.x) for t in markers) == len(points)
    front = [t for t in explorer.figure.data if t.name == "measured front"][0]
    assert len(front.x) == int(points["on_front"].sum())
    explorer.axis_dropdown.value = "bops"
    assert explorer.figure.layout.xaxis.title.text == "BOPs"
    assert sorted(v for t in explorer.figure.data if t.mode == "markers" for v in t.x) == sorted(points["bops"])
    explorer.axis = "latency_ms"  # measured on the exported model of every front point
    assert explorer.axis_dropdown.value == "latency_ms"
    measured = [v for t in explorer.figure.data if t.mode == "markers" and not t.name.startswith("no ") for v in t.x]
    assert len(measured) == int(points["on_front"].sum()) and all(v > 0 for v in measured)
    # the points with no latency are shown (not dropped), at the left edge, and are never on the latency front
    n_missing = len(points) - len(measured)
    missing = [t for t in explorer.figure.data if t.name == f"no latency_ms value ({n_missing})"]
    assert len(missing) == 1 and set(missing[0].x) == {min(measured)} and "no latency p50 (ms) value" in missing[0].text[0]
    front = [t for t in explorer.figure.data if t.name == "measured front"][0]
    assert 1 <= len(front.x) <= len(measured) and set(front.x) <= set(measured)


def test_select_by_click_fills_the_table(explorer, searched):
    _, points = searched
    curve, trace = [(c, t) for c, t in enumerate(explorer.figure.data) if t.name == "uniform"][0]
    i = list(trace.x).index(min(trace.x))
    explorer.figure.click(curve, i)  # what a click on the point sends
    row = points.loc[explorer.selected]
    assert row["kind"].startswith("uniform")
    assert explorer.bits == json.loads(row["bits"])
    assert explorer.measured_metric == pytest.approx(row["measured_metric"])
    assert explorer.weight_kib == pytest.approx(row["weight_kib"])


def test_edit_updates_estimate_and_cost_without_running_the_model(explorer, monkeypatch):
    import widgets.tradeoff_explorer as te

    monkeypatch.setattr(te, "measure", lambda *a, **k: pytest.fail("an edit must not run the model"))
    explorer.set_bits("features.3", 8)
    before = (explorer.estimated_metric, explorer.weight_kib, explorer.bops)
    t0 = time.perf_counter()
    explorer.set_bits("features.3", 2)
    assert (time.perf_counter() - t0) < 0.1  # well under 100 ms (a guard, not a benchmark)
    assert explorer.weight_kib < before[1] and explorer.bops < before[2]
    assert explorer.estimated_metric < before[0] and explorer.measured_metric is None
    assert "not measured" in explorer.estimate_label.value
    with pytest.raises(wb.SpecError, match="9 bits is not allowed by target cpu-int8-ort"):
        explorer.set_bits("features.3", 9)


def test_evaluate_then_promote(explorer, digits):
    task, model = digits
    explorer.set_bits("features.7", 3)
    n = len(explorer.points)
    metric = explorer.evaluate_button.click() or explorer.measured_metric
    assert len(explorer.points) == n + 1 and explorer.points.iloc[-1]["kind"] == "edited"
    assert 0 <= metric <= 1 and explorer.status == "evaluated" and explorer.progress.value == 2
    assert any(t.name == "edited" for t in explorer.figure.data)
    explorer.promote_button.click()
    recipe, sha = load_recipe(explorer.recipe_path)
    assert sha == explorer.recipe_sha256 and explorer.recipe_path in explorer.result.value
    assert recipe.quantization.layers["features.7"].weight_bits == 3
    assert recipe.expected["quant_metric"].value == pytest.approx(metric, abs=1e-6)
    check_recipe_against(recipe, task, model)


def test_pruned_points_share_the_axes_and_promote_with_their_pruning(digits, searched, tmp_path):
    from workbench.search import join_points, pruned_candidates

    task, model = digits
    sens, points = searched
    pruned = pruned_candidates(task, model, [{"method": "structured", "sparsity": 0.5, "finetune_epochs": 2}], bits=(8, 4), progress=False)
    assert list(pruned["kind"]) == ["pruned@structured 0.5 w8", "pruned@structured 0.5 w4"]
    both = join_points(points, pruned)
    assert len(both) == len(points) + 2 and (both["pruning"] == "").sum() == len(points)
    # half the channels: far fewer KiB than any unpruned point at the same bits
    assert pruned["weight_kib"].iloc[0] < 0.5 * points[points.kind == "uniform-8"]["weight_kib"].iloc[0]
    explorer = TradeoffExplorer(task, model, sens, both, out_dir=tmp_path / "recipes")
    assert any(t.name == "pruned" and len(t.x) == 2 for t in explorer.figure.data)
    index = int(both.index[both.kind == "pruned@structured 0.5 w8"][0])
    explorer.select(index)
    assert json.loads(explorer.pruning)["sparsity"] == 0.5 and explorer.estimated_metric is None
    assert explorer.weight_kib == pytest.approx(float(both.loc[index, "weight_kib"]))
    assert "pruned: structured 0.5" in explorer.estimate_label.value
    explorer.set_bits("classifier", 4)
    metric = explorer.evaluate()  # measured on the pruned model
    assert 0 <= metric <= 1 and explorer.points.iloc[-1]["pruning"] == explorer.pruning
    path = explorer.promote()
    recipe, _ = load_recipe(path)
    assert recipe.pruning is not None and recipe.pruning.sparsity == 0.5 and recipe.pruning.finetune_epochs == 2
    assert recipe.quantization.layers["classifier"].weight_bits == 4
