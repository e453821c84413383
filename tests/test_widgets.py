import pytest

import workbench as wb
from widgets import BitWidthTable


@pytest.fixture()
def table(digits):
    task, model = digits
    return BitWidthTable(task, model)


def test_dropdowns_drive_spec_and_estimate_at_once(table):
    assert set(table.weight_dropdowns) == {"features.0", "features.3", "features.7", "classifier"}
    assert table.spec["layers"] == {}
    full = table.estimated_bytes
    seen = []
    table.observe(lambda ch: seen.append(ch["new"]), "estimated_bytes")
    table.weight_dropdowns["features.3"].value = 4
    assert table.spec["layers"] == {"features.3": {"weight_bits": 4}}
    assert table.estimated_bytes == full - 4608 // 2  # 4608 weights: 4608 bytes at 8 bits, 2304 at 4
    assert seen == [table.estimated_bytes]
    assert list(table.figure.data[1].y)[1] == 2304 + 4 * 32
    table.act_dropdowns["classifier"].value = 6
    assert table.spec["layers"]["classifier"] == {"act_bits": 6}
    table.weight_dropdowns["features.3"].value = 8
    assert "features.3" not in table.spec["layers"]


def test_chart_says_what_each_bar_is(table):
    assert table.figure.layout.xaxis.title.text == "layer" and table.figure.layout.yaxis.title.text == "weight bytes"
    table.set_bits("features.3", weight=4)
    spec = table.figure.spec["data"][1]  # the estimate bars, as the browser draws them
    assert spec["customdata"][1] == "estimate at W4" and spec["hovertemplate"].startswith("%{x} %{customdata}: %{y:,} bytes")


def test_evaluate_button_measures_the_model(table):
    table.set_bits("features.3", weight=2)
    table.evaluate_button.click()  # in the background: disabled with a running label until it ends
    assert table.evaluate_button.disabled and table.evaluate_button.description == "Evaluating..."
    table.runner.join()
    assert not table.evaluate_button.disabled and table.evaluate_button.description == "Evaluate"
    assert table.status == "evaluated" and table.progress.value == table.progress.max
    assert table.weight_bytes == table.estimated_bytes
    assert table.layers.set_index("layer").loc["features.3", "weight_bits"] == 2
    assert list(table.figure.data[2].y) == list(table.layers["weight_bytes"])
    assert 0.0 <= table.metric <= 1.0 and "top1_accuracy" in table.result.value
    measured = table.figure.data[2]
    assert measured.name == "measured" and measured.customdata[1] == "measured at W2" and not table.stale
    # an edit makes the measured bars stale (grey, hatched, named so) until the next Evaluate
    table.set_bits("features.3", weight=4)
    measured = table.figure.spec["data"][2]
    assert table.stale and measured["name"] == "measured (stale: edited since)" and measured["marker"]["pattern"]["shape"] == "/"
    assert "stale: the bits were edited since" in table.result.value
    table.evaluate()
    assert not table.stale and table.figure.data[2].name == "measured" and "stale" not in table.result.value


def test_task_without_labels_shows_a_message(digits):
    import dataclasses

    from workbench.tasks.data import Split

    task, model = digits
    unlabelled = task.with_data(dataclasses.replace(task.data, eval=Split(task.data.eval.x, None)))
    table = BitWidthTable(unlabelled, model)
    assert "has no labels on its eval split" in table.result.value
    table.evaluate_button.click()
    table.runner.join()
    assert table.status.startswith("error: task 'digits-cnn' has no labels") and "Traceback" not in table.result.value
    assert table.result.value.count("<span") == 1 and not table.evaluate_button.disabled


def test_bad_layer_name(table):
    with pytest.raises(wb.infra.SpecError, match="no quantisable layer 'features.9'"):
        table.set_bits("features.9", weight=4)
