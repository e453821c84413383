import pytest

import workbench as wb
from widgets import SensitivityDashboard
from workbench.sensitivity import SensitivityConfig


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
    with pytest.raises(wb.SpecError, match="no quantisable layer 'features.8'"):
        dash.select_layer("features.8")
