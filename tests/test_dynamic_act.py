"""Dynamic activations (issue 15, item 3: what onnxruntime's ``quantize_dynamic`` does), selectable
per layer: ``act_mode: dynamic`` quantises a Linear layer's input per tensor to uint8 with a scale
and zero point computed from each input at run time (Brevitas's dynamic activation proxy), exports
as DynamicQuantizeLinear -> MatMulInteger, and onnxruntime runs every such layer as an integer
kernel (DynamicQuantizeMatMul / MatMulIntegerToFloat). ONNX has no per-token integer kernel, so
per-token scales are not offered."""

import collections

import onnx
import pytest
import torch

import workbench as wb
from workbench.infra.errors import SpecError
from workbench.tasks.evaluate import predict
from workbench.export.qcdq import export_qcdq
from workbench.core.ptq import calibrate
from workbench.export.verify import MAC_KERNEL_OPS, run_onnx, session, verify_qcdq

DYNAMIC_KERNELS = ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger")


def _ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_act_mode_is_a_spec_field_globally_and_per_layer():
    assert wb.QuantSpec().act_mode == "static" and "act_mode" not in wb.QuantSpec().to_dict()  # old specs read back unchanged
    spec = wb.QuantSpec.parse({"act_mode": "dynamic", "layers": {"head": {"act_mode": "static"}}})
    assert spec.to_dict()["act_mode"] == "dynamic" and spec.layers["head"].act_mode == "static"
    assert wb.QuantSpec.parse(spec.to_dict()) == spec


@pytest.mark.parametrize("spec, message", [
    ({"act_mode": "dyn"}, "act_mode: Input should be 'static' or 'dynamic'; got 'dyn'"),
    ({"act_mode": "dynamic", "act_bits": 4}, "act_mode 'dynamic' quantises activations to 8-bit int; got act_bits 4 (expected 8)"),
    ({"act_mode": "dynamic", "act_format": "fp8_e4m3"}, "act_mode 'dynamic' quantises activations to 8-bit int; got act_format 'fp8_e4m3' (expected 'int')"),
    ({"act_mode": "dynamic", "scale_type": "po2"}, "act_mode 'dynamic' computes float scales at run time; got scale_type 'po2' (expected 'float')"),
    ({"layers": {"x": {"act_mode": "dynamic", "act_bits": 6}}}, "layers.x: act_mode 'dynamic' quantises activations to 8-bit int; got act_bits 6 (expected 8)"),
])
def test_dynamic_needs_8_bit_int_activations(spec, message):
    with pytest.raises(SpecError) as err:
        wb.QuantSpec.parse(spec)
    assert str(err.value) == message


def test_dynamic_applies_to_linear_layers_and_settings_resolved_per_layer(digits, tmp_path):
    task, model = digits
    with pytest.raises(SpecError, match=r"^layers\.features\.0\.act_mode is 'dynamic' \(from the spec's defaults\), which applies to Linear layers only"):
        wb.quantize_model(model, wb.QuantSpec.uniform(8, 8, act_mode="dynamic"))
    with pytest.raises(SpecError, match=r"^layers\.classifier\.act_mode is 'dynamic' \(from layers\.type:Linear\), which quantises activations to 8-bit int; got act_bits 4"):
        wb.quantize_model(model, wb.QuantSpec.uniform(8, 8).with_layers({"type:Linear": {"act_mode": "dynamic"}, "classifier": {"act_bits": 4}}))
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8).with_layers({"type:Linear": {"act_mode": "dynamic"}}))
    modes = {n: lq.act_mode for n, lq in q.workbench_plan.layers.items()}
    assert modes == {n: "dynamic" if n == "classifier" else "static" for n in modes}
    res = verify_qcdq(export_qcdq(q, task.example_input(), tmp_path / "digits.onnx"), q, task)
    assert res["int_kernels"] == {"QLinearConv": 3, "DynamicQuantizeMatMul": 1} and res["int_kernel_exceptions"] == {}
    assert res["onnx_agreement"] == 1.0 and res["rel_output_error"] < 0.005


@pytest.fixture(scope="module")
def bert():
    task = wb.create_task("hf-bert", layers=2).small(16, 16, 32)
    return task, wb.load_or_train_baseline(task, progress=False)


def test_dynamic_bert_exports_verifies_and_runs_integer_kernels(bert, tmp_path):
    task, model = bert
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, act_mode="dynamic"))
    n_layers = len(q.workbench_plan.layers)
    path = export_qcdq(q, task.example_input(), tmp_path / "dynamic.onnx")
    ops = _ops(path)
    assert ops["MatMulInteger"] == n_layers and ops["QuantizeLinear"] == 0  # no static activation quantiser left
    assert ops["DynamicQuantizeLinear"] < n_layers  # one per tensor: Q, K and V share theirs
    res = verify_qcdq(path, q, task)
    assert res["int_kernel_exceptions"] == {}
    assert sum(res["int_kernels"].get(k, 0) for k in DYNAMIC_KERNELS) == n_layers, res["int_kernels"]
    assert res["int_kernels"].get("DynamicQuantizeMatMul", 0) > 0
    assert res["rel_output_error"] <= 0.005
    x = task.data.eval.x
    sim = predict(q, x)
    for level in ("disabled", "default"):
        out = torch.from_numpy(run_onnx(session(path, level=level), x))
        assert float((out - sim).norm() / sim.norm()) <= 0.005, level


