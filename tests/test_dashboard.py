import pytest

import workbench as wb
from widgets import SensitivityDashboard
from workbench.analysis.sensitivity import SensitivityConfig


@pytest.fixture()
def dash(digits):
    task, model = digits
    return SensitivityDashboard(task, model, SensitivityConfig(weight_bits=(2, 4, 8)), store=False)


def test_heatmap_starts_empty_in_network_order(dash):
    trace = dash.heatmap.data[0]
    assert list(trace.y) == ["features.0", "features.3", "features.7", "classifier"]
    assert list(trace.x) == ["W2", "W4", "W8"]
    assert all(v is None for row in trace.z for v in row)
    assert dash.progress.max == 12 and dash.progress.value == 0


def test_run_fills_the_heatmap_row_by_row(dash):
    filled = []
    dash.observe(lambda ch: filled.append(sum(v is not None for row in dash.heatmap.data[0].z for v in row)), "rows_done")
    df = dash.run()
    assert filled == list(range(0, 12))  # observers see the count before the cell is painted: 0..11, then the last one
    z = dash.heatmap.data[0].z
    assert all(v is not None for row in z for v in row)
    assert z[1][0] == pytest.approx(float(df[(df.layer == "features.3") & (df.weight_bits == 2)]["metric_delta"].iloc[0]))
    assert dash.progress.value == 12 and dash.status.startswith("done")


def test_value_dropdown_recolours(dash):
    dash.run()
    before = [list(r) for r in dash.heatmap.data[0].z]
    dash.value_dropdown.value = "sqnr_db"
    assert dash.value == "sqnr_db"
    after = dash.heatmap.data[0].z
    assert after != before and after[0][2] > after[0][0]  # 8 bits: higher SQNR than 2 bits
    assert dash.heatmap.data[0].colorbar.title.text == "output SQNR (dB)"


def test_click_opens_the_layer_detail(dash):
    dash.run()
    assert dash.detail.layout.display == "none"
    assert dash._stats is not None  # computed by the run: a click runs no model
    row = list(dash.heatmap.data[0].y).index("features.7")
    dash.heatmap.click(0, [row, 0])  # what a click on the heatmap's cell sends
    assert dash.selected_layer == "features.7" and dash.detail.layout.display == "flex"
    hist, grid = dash.histogram.data
    assert sum(hist.y) == 32 * 32 * 9  # every weight of the layer
    assert len(grid.x) == 3  # the 2-bit narrow grid: -1, 0, 1 times the scale
    curve = dash.curve.data[0]
    assert list(curve.x) == [2, 4, 8] and len(curve.y) == 3
    assert "features.7" in dash.detail_text.value and "input activation in" in dash.detail_text.value


def test_select_unknown_layer(dash):
    with pytest.raises(wb.infra.SpecError, match="no quantisable layer 'features.8'"):
        dash.select_layer("features.8")


# ------------------------------------------------------------------ issue 18: units, Cancel, bad input

def nan_metric_task(task):
    """``task`` with a metric that returns NaN (a user's metric function gone wrong): every row is non-finite."""
    import dataclasses

    return dataclasses.replace(task, metric=wb.tasks.Metric("broken", lambda o, t, x: float("nan")))


def unlabelled_task(task):
    """``task`` whose splits have inputs and no labels."""
    from workbench.tasks.data import Split, TaskData

    d = task.data
    return task.with_data(TaskData(Split(d.train.x), Split(d.calib.x), Split(d.eval.x), d.source, d.synthetic, d.num_classes))


