import json
import time

import pytest

import workbench as wb
from widgets import TradeoffExplorer
from workbench.runs.recipe import check_recipe_against, load_recipe
from workbench.search.config import SearchConfig
from workbench.search.precision import search
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity


@pytest.fixture(scope="module")
def searched(digits):
    task, model = digits
    sens = sensitivity(task, model, SensitivityConfig(weight_bits=(2, 3, 4, 5, 6, 7, 8)), store=False, progress=False)
    # every width offered; no store: the frame holds this search's points only, not those other tests stored (rows of kind "stored")
    return sens, search(task, model, sens, SearchConfig(n_budgets=3, n_random=1, budget_kind="weight_kib"), progress=False, store=False)


@pytest.fixture()
def explorer(digits, searched, tmp_path):
    task, model = digits
    sens, points = searched
    return TradeoffExplorer(task, model, sens, points, out_dir=tmp_path / "recipes")


def test_chart_shows_every_point_and_the_front(explorer, searched):
    _, points = searched
    markers = [t for t in explorer.figure.data if t.mode == "markers" and t.name != "selected"]
    assert sum(len(t.x) for t in markers) == len(points)
    front = [t for t in explorer.figure.data if t.name == "measured front"][0]
    assert len(front.x) == int(points["on_front"].sum())
    explorer.axis_dropdown.value = "bops"
    assert explorer.figure.layout.xaxis.title.text == "BOPs"
    assert sorted(v for t in explorer.figure.data if t.mode == "markers" and t.name != "selected" for v in t.x) == sorted(points["bops"])
    explorer.axis = "latency_ms"  # measured on the exported model of every front point
    assert explorer.axis_dropdown.value == "latency_ms"
    measured = [v for t in explorer.figure.data if t.mode == "markers" and t.name != "selected" and not t.name.startswith("no ") for v in t.x]
    assert len(measured) == int(points["on_front"].sum()) and all(v > 0 for v in measured)
    # the points with no latency are shown (not dropped), at the left edge, and are never on the latency front
    n_missing = len(points) - len(measured)
    missing = [t for t in explorer.figure.data if t.name == f"no latency p50 (ms) value ({n_missing})"]
    assert len(missing) == 1 and len(set(missing[0].x)) == 1 and "no latency p50 (ms) value" in missing[0].text[0]
    assert min(measured) - 0.1 * (max(measured) - min(measured)) < missing[0].x[0] < min(measured)  # left of every drawn point
    front = [t for t in explorer.figure.data if t.name == "measured front"][0]
    assert 1 <= len(front.x) <= len(measured) and set(front.x) <= set(measured)
    # the front is the latency front: along rising latency the metric only rises (no zig-zag), and
    # no point with a latency is both faster and at least as good as a front point
    assert list(front.x) == sorted(front.x)
    distinct = sorted(set(zip(front.x, front.y)))  # two searches reaching one configuration share its stored measurement
    assert all(b[0] > a[0] and b[1] > a[1] for a, b in zip(distinct, distinct[1:])), distinct
    lat = points.dropna(subset=["latency_ms"])
    lat = lat[lat.kind != "random"]
    for fx, fy in zip(front.x, front.y):
        assert not ((lat.latency_ms < fx) & (lat.measured_metric >= fy)).any()
    assert explorer.figure.layout.xaxis.title.text == "latency p50 (ms)"
    # the points with no latency are listed under the chart, with how many and which kinds
    assert f"{n_missing} of {len(points)} points have no latency p50 (ms) value" in explorer.note.value
    assert "random x1" in explorer.note.value
    # hovers say what each number is, with units, in lines no wider than ~60 characters (no JSON)
    for t in explorer.figure.data:
        for text in t.text or ():
            lines = text.split("<br>")
            assert all(len(line.replace("<b>", "").replace("</b>", "")) <= 60 for line in lines), text
            assert "{" not in text and "measured top1_accuracy: " in text and "weight bits per layer:" in text
    assert any("latency p50: " in line and line.endswith(" ms") for t in explorer.figure.data for x in (t.text or ()) for line in x.split("<br>"))
    assert any(line.startswith("theoretical packed weight: ") and line.endswith(" KiB") for x in markers[0].text for line in x.split("<br>"))


def test_select_by_click_fills_the_table(explorer, searched):
    _, points = searched
    curve, trace = [(c, t) for c, t in enumerate(explorer.figure.data) if t.name == "uniform"][0]
    i = list(trace.x).index(min(trace.x))
    ring_curve = next(c for c, t in enumerate(explorer.figure.data) if t.name == "selected")
    before = list(explorer.figure.data[ring_curve].customdata)
    explorer.result.value = "wrote <code>x-recipe-1.yaml</code>"  # a message about the point selected before
    explorer.figure.click(curve, i)  # what a click on the point sends
    row = points.loc[explorer.selected]
    ring = explorer.figure.data[ring_curve]  # the ring moved onto the clicked point, in the synced spec too
    assert list(ring.customdata) == [explorer.selected] != before
    assert (ring.x[0], ring.y[0]) == (trace.x[i], trace.y[i])
    assert explorer.figure.spec["data"][ring_curve]["x"] == [trace.x[i]]
    assert explorer.result.value == ""  # cleared: it was about another point
    assert row["kind"].startswith("uniform")
    assert explorer.bits == json.loads(row["bits"])
    assert explorer.measured_metric == pytest.approx(row["measured_metric"])
    assert explorer.weight_kib == pytest.approx(row["weight_kib"])


