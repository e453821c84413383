import pytest

import workbench as wb
from widgets import PruningSweep
from workbench.pruning_sweep import PruningSweepConfig


@pytest.fixture()
def sweep(digits, tmp_path):
    task, model = digits
    config = PruningSweepConfig(method="structured", sparsities=(0.25, 0.5), latency_runs=5)
    return PruningSweep(task, model, config, store=wb.ResultStore(tmp_path / "r.sqlite"))


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
