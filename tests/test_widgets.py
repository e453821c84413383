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


def test_evaluate_button_measures_the_model(table):
    table.set_bits("features.3", weight=2)
    table.evaluate_button.click()
    assert table.status == "evaluated" and table.progress.value == table.progress.max
    assert table.weight_bytes == table.estimated_bytes
    assert table.layers.set_index("layer").loc["features.3", "weight_bits"] == 2
    assert list(table.figure.data[2].y) == list(table.layers["weight_bytes"])
    assert 0.0 <= table.metric <= 1.0 and "top1_accuracy" in table.result.value


def test_bad_layer_name(table):
    with pytest.raises(wb.SpecError, match="no quantisable layer 'features.9'"):
        table.set_bits("features.9", weight=4)
