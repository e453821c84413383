"""The divergence view and the deployment matrix, headless: traits, dropdowns, sliders and the
charts' data and layout. Tables are hand-made (they test the widgets; the numbers behind
them are tested in test_layer_divergence.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench.analysis.divergence import DIVERGENCE_COLUMNS, apply_threshold
from workbench.export.exporters import DEPLOYMENT_COLUMNS
from widgets import DeploymentMatrix, DivergenceView
from widgets.divergence_view import MISSING, OK, OVER


def divergence_table(threshold_db: float = 30.0) -> pd.DataFrame:
    sqnr = [math.inf, 48.0, 33.0, 24.0, float("nan"), 12.0]
    rows = []
    for k, (layer, s) in enumerate(zip(["stem", "b0", "b1", "b2", "b3", "head"], sqnr)):
        rows.append({"layer": layer, "order": k, "shape": (4, 8, 4, 4), "sqnr_db": s, "cosine": np.nan if math.isnan(s) else 1 - 10 ** (-s / 10),
                     "max_abs_diff": np.nan if math.isnan(s) else 0.01 * k, "max_lsb_diff": np.nan if math.isnan(s) else float(k),
                     "over_threshold": False, "first": False, "missing": math.isnan(s), "note": "not exposed by tflite-int8" if math.isnan(s) else ""})
    table = pd.DataFrame(rows, columns=list(DIVERGENCE_COLUMNS))
    table.attrs = {"target": "tflite-int8"}
    return apply_threshold(table, threshold_db)


def test_apply_threshold_marks_the_first_layer_under_it():
    t = divergence_table(30.0)
    assert list(t["over_threshold"]) == [False, False, False, True, False, True]  # the missing row (NaN) never is
    assert list(t["first"]) == [False, False, False, True, False, False]
    assert t.attrs["first_layer"] == "b2" and t.attrs["threshold_db"] == 30.0 and t.attrs["target"] == "tflite-int8"
    assert apply_threshold(t, 10.0).attrs["first_layer"] is None
    with pytest.raises(wb.infra.SpecError, match="threshold_db 'high'; expected a finite number"):
        apply_threshold(t, "high")


def test_dropdown_jumps_to_the_first_layer_over_the_threshold():
    view = DivergenceView(divergence_table())
    assert view.threshold_db == 30.0 and view.slider.value == 30.0
    assert view.first_layer == "b2" and view.layer == "b2" and view.dropdown.value == "b2"
    bar = view.figure.data[0]
    assert list(bar.x) == ["stem", "b0", "b1", "b2", "b3", "head"]
    assert list(bar.marker.color) == [OK, OK, OK, OVER, MISSING, OVER]
    assert list(bar.marker.line.width) == [0, 0, 0, 3, 0, 0]  # the jumped-to layer is outlined
    assert bar.text[0] == "exact" and bar.text[4] == "missing"
    assert bar.y[0] == view._top  # inf dB drawn at the top of the axis
    line = view.figure.layout.shapes[0]
    assert line.y0 == line.y1 == 30.0
    note = view.figure.layout.annotations[0]
    assert note.x == "b2" and "first over threshold" in note.text
    assert "first layer under 30.0 dB: b2" in view.detail.value and "SQNR 24.00 dB" in view.detail.value and "(3 LSB)" in view.detail.value


def test_moving_the_threshold_moves_the_first_layer():
    view = DivergenceView(divergence_table())
    view.slider.value = 40.0
    assert view.threshold_db == 40.0 and view.first_layer == "b1" and view.dropdown.value == "b1"
    assert list(view.table["over_threshold"]) == [False, False, True, True, False, True]
    assert view.figure.layout.shapes[0].y0 == 40.0
    assert list(view.figure.data[0].marker.color)[2] == OVER
    view.dropdown.value = "b0"  # picking another layer by hand: the detail follows it
    assert view.layer == "b0" and view.figure.layout.annotations[0].x == "b0" and "selected" in view.figure.layout.annotations[0].text
    assert "<b>b0</b>: SQNR 48.00 dB" in view.detail.value
    view.slider.value = 20.0  # the threshold moves: the dropdown jumps again
    assert view.first_layer == "head" and view.dropdown.value == "head"
    view.slider.value = 5.0
    assert view.first_layer is None and view.dropdown.value is None
    assert view.figure.layout.annotations == () and "no layer under 5.0 dB" in view.detail.value
    view.dropdown.value = "b3"
    assert "not exposed by tflite-int8" in view.detail.value


def test_update_replaces_the_table():
    view = DivergenceView(divergence_table(), threshold_db=20.0)
    assert view.first_layer == "head"
    other = divergence_table().iloc[:3].copy()
    other.attrs = {"target": "hls4ml"}
    view.update(other)
    assert view.target == "hls4ml" and list(view.dropdown.options) == ["stem", "b0", "b1"] and view.first_layer is None
    with pytest.raises(wb.infra.SpecError, match="divergence table without column"):
        DivergenceView(pd.DataFrame({"layer": ["a"]}))


def deployment_table() -> pd.DataFrame:
    """Synthetic rows with the deployment columns (this tests the widget, not the targets)."""
    base = dict.fromkeys(DEPLOYMENT_COLUMNS)
    rows = [
        {**base, "target": "qcdq", "runtime": "onnxruntime", "metric": 0.95, "agreement": 1.0, "max_lsb_diff": 0.0, "samples": 128,
         "file_bytes": 21000, "ram_bytes": 800000, "ram_source": "measured", "latency_ms_p50": 0.05, "latency_ms_p99": 0.08,
         "latency_ms_max": 0.2, "jitter": 0.3, "latency_source": "measured", "artifact": "model.onnx"},
        {**base, "target": "tflite-int8", "runtime": "litert", "metric": 0.93, "agreement": 0.97, "max_lsb_diff": 2.0, "samples": 128,
         "file_bytes": 16000, "ram_bytes": 500000, "ram_source": "measured", "latency_ms_p50": 0.04, "latency_ms_p99": 0.06,
         "latency_ms_max": 0.1, "jitter": 0.2, "latency_source": "measured", "artifact": "model.tflite"},
        {**base, "target": "tflite-int8", "runtime": "vela ethos-u55-128", "file_bytes": 18000, "ram_bytes": 40000, "ram_source": "estimated",
         "cycles": 91000, "latency_ms_p50": 0.18, "latency_source": "estimated", "npu_ops": 6, "cpu_ops": 0, "artifact": "model_vela.tflite"},
    ]
    return pd.DataFrame(rows, columns=list(DEPLOYMENT_COLUMNS))


def test_deployment_matrix_table_chart_and_tolerance():
    m = DeploymentMatrix(deployment_table())
    assert list(m.table.columns) == list(DEPLOYMENT_COLUMNS) and len(m.table) == 3
    assert m.column == "file_bytes" and m.dropdown.value == "file_bytes"
    assert {"file_bytes", "ram_bytes", "latency_ms_p99", "agreement", "cycles"} <= set(m.dropdown.options)
    assert "artifact" not in m.dropdown.options and "target" not in m.dropdown.options
    bar = m.figure.data[0]
    assert list(bar.x) == ["qcdq @ onnxruntime", "tflite-int8 @ litert", "tflite-int8 @ vela ethos-u55-128"]
    assert list(bar.y) == [21000, 16000, 18000]
    assert m.flagged == ["tflite-int8 @ litert"]  # agreement 0.97 < 0.99; the compile-only row has none
    assert list(bar.marker.color) == ["#4C78A8", "#E45756", "#4C78A8"]
    assert m.html.value.count("below-tolerance") == 1 and "model_vela.tflite" in m.html.value and "21,000" in m.html.value

    m.dropdown.value = "latency_ms_p99"
    assert m.column == "latency_ms_p99" and list(m.figure.data[0].y) == [0.08, 0.06, None]
    assert m.figure.layout.yaxis.title.text == "latency p99 (ms)"  # what it is, with its unit
    assert "latency p99 (ms)" in m.figure.data[0].hovertemplate
    m.tolerance = 0.95
    assert m.flagged == [] and "below-tolerance" not in m.html.value

    smaller = deployment_table().iloc[:1]
    m.update(smaller)
    assert len(m.table) == 1 and m.column == "latency_ms_p99" and list(m.figure.data[0].y) == [0.08]
    assert "cycles" not in m.dropdown.options  # no value left in that column
    with pytest.raises(wb.infra.SpecError, match="deployment table without column"):
        DeploymentMatrix(pd.DataFrame({"x": [1]}))


def test_divergence_axes_and_hovers_say_what_and_in_which_unit():
    view = DivergenceView(divergence_table())
    layout = view.figure.layout
    assert layout.xaxis.title.text == "layer (execution order)" and layout.yaxis.title.text.endswith("(dB)")
    hover = view.figure.data[0].hovertext
    assert "SQNR 24.00 dB" in hover[3] and "LSB" in hover[3] and "cosine similarity" in hover[3]
    assert hover[4] == "b3: not exposed by tflite-int8"  # the missing layer: no row of n/a numbers