def test_edit_updates_estimate_and_cost_without_running_the_model(explorer, monkeypatch):
    import widgets.tradeoff_explorer as te

    monkeypatch.setattr(te, "measure", lambda *a, **k: pytest.fail("an edit must not run the model"))
    explorer.set_bits("features.3", 8)
    before = (explorer.estimated_metric, explorer.weight_kib, explorer.bops)
    explorer.result.value = "wrote <code>x-recipe-1.yaml</code>"  # about the bits before the edit
    t0 = time.perf_counter()
    explorer.set_bits("features.3", 2)
    assert (time.perf_counter() - t0) < 0.1  # well under 100 ms (a guard, not a benchmark)
    assert explorer.weight_kib < before[1] and explorer.bops < before[2]
    assert explorer.estimated_metric < before[0] and explorer.measured_metric is None
    assert "not measured" in explorer.estimate_label.value and "edited bits" in explorer.estimate_label.value
    assert explorer.result.value == ""
    with pytest.raises(wb.infra.SpecError, match="9 bits is not allowed by target cpu-int8-ort"):
        explorer.set_bits("features.3", 9)


def test_evaluate_then_promote(explorer, digits):
    task, model = digits
    explorer.set_bits("features.7", 3)
    n = len(explorer.points)
    explorer.evaluate_button.click()  # runs in the background: the button says so until it ends
    assert explorer.evaluate_button.disabled and explorer.evaluate_button.description == "Evaluating..."
    assert explorer.promote_button.disabled and explorer.runner.cancel_button.layout.display == ""
    explorer.runner.join()
    assert not explorer.evaluate_button.disabled and explorer.evaluate_button.description == "Evaluate"
    metric = explorer.measured_metric
    assert len(explorer.points) == n + 1 and explorer.points.iloc[-1]["kind"] == "edited"
    assert 0 <= metric <= 1 and explorer.status == "evaluated" and explorer.progress.value == 2
    assert any(t.name == "edited" for t in explorer.figure.data)
    ring = next(t for t in explorer.figure.data if t.name == "selected")  # the evaluated point is the selected one
    assert explorer.selected == n and list(ring.customdata) == [n] and ring.y[0] == pytest.approx(metric)
    explorer.promote_button.click()
    explorer.promote_runner.join()
    recipe, sha = load_recipe(explorer.recipe_path)
    assert sha == explorer.recipe_sha256 and explorer.recipe_path in explorer.result.value
    assert recipe.quantization.layers["features.7"].weight_bits == 3
    assert recipe.expected["quant_metric"].value == pytest.approx(metric, abs=1e-6)
    check_recipe_against(recipe, task, model)


def test_pruned_points_share_the_axes_and_promote_with_their_pruning(digits, searched, tmp_path):
    from workbench.search.front import join_points
    from workbench.search.measuring import pruned_candidates

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


@pytest.mark.parametrize("case", ["empty", "one", "all_nan"])
def test_bad_search_results_show_a_message(digits, searched, tmp_path, case):
    import numpy as np

    task, model = digits
    sens, points = searched
    bad = {"empty": points.iloc[:0], "one": points.iloc[:1], "all_nan": points.assign(measured_metric=np.nan)}[case]
    explorer = TradeoffExplorer(task, model, sens, bad, out_dir=tmp_path)  # never raises
    expected = {"empty": "has no points", "one": "one point only", "all_nan": "None of the 17 points has a measured top1_accuracy"}[case]
    assert expected in explorer.message and expected in explorer.note.value
    assert explorer.weight_kib > 0 and "estimated top1_accuracy" in explorer.estimate_label.value  # the table still estimates
    if case == "one":
        assert explorer.selected == 0 and sum(len(t.x) for t in explorer.figure.data if t.name == "ilp") == 1
    if case == "empty":
        assert explorer.selected is None and [t.name for t in explorer.figure.data] == ["selected"]


def test_task_without_labels_gives_a_readable_error(digits, searched, tmp_path):
    import dataclasses

    from workbench.tasks.data import Split

    task, model = digits
    sens, points = searched
    unlabelled = task.with_data(dataclasses.replace(task.data, eval=Split(task.data.eval.x, None)))
    explorer = TradeoffExplorer(unlabelled, model, sens, points, out_dir=tmp_path)
    assert "has no labels on its eval split" in explorer.result.value
    explorer.evaluate_button.click()
    explorer.runner.join()
    assert explorer.status.startswith("error: task") and "Traceback" not in explorer.result.value
    assert "Evaluate cannot measure top1_accuracy" in explorer.result.value and not explorer.evaluate_button.disabled
