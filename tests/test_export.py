import numpy as np
import onnx
import onnxruntime as ort
import pytest

import workbench as wb
from workbench.export.onnx_graph import prune_unused
from workbench.export.rewrites import reencode_weights_u8


def _run(path, x, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_u8_weight_reencoding_is_exact(digits, tmp_path):
    """The re-encoded graph computes bit-identical results to Brevitas's int8 weights (reference kernels)."""
    task, model = digits
    q = wb.quantize_task(task, model, {"layers": {"features.3": {"weight_bits": 4}}})
    s8 = wb.export_qcdq(q, task.example_input(), tmp_path / "s8.onnx", weight_encoding="s8")
    u8 = wb.export_qcdq(q, task.example_input(), tmp_path / "u8.onnx", weight_encoding="u8")
    x = task.data.eval.x
    plain = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    np.testing.assert_array_equal(_run(s8, x, plain), _run(u8, x, plain))
    m = onnx.load(str(u8))
    assert reencode_weights_u8(m) == 0  # nothing int8 left to re-encode
    assert not any(i.data_type == onnx.TensorProto.INT8 and "weight" in i.name for i in m.graph.initializer)


def test_w8a8_export_runs_integer_kernels_and_agrees(digits, tmp_path):
    task, model = digits
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    path = wb.export_qcdq(q, task.example_input(), tmp_path / "m.onnx")
    res = wb.verify_qcdq(path, q, task)
    assert res["int_kernels"].get("QLinearConv", 0) == 3 and res["int_kernels"].get("QGemm", 0) == 1
    assert res["onnx_agreement"] >= 0.99
    assert abs(res["onnx_metric"] - wb.tasks.evaluate.evaluate(q, task)) <= 0.01
    assert res["onnx_file_bytes"] == path.stat().st_size


def test_export_is_deterministic(digits, tmp_path):
    task, model = digits
    paths = []
    for i in range(2):
        q = wb.quantize_task(task, model, {"weight_bits": 6})
        paths.append(wb.export_qcdq(q, task.example_input(), tmp_path / f"m{i}.onnx"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_16_bit_layers_refuse_qcdq_but_export_to_qonnx(digits, tmp_path):
    task, model = digits
    q = wb.quantize_task(task, model, {"layers": {"classifier": {"weight_bits": 16}}})
    assert wb.describe(q).set_index("layer").loc["classifier", "weight_bits"] == 16
    with pytest.raises(wb.infra.ExportError, match=r"layers\.classifier\.weight_bits is 16; QCDQ .* at most 8 bits"):
        wb.export_qcdq(q, task.example_input(), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind
    path = wb.export.export_qonnx(q, task.example_input(), tmp_path / "m.qonnx.onnx")
    res = wb.export.verify_qonnx(path, q, task, n=16)
    assert res["qonnx_agreement"] == 1.0 and res["qonnx_quant_nodes"] > 0


def test_bad_weight_encoding(digits, tmp_path):
    task, model = digits
    with pytest.raises(wb.infra.ExportError, match="weight_encoding 'u4'"):
        wb.export_qcdq(wb.quantize_model(model), task.example_input(), tmp_path / "m.onnx", weight_encoding="u4")


def test_prune_unused_keeps_outputs():
    from onnx import helper, TensorProto

    a = helper.make_node("Relu", ["x"], ["y"])
    dead = helper.make_node("Relu", ["x"], ["z"])
    g = helper.make_graph([a, dead], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                          initializer=[helper.make_tensor("unused", TensorProto.FLOAT, [1], [0.0])])
    m = helper.make_model(g)
    prune_unused(m)
    assert [n.output[0] for n in m.graph.node] == ["y"] and not m.graph.initializer
