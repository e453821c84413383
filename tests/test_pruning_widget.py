import pytest

import workbench as wb
from widgets import PruningSweep
from workbench.analysis.pruning_sweep import PruningSweepConfig


@pytest.fixture()
def sweep(digits, tmp_path):
    task, model = digits
    config = PruningSweepConfig(method="structured", sparsities=(0.25, 0.5), latency_runs=5)
    return PruningSweep(task, model, config, store=wb.infra.ResultStore(tmp_path / "r.sqlite"))


def test_starts_empty_with_a_slider_over_the_global_levels(sweep):
    assert sweep.figure.data == ()
    assert [v for _, v in sweep.slider.options] == [0.0, 0.25, 0.5]
    assert sweep.level == 0.0 and sweep.rows_done == 0
    assert "run the sweep" in sweep.level_table.value


def test_run_draws_curves_per_layer_and_global_as_rows_finish(sweep):
    counts = []
    sweep.observe(lambda ch: counts.append(ch["new"]), "rows_done")
    df = sweep.run()
    assert counts == list(range(1, len(df) + 1))
    assert sweep.progress.value == sweep.progress.max == len(df)
    names = [t.name for t in sweep.figure.data]
    assert "global" in names and "features.0" in names and "classifier" not in names  # refused: the model's output
    glob = [t for t in sweep.figure.data if t.name == "global"][0]
    assert list(glob.x) == [0.0, 0.25, 0.5]
    assert list(glob.y) == pytest.approx(list(df[df.layer == "global"].sort_values("sparsity")["metric"]))
    layer = [t for t in sweep.figure.data if t.name == "features.0"][0]
    assert layer.x[0] == 0.0 and layer.y[0] == pytest.approx(df.attrs["fp_metric"])  # every curve starts at the unpruned model


def test_slider_shows_params_macs_and_latency_of_the_level(sweep):
    df = sweep.run()
    sweep.slider.value = 0.5  # as the browser would
    assert sweep.level == 0.5
    row = df[(df.layer == "global") & (df.sparsity == 0.5)].iloc[0]
    html = sweep.level_table.value
    assert f"{int(row['params']):,}" in html and f"{int(row['macs']):,}" in html and "latency_ms" in html
    assert f"{row['params'] / df.attrs['fp_params']:.2f}x" in html
    marker = [t for t in sweep.figure.data if t.name == "level 0.5"][0]
    assert marker.y[0] == pytest.approx(row["metric"])
    again = PruningSweep(sweep.task, sweep.model, sweep.config, store=sweep.store)
    again.run()
    assert again.status.startswith("done: 0 computed")


def test_axes_hovers_and_the_marker_follows_every_slider_change(sweep):
    sweep.run()
    layout = sweep.figure.layout
    assert layout.xaxis.title.text == "sparsity (fraction of channels removed)"
    assert layout.yaxis.title.text == f"{sweep.task.metric.name} (higher is better)"
    glob = [t for t in sweep.figure.data if t.name == "global"][0]
    assert "sparsity 0.25 (25% of channels removed)" in glob.hovertext[1] and " B ONNX" in glob.hovertext[1] and " ms latency" in glob.hovertext[1]
    for level in (0.25, 0.0, 0.5, 0.25):
        sweep.slider.value = level
        marker = [t for t in sweep.figure.data if t.name.startswith("level ")]
        assert [t.name for t in marker] == [f"level {level:g}"] and list(marker[0].x) == [level]
        assert marker[0].y[0] == pytest.approx(glob.y[list(glob.x).index(level)])


def test_cancel_keeps_finished_rows_and_a_new_run_resumes(digits, tmp_path):
    task, model = digits
    config = PruningSweepConfig(method="structured", sparsities=(0.5,), latency_runs=0)
    w = PruningSweep(task, model, config, store=wb.infra.ResultStore(tmp_path / "r.sqlite"))
    w.observe(lambda ch: ch["new"] == 1 and w.runner.cancel(), "rows_done")
    w.run_button.click()
    w.runner.join()
    assert w.rows_done == 1 < w.total and w.status.startswith(f"cancelled after 1/{w.total} rows")
    assert not w.run_button.disabled and "cancelled" in w.message.value
    again = PruningSweep(task, model, config, store=wb.infra.ResultStore(tmp_path / "r.sqlite"))
    again.run_button.click()
    again.runner.join()
    assert again.status == f"done: {again.total - 1} computed, 1 from the store"
    assert again.progress.value == again.progress.max == again.total == len(again.results)


def test_bad_input_shows_a_message_not_a_traceback(digits):
    import dataclasses

    from torch import nn

    from workbench.tasks.data import Split, TaskData

    task, model = digits
    d = task.data
    unlabelled_task = lambda t: t.with_data(TaskData(Split(d.train.x), Split(d.calib.x), Split(d.eval.x), d.source, d.synthetic, d.num_classes))
    nan_metric_task = lambda t: dataclasses.replace(t, metric=wb.tasks.Metric("broken", lambda o, y, x: float("nan")))  # every row non-finite
    empty = PruningSweep(task, nn.Sequential(nn.Flatten(), nn.ReLU()), PruningSweepConfig(global_sweep=False), store=False)
    assert "nothing to sweep" in empty.message.value and empty.run_button.disabled
    unlabelled = PruningSweep(unlabelled_task(task), model, store=False)
    assert "has no labels on its eval split" in unlabelled.message.value
    with pytest.raises(wb.infra.TaskError, match="no labels"):
        unlabelled.run()
    broken = PruningSweep(nan_metric_task(task), model, PruningSweepConfig(sparsities=(0.5,), per_layer=False, latency_runs=0), store=False)
    df = broken.run()
    assert set(df["status"]) == {"nonfinite"} and broken.figure.data == ()
    assert f"no finite broken in the {len(df)} rows (status: nonfinite)" in broken.message.value


def test_a_global_only_sweep_shows_every_ratio(digits, tmp_path):
    """Integer columns come back from the frame as numpy integers: their ratios are shown too."""
    task, model = digits
    sweep = PruningSweep(task, model, PruningSweepConfig(method="structured", sparsities=(0.5,), per_layer=False, latency_runs=2),
                         store=wb.infra.ResultStore(tmp_path / "r.sqlite"))
    df = sweep.run()
    sweep.slider.value = 0.5
    row, ref = (df[(df.layer == "global") & (df.sparsity == s)].iloc[0] for s in (0.5, 0.0))
    for col in ("params", "macs", "onnx_bytes"):
        assert f"{float(row[col]) / float(ref[col]):.2f}x" in sweep.level_table.value, col
