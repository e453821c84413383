"""Small CNNs export as fully integer graphs (issue 15: int8 ran slower than float on kws-dscnn):
the ZeroPad2d folds into the first convolution, the requantiser behind it goes, and the global
average pool runs as QLinearGlobalAveragePool; 4-bit weights of ConvInteger layers (convolutions
whose output a residual Add reads in float) are stored packed. Every rewrite keeps the values."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import workbench as wb
import workbench.export.qcdq as export
from workbench.export.packing import PACKED_TYPES
from workbench.export.verify import onnx_weight_integers, optimized_op_counts, quantised_layer_nodes, run_onnx, session


def _run_unoptimised(path, x):
    """onnxruntime with its graph optimisations off: every node as written (QDQ in float)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


@pytest.fixture(scope="module")
def kws():
    task = wb.create_task("kws-dscnn").small(64, 16, 64)
    model = wb.load_or_train_baseline(task, progress=False, epochs=1)
    return task, wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))


@pytest.mark.parametrize("encoding", ["u8", "s8"])
def test_kws_dscnn_runs_fully_integer(kws, encoding, tmp_path):
    task, q = kws
    path = wb.export_qcdq(q, task.example_input(), tmp_path / "kws.onnx", weight_encoding=encoding)
    graph = onnx.load(str(path)).graph
    assert not any(n.op_type == "Pad" for n in graph.node)
    first = next(n for n in graph.node if n.op_type == "Conv")
    assert next(list(a.ints) for a in first.attribute if a.name == "pads") == [4, 1, 5, 1]  # ZeroPad2d((1, 1, 4, 5))
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) == 12  # input, 9 conv outputs, pool, classifier: no requantiser
    ops = optimized_op_counts(path)
    # one QuantizeLinear (the graph input) and one DequantizeLinear (the output): nothing in float between
    assert ops == {"QuantizeLinear": 1, "QLinearConv": 9, "QLinearGlobalAveragePool": 1, "Flatten": 1, "QGemm": 1, "DequantizeLinear": 1}
    res = wb.verify_qcdq(path, q, task)
    assert res["onnx_agreement"] == 1.0 and res["int_kernel_exceptions"] == {}


def test_small_cnn_rewrites_keep_every_value(kws, digits, tmp_path, monkeypatch):
    """With onnxruntime's optimisations off (each node computed as written), the rewritten files
    compute exactly what the graphs without the rewrites compute."""
    task_d, model_d = digits
    cases = {"kws": kws, "digits": (task_d, wb.quantize_task(task_d, model_d, wb.QuantSpec.uniform(8, 8)))}
    rewritten = {k: wb.export_qcdq(q, t.example_input(), tmp_path / f"{k}.onnx") for k, (t, q) in cases.items()}
    for name in ("fold_pad_into_conv", "drop_identity_requantize", "quantize_before_flatten"):
        monkeypatch.setattr(export, name, lambda model: 0)
    plain = {k: wb.export_qcdq(q, t.example_input(), tmp_path / f"{k}_plain.onnx") for k, (t, q) in cases.items()}
    assert len(onnx.load(str(rewritten["kws"])).graph.node) < len(onnx.load(str(plain["kws"])).graph.node)  # the Pad and its requantiser
    for k, (t, _) in cases.items():
        assert len(onnx.load(str(rewritten[k])).graph.node) <= len(onnx.load(str(plain[k])).graph.node)
        assert "GlobalAveragePool" in optimized_op_counts(plain[k]) and "QLinearGlobalAveragePool" in optimized_op_counts(rewritten[k])
        np.testing.assert_array_equal(_run_unoptimised(rewritten[k], t.data.eval.x), _run_unoptimised(plain[k], t.data.eval.x))


@pytest.fixture(scope="module")
def resnet18():
    task = wb.create_task("hf-resnet18", image_size=32).small(8, 8, 16)
    model = wb.load_or_train_baseline(task, progress=False)
    return task, wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8)), wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 8))


def test_conv_integer_weights_are_packed(resnet18, tmp_path):
    """hf-resnet18 W4A8 with u8 weights: the convolutions a residual Add reads run as ConvInteger;
    their 4-bit weights are packed too, so the file is at most 0.6x the W8A8 one, and it computes
    the same outputs as the unpacked file, bit for bit, in the same integer kernels."""
    task, q8, q4 = resnet18
    p8 = wb.export_qcdq(q8, task.example_input(), tmp_path / "w8a8.onnx", weight_encoding="u8")
    p4 = wb.export_qcdq(q4, task.example_input(), tmp_path / "w4a8.onnx", weight_encoding="u8")
    plain = wb.export_qcdq(q4, task.example_input(), tmp_path / "w4a8_int8.onnx", weight_encoding="u8", pack=False)
    assert p4.stat().st_size <= 0.6 * p8.stat().st_size
    m = onnx.load(str(p4))
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    conv_integer = [n for n in m.graph.node if n.op_type == "ConvInteger"]
    assert len(conv_integer) == 12  # the stem (read by MaxPool), 8 residual-branch ends, 3 shortcuts
    for n in conv_integer:
        cast = producer[n.input[1]]
        assert cast.op_type == "Cast" and inits[cast.input[0]].data_type in PACKED_TYPES
    ops = optimized_op_counts(p4)
    assert ops["ConvInteger"] == 12 and ops == optimized_op_counts(plain)
    x = task.data.eval.x
    np.testing.assert_array_equal(run_onnx(session(p4), x), run_onnx(session(plain), x))


def test_float_output_convs_with_int8_weights_dequantise_once(resnet18, tmp_path, monkeypatch):
    """With s8 weights (no ConvInteger: onnxruntime's U8S8 ConvInteger ran 1.8x slower than the
    float Conv), the convolutions whose output stays float read their weight through Cast + Mul,
    which onnxruntime folds at session start, instead of a DequantizeLinear it runs every time:
    the same outputs bit for bit, 12 fewer DequantizeLinear run, the same stored integers, still
    counted (and named) as quantised layers; at 4 bits they are packed INT4."""
    task, q8, q4 = resnet18
    x = task.data.eval.x
    p8 = wb.export_qcdq(q8, task.example_input(), tmp_path / "w8a8.onnx", weight_encoding="s8")
    p4 = wb.export_qcdq(q4, task.example_input(), tmp_path / "w4a8.onnx", weight_encoding="s8")
    monkeypatch.setattr(export, "float_weights_for_float_outputs", lambda model: 0)
    plain = wb.export_qcdq(q8, task.example_input(), tmp_path / "w8a8_plain.onnx", weight_encoding="s8")
    np.testing.assert_array_equal(run_onnx(session(p8), x), run_onnx(session(plain), x))
    ops, ops_plain = optimized_op_counts(p8), optimized_op_counts(plain)
    assert ops_plain["DequantizeLinear"] - ops["DequantizeLinear"] == 12 and "Mul" not in ops and "Cast" not in ops
    assert len(quantised_layer_nodes(onnx.load(str(p8)))) == len(q8.workbench_plan.layers) == 21
    assert onnx_weight_integers(p8) == onnx_weight_integers(plain)
    res = wb.verify_qcdq(p8, q8, task)
    assert len(res["int_kernel_exceptions"]) == 12 and res["int_kernels"]["QLinearConv"] == 8
    m4 = onnx.load(str(p4))
    assert sum(i.data_type == onnx.TensorProto.INT4 for i in m4.graph.initializer) == 21
    assert p4.stat().st_size <= 0.6 * p8.stat().st_size