def test_axes_and_hovers_say_what_the_number_is(dash):
    layout = dash.heatmap.layout
    assert layout.xaxis.title.text == "weight / activation bits" and layout.yaxis.title.text == "layer (network order)"
    assert dash.heatmap.data[0].text[2][1] == "features.7 at W4: not computed yet"
    dash.run()
    text = dash.heatmap.data[0].text
    assert text[2][1].startswith("features.7 at W4: metric change ") and text[2][1].endswith(f"({dash.task.metric.name})")
    dash.value_dropdown.value = "sqnr_db"
    assert dash.heatmap.data[0].text[2][1].startswith("features.7 at W4: output SQNR ") and dash.heatmap.data[0].text[2][1].endswith(" dB")
    dash.select_layer("features.7")
    assert dash.histogram.layout.xaxis.title.text == "weight value" and dash.histogram.layout.yaxis.title.text.startswith("count")
    assert dash.curve.layout.xaxis.title.text == "weight bits" and dash.curve.layout.yaxis.title.text == f"{dash.task.metric.name} (higher is better)"
    assert "weight value" in dash.histogram.data[0].hovertemplate and dash.task.metric.name in dash.curve.data[0].hovertemplate
    histogram_box = dash.detail.children[-1]
    assert histogram_box.layout.flex_flow == "row wrap" and [b.layout.width for b in histogram_box.children] == ["50%", "50%"]


def test_float_activations_read_act_float_never_nan(digits):
    task, model = digits
    dash = SensitivityDashboard(task, model, SensitivityConfig(weight_bits=(4, 8), act_bits=(None, 8), layers=["features.7"]), store=False)
    dash.run()
    dash.select_layer("features.7")
    assert sorted(t.name for t in dash.curve.data) == ["act 8 bits", "act float"]  # not "act nan bits", not "act 8.0 bits"
    assert all(list(t.x) == [4, 8] for t in dash.curve.data)


def test_cancel_keeps_finished_rows_and_a_new_run_resumes(digits, tmp_path):
    task, model = digits
    dash = SensitivityDashboard(task, model, SensitivityConfig(weight_bits=(2, 4, 8)), store=wb.infra.ResultStore(tmp_path / "r.sqlite"))
    seen = []

    def at_first_row(change):
        if change["new"] == 1:
            seen.append((dash.run_button.disabled, dash.run_button.description, dash.runner.cancel_button.layout.display, dash.progress_label.value))
            dash.runner.cancel()  # what the Cancel button does

    dash.observe(at_first_row, "rows_done")
    dash.run_button.click()  # as the browser would: the sweep runs in a thread
    dash.runner.join()
    assert seen, dash.status
    assert seen[0][:3] == (True, "Running...", "")  # disabled, relabelled, Cancel shown
    assert seen[0][3].startswith("1/12 rows")
    assert dash.rows_done == 3 < 12  # stopped once the first layer (3 cases) was finished and stored
    assert dash.status.startswith("cancelled after 3/12 rows") and "cancelled" in dash.message.value
    assert not dash.run_button.disabled and dash.run_button.description == "Run sweep" and dash.runner.cancel_button.layout.display == "none"
    assert sum(v is not None for row in dash.heatmap.data[0].z for v in row) == 3
    dash.unobserve(at_first_row, "rows_done")
    dash.run_button.click()
    dash.runner.join()
    assert dash.status == "done: 9 computed, 3 from the store" and dash.rows_done == 12


def test_bad_input_shows_a_message_not_a_traceback(digits):
    from torch import nn

    task, model = digits
    empty = SensitivityDashboard(task, nn.Sequential(nn.Flatten(), nn.ReLU()), store=False)
    assert "nothing to sweep: the model has no quantisable layer" in empty.message.value and empty.run_button.disabled
    with pytest.raises(wb.infra.TaskError, match="nothing to sweep"):
        empty.run()
    unlabelled = SensitivityDashboard(unlabelled_task(task), model, store=False)
    assert "has no labels on its eval split" in unlabelled.message.value and unlabelled.run_button.disabled
    broken = SensitivityDashboard(nan_metric_task(task), model, SensitivityConfig(weight_bits=(4,), layers=["classifier"]), store=False)
    broken.run()
    assert set(broken.results["status"]) == {"nonfinite"}
    assert "no finite metric change in the 1 rows (status: nonfinite)" in broken.message.value
    assert broken.heatmap.data[0].text[0][0] == "classifier at W4: metric change: no value (status nonfinite)"
    broken.value_dropdown.value = "sqnr_db"  # the outputs are finite: SQNR still colours the cell, and the note goes
    assert broken.heatmap.data[0].z[0][0] is not None and broken.message.value == ""
