"""Per-layer divergence (:func:`workbench.analysis.divergence`) on a real quantised model against its real
QCDQ export in onnxruntime: the simulation's fused layer outputs, the tensors found in the ONNX
graph, SQNR per layer, a perturbed target caught at the layer it perturbs, missing layers
flagged, and one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from brevitas import nn as qnn
from brevitas.quant import Int8ActPerTensorFloat
from torch import nn

import workbench as wb
from workbench.analysis.divergence import DIVERGENCE_COLUMNS, layer_output_modules, onnx_layer_outputs, simulation_layer_outputs


@pytest.fixture(scope="module")
def digits_w8a8():
    torch.manual_seed(0)
    task = wb.create_task("digits-cnn").small()
    model = wb.load_or_train_baseline(task, seed=0, epochs=2, progress=False)
    q = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8))
    return task, q, task.data.eval.x[:32]


@pytest.fixture(scope="module")
def qcdq_file(digits_w8a8, tmp_path_factory):
    task, q, _ = digits_w8a8
    return wb.export_qcdq(q, task.example_input(), tmp_path_factory.mktemp("div") / "model.onnx")


def test_simulation_layer_outputs_are_the_fused_requantised_tensors(digits_w8a8):
    task, q, x = digits_w8a8
    sim = wb.analysis.simulation_layer_outputs(q, x)
    assert list(sim) == list(wb.describe(q)["layer"]) == ["features.0", "features.3", "features.7", "classifier"]
    assert {k: v.shape for k, v in sim.items()} == {"features.0": (32, 16, 8, 8), "features.3": (32, 32, 8, 8),
                                                    "features.7": (32, 32, 4, 4), "classifier": (32, 10)}
    assert all(v.dtype == np.float32 for v in sim.values())
    # conv + QuantReLU: what the next layer reads is non-negative and on the ReLU quantiser's grid
    relu = q.get_submodule("features.2")
    step = float(relu.act_quant.scale().detach())
    codes = sim["features.0"] / step
    assert sim["features.0"].min() >= 0 and np.abs(codes - np.round(codes)).max() < 1e-3 and (sim["features.0"] > 0).mean() > 0.1
    # the classifier's tensor is the model's output (its output QuantIdentity is fused into it)
    with torch.no_grad():
        assert np.array_equal(sim["classifier"], q(x).numpy())
    table = wb.divergence(q, x, {k: v for k, v in sim.items()})
    assert table.attrs["exposed_by"] == {"features.0": "features.2", "features.3": "features.5", "features.7": "features.9",
                                         "classifier": "classifier_output_quant"}
    assert (table["sqnr_db"] == math.inf).all() and (table["max_lsb_diff"] == 0).all()
    assert layer_output_modules(q, x[:1]) == table.attrs["exposed_by"]


def test_qcdq_export_follows_the_simulation_on_every_layer(digits_w8a8, qcdq_file):
    task, q, x = digits_w8a8
    table = wb.divergence(q, x, artifact=qcdq_file)
    assert list(table.columns) == list(DIVERGENCE_COLUMNS)
    assert list(table["layer"]) == list(simulation_layer_outputs(q, x)) and list(table["order"]) == [0, 1, 2, 3]
    assert list(table["shape"]) == [(32, 16, 8, 8), (32, 32, 8, 8), (32, 32, 4, 4), (32, 10)]
    # measured: inf dB (bit-exact) on all four layers at onnxruntime's extended level
    assert (table["sqnr_db"] > 40).all() and (table["cosine"] > 0.9999).all() and (table["max_lsb_diff"] <= 1).all()
    assert not table["over_threshold"].any() and not table["first"].any() and not table["missing"].any()
    assert table.attrs["first_layer"] is None and table.attrs["target"] == "qcdq" and table.attrs["threshold_db"] == 30.0
    assert table.attrs["matched_by"] == dict.fromkeys(table["layer"], "node name")
    again = wb.divergence(q, x)  # exported to a temporary folder
    assert again["sqnr_db"].tolist() == table["sqnr_db"].tolist()


def test_a_perturbed_layer_is_the_first_over_the_threshold(digits_w8a8, qcdq_file):
    task, q, x = digits_w8a8
    outs = onnx_layer_outputs(qcdq_file, x, q)
    assert list(outs) == ["features.0", "features.3", "features.7", "classifier"]
    scaled = {**outs, "features.3": outs["features.3"] * 1.5}
    table = wb.divergence(q, x, scaled).set_index("layer")
    assert table.loc["features.3", "sqnr_db"] == pytest.approx(10 * math.log10(1 / 0.25), abs=0.05)  # a 1.5x gain: 6.02 dB
    assert table.loc["features.3", "cosine"] == pytest.approx(1.0, abs=1e-6)  # a gain keeps the direction
    assert table.loc["features.3", "first"] and table.loc["features.3", "over_threshold"]
    assert table["first"].sum() == 1 and not table.loc["features.0", "over_threshold"]
    assert table.attrs["first_layer"] == "features.3"
    step = float(q.get_submodule("features.5").act_quant.scale().detach())
    assert table.loc["features.3", "max_lsb_diff"] == pytest.approx(0.5 * outs["features.3"].max() / step, rel=1e-3)

    from widgets import DivergenceView

    view = DivergenceView(table.reset_index())  # the real table drives the view: it jumps to the perturbed layer
    assert view.dropdown.value == "features.3" and "SQNR 6.02 dB" in view.detail.value

    shifted = {**outs, "features.7": outs["features.7"] + 0.5 * np.abs(outs["features.7"]).mean()}
    table = wb.divergence(q, x, shifted, threshold_db=20.0)
    assert table.attrs["first_layer"] == "features.7" and table.attrs["threshold_db"] == 20.0
    assert list(table["over_threshold"]) == [False, False, True, False]


def test_missing_layers_are_rows_flagged_not_dropped(digits_w8a8, qcdq_file):
    task, q, x = digits_w8a8
    outs = onnx_layer_outputs(qcdq_file, x, q)
    del outs["features.3"]
    outs["classifier"] = outs["classifier"] * 2.0
    table = wb.divergence(q, x, outs, target="tflite-int8")
    assert list(table["layer"]) == ["features.0", "features.3", "features.7", "classifier"]
    row = table.set_index("layer").loc["features.3"]
    assert row["missing"] and math.isnan(row["sqnr_db"]) and math.isnan(row["cosine"]) and not row["over_threshold"]
    assert row["note"] == "not exposed by tflite-int8"
    assert table.attrs["first_layer"] == "classifier" and list(table["missing"]) == [False, True, False, False]


def test_channels_last_and_partial_batches_are_compared_in_place(digits_w8a8, qcdq_file):
    task, q, x = digits_w8a8
    outs = onnx_layer_outputs(qcdq_file, x, q)
    nhwc = {k: (np.moveaxis(v, 1, -1) if v.ndim == 4 else v)[:8] for k, v in outs.items()}
    a = wb.divergence(q, x, outs)
    b = wb.divergence(q, x, nhwc)
    assert b.loc[0, "note"] == "channels-last, compared in channels-first; first 8 of the samples"
    assert (b["sqnr_db"] > 40).all() and not b["over_threshold"].any() and (a["max_lsb_diff"] >= b["max_lsb_diff"]).all()
    wrong = {**outs, "features.7": outs["features.7"].reshape(32, -1)}
    c = wb.divergence(q, x, wrong).set_index("layer")
    assert c.loc["features.7", "sqnr_db"] == -math.inf and c.loc["features.7", "first"]
    assert c.loc["features.7", "note"] == "shape (32, 512), the simulation's (32, 32, 4, 4)"


def test_bad_inputs_are_one_line_errors(digits_w8a8, qcdq_file):
    task, q, x = digits_w8a8
    with pytest.raises(wb.infra.DatasetError, match=r"inputs of shape \(32, 64\); the model takes a batch of shape \(N, 1, 8, 8\)"):
        wb.divergence(q, x.reshape(32, 64))
    with pytest.raises(wb.infra.DatasetError, match="inputs of shape"):
        wb.analysis.simulation_layer_outputs(q, x[:, :, :4])
    with pytest.raises(wb.infra.ExportError, match="unknown export format 'tflite-in8'"):
        wb.divergence(q, x, target="tflite-in8", artifact=qcdq_file)
    with pytest.raises(wb.infra.ExportError, match="target 'qonnx' does not expose intermediate tensors"):
        wb.divergence(q, x, target="qonnx", artifact=qcdq_file)
    with pytest.raises(wb.infra.ExportError, match="is not a file"):
        wb.divergence(q, x, artifact=str(qcdq_file) + ".missing")
    with pytest.raises(wb.infra.SpecError, match=r"target_outputs name 1 layer\(s\) the model does not have: 'features.1'; its quantised layers are features.0"):
        wb.divergence(q, x, {"features.1": np.zeros((32, 16, 8, 8))})
    with pytest.raises(wb.infra.SpecError, match="target_outputs of type list"):
        wb.divergence(q, x, [np.zeros(3)])
    with pytest.raises(wb.infra.SpecError, match="expected a finite number of decibels"):
        wb.divergence(q, x, {}, threshold_db=float("nan"))
    for exc in (wb.infra.DatasetError, wb.infra.ExportError, wb.infra.SpecError):
        assert issubclass(exc, wb.WorkbenchError)


class _ModuleByModule(nn.Module):
    """A model without a torch.fx graph (as the workbench quantises Hugging Face models, module by
    module): one ReLU module used after several layers, a layer quantising its own input, an
    in-place residual addition, and a layer pooled before its activation."""

    def __init__(self):
        super().__init__()
        self.conv1 = qnn.QuantConv2d(1, 4, 3, padding=1, weight_bit_width=8)
        self.conv2 = qnn.QuantConv2d(4, 4, 3, padding=1, weight_bit_width=8, input_quant=Int8ActPerTensorFloat)
        self.conv3 = qnn.QuantConv2d(4, 4, 3, padding=1, weight_bit_width=8)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = qnn.QuantLinear(4 * 4 * 4, 3, bias=True, weight_bit_width=8)

    def forward(self, x):
        y = self.relu(self.conv1(x))  # read by conv2's own input quantiser: that is conv1's tensor
        h = self.conv3(self.conv2(y))
        h += 0.5  # in place: conv3's output is changed before the ReLU reads it, so they do not fuse
        h = self.relu(self.pool(self.relu(h)))
        return self.fc(h.flatten(1))


def test_hooks_without_a_graph_fuse_per_call():
    torch.manual_seed(0)
    m = _ModuleByModule().eval()
    x = torch.randn(5, 1, 8, 8)
    sim = simulation_layer_outputs(m, x)
    assert list(sim) == ["conv1", "conv2", "conv3", "fc"]
    with torch.no_grad():
        y = torch.relu(m.conv1(x))
        quant = m.conv2.input_quant(y)
        assert np.array_equal(sim["conv1"], quant.value.numpy()) and not np.array_equal(sim["conv1"], y.numpy())
        h2 = m.conv2(y)
        assert np.array_equal(sim["conv2"], h2.numpy())  # read by conv3, which does not quantise its input: its own output
        assert np.array_equal(sim["conv3"], m.conv3(h2).numpy())  # before the in-place += (kept as a copy)
        assert sim["conv3"].min() < 0 and np.array_equal(sim["fc"], m(x).numpy())
    assert wb.divergence(m, x, sim).attrs["exposed_by"] == {"conv1": "conv2.input_quant", "conv2": "conv2", "conv3": "conv3", "fc": "fc"}
    table = wb.divergence(m, x, {"conv1": sim["conv1"] + float(quant.scale), "conv2": sim["conv2"]})
    assert table.loc[0, "max_lsb_diff"] == 1.0  # in steps of conv2's input quantiser
    assert list(table["missing"]) == [False, False, True, True] and math.isnan(table.loc[1, "max_lsb_diff"])  # a float output has no step