def test_dynamic_and_static_layers_mix_in_one_encoder(bert, tmp_path):
    task, model = bert
    spec = wb.QuantSpec.uniform(8, 8).with_layers({"*.intermediate.dense": {"act_mode": "dynamic"}})
    q = wb.quantize_task(task, model, spec)
    dynamic = [n for n, lq in q.workbench_plan.layers.items() if lq.act_mode == "dynamic"]
    assert len(dynamic) == 2
    path = export_qcdq(q, task.example_input(), tmp_path / "mixed.onnx")
    assert _ops(path)["MatMulInteger"] == 2
    res = verify_qcdq(path, q, task)
    assert res["int_kernel_exceptions"] == {}
    assert sum(res["int_kernels"].get(k, 0) for k in MAC_KERNEL_OPS) == len(q.workbench_plan.layers)
    assert res["rel_output_error"] <= 0.005


def test_dynamic_layers_need_no_calibration(bert):
    task, model = bert
    q = wb.quantize_model(model, wb.QuantSpec.uniform(8, 8, act_mode="dynamic"))
    x = task.data.eval.x
    before = predict(q, x)
    calibrate(q, task.data.calib.x)
    assert torch.equal(predict(q, x), before)


def test_dynamic_layers_on_the_fx_path_export_exactly(tmp_path):
    """An all-dynamic MLP (traced: the fx path; the static quantisers that only dynamic layers read
    are switched off): onnxruntime's integer kernels reproduce the simulation exactly."""
    task = wb.create_task("ad-autoencoder").small(64, 32, 64)
    model = wb.load_or_train_baseline(task, progress=False, epochs=1)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, act_mode="dynamic"))
    assert q.workbench_plan.path == "fx"
    res = verify_qcdq(export_qcdq(q, task.example_input(), tmp_path / "ad.onnx"), q, task)
    assert res["int_kernels"] == {"DynamicQuantizeMatMul": len(q.workbench_plan.layers)} and res["max_abs_diff"] == 0.0


def test_dynamic_quantiser_computes_onnx_dynamicquantizelinear_bit_for_bit():
    """The simulation's dynamic quantiser gives onnxruntime's DynamicQuantizeLinear codes, scale and
    zero point on a million values. Brevitas's own rounding, ``round(x / s + zp)``, differs from
    ONNX's ``round(x / s) + zp`` where float32 rounds the sum to a half-integer (3 codes in this
    million): enough to start the runtime's codes drifting from the simulation's through the
    layers of an encoder (hf-bert, 6 layers, dynamic: 0.85% relative error before, 0.40% after)."""
    import brevitas.nn as qnn
    import onnxruntime as ort
    from brevitas_examples.common.generative.quantizers import (
        ShiftedUint8DynamicActPerTensorFloat,
    )
    from onnx import TensorProto, helper

    from workbench.core.quantizers import dynamic_act_quantizer

    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(n, t, None) for n, t in (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))])
    sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(0)) * 1.7 - 0.3
    y, s, z = sess.run(None, {"x": x.numpy()})

    def codes(injector):
        with torch.no_grad():
            qt = qnn.QuantIdentity(act_quant=injector, return_quant_tensor=True).eval()(x)
        assert float(qt.scale) == float(s) and int(qt.zero_point) == int(z)
        return torch.round(qt.value / qt.scale + qt.zero_point).numpy()

    assert int((codes(dynamic_act_quantizer()) != y).sum()) == 0
    assert int((codes(ShiftedUint8DynamicActPerTensorFloat) != y).sum()) > 0  # what the workbench's rounding fixes


def test_qonnx_refuses_dynamic_layers_before_any_work(tmp_path):
    """QONNX has no run-time activation scales: asking for it with a dynamic layer is a one-line
    ExportError naming the layer and the exporter that can, before any folder is written."""
    from typer.testing import CliRunner

    from workbench.cli import app

    spec = tmp_path / "spec.yaml"
    spec.write_text("weight_bits: 8\nact_bits: 8\nlayers:\n  'type:Linear': {act_mode: dynamic}\n")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["quantize", "digits-cnn", "--spec", str(spec), "--out", str(out)])
    assert res.exit_code == 2
    msg = res.output.strip().splitlines()[-1]
    assert msg == ("error: layers.classifier.act_mode is 'dynamic'; the qonnx export cannot carry run-time activation scales "
                   "(exporters that can: qcdq; leave qonnx out of the formats)"), msg
    assert not out.exists()
