"""The fast QONNX executor computes what qonnx's node-by-node executor computes, bit for bit: on
one-node graphs over every bit width, sign, range, zero point and rounding mode qonnx knows
(values on the .5 boundaries included), and on the workbench's own exports (a CNN at 4 and 8
bits, a keyword-spotting CNN, a transformer encoder with quantised attention). A graph with a qonnx
op it cannot lower runs in qonnx's executor, and the result says why."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

import workbench as wb
from workbench.export.qonnx_run import lower_qonnx, qonnx_session, run_qonnx
from workbench.export.verify import as_onnx_input

DOMAIN = "qonnx.custom_op.general"
SHAPE = [2, 3, 40]
MODES = ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")


def _graph(qonnx_opset: int):
    """Many quantisers side by side on one input, each a graph output; their constants."""
    rng = np.random.default_rng(0)
    inits, nodes, outs = [], [], []

    def const(value) -> str:
        name = f"c{len(inits)}"
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def add(op: str, inputs: list, **attrs):
        out = f"y{len(nodes)}"
        nodes.append(helper.make_node(op, ["x", *inputs], [out], domain=DOMAIN, name=f"{op}_{len(nodes)}", **attrs))
        outs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, SHAPE))

    per_channel = (rng.uniform(0.01, 0.2, (1, 3, 1))).astype(np.float32)
    for bits in (1, 2, 3, 4, 8, 12, 16, 24, 32):
        for signed in (0, 1):
            for narrow in (0, 1):
                for mode in (MODES if bits in (4, 16) else ("ROUND",)):
                    scale = per_channel if (bits + signed) % 2 else 2.0 ** -3
                    zeropt = 0.0 if signed else float(bits % 3)
                    add("Quant", [const(scale), const(zeropt), const(bits)], signed=signed, narrow=narrow, rounding_mode=mode)
    add("BipolarQuant", [const(0.25)])
    add("BipolarQuant", [const(per_channel)])
    for mode in MODES:
        if qonnx_opset >= 2:
            add("Trunc", [const(2.0 ** -4), const(0.0), const(12), const(2.0 ** -1), const(6)], rounding_mode=mode, signed=1, narrow=0)
            add("Trunc", [const(0.125), const(3.0), const(10), const(1.0), const(4)], rounding_mode=mode, signed=0, narrow=1)
        else:
            add("Trunc", [const(2.0 ** -4), const(0.0), const(12), const(8)], rounding_mode=mode)
            add("Trunc", [const(0.125), const(3.0), const(10), const(7)], rounding_mode=mode)
    graph = helper.make_graph(nodes, "quantisers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, qonnx_opset)])


def _inputs():
    """Random values over several magnitudes, and values on every .5 boundary of the scales used."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(SHAPE) * np.logspace(-3, 4, SHAPE[-1])).astype(np.float32)
    halves = ((np.arange(SHAPE[-1]) - SHAPE[-1] / 2 + 0.5) * 2.0 ** -3).astype(np.float32)
    return np.stack([x, np.broadcast_to(halves, SHAPE).astype(np.float32)])


@pytest.mark.parametrize("qonnx_opset", [1, 2])
def test_every_quantiser_equals_qonnx_bit_for_bit(qonnx_opset):
    model = _graph(qonnx_opset)
    lowered = lower_qonnx(model)
    assert {n.domain for n in lowered.graph.node} == {""} and [o.domain for o in lowered.opset_import] == [""]
    sess, wrapper = qonnx_session(model), ModelWrapper(model)
    names = [o.name for o in model.graph.output]
    for x in _inputs():
        ours = sess.run(None, {"x": x})
        ref = execute_onnx(wrapper, {"x": x})
        for name, node, got in zip(names, model.graph.node, ours):
            np.testing.assert_array_equal(got, ref[name], err_msg=f"{node.name} {[(a.name, helper.get_attribute_value(a)) for a in node.attribute]}")


def test_a_qonnx_op_it_cannot_lower_runs_in_qonnx_and_says_why():
    thresholds = numpy_helper.from_array(np.asarray([[-1.0, 0.0, 1.0]] * 3, np.float32), "t")
    node = helper.make_node("MultiThreshold", ["x", "t"], ["y"], domain=DOMAIN, name="mt", out_dtype="UINT2")
    graph = helper.make_graph([node], "mt", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], initializer=[thresholds])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    x = np.asarray([[-2.0, 0.5, 3.0], [0.0, -0.5, 1.0]], np.float32)
    out, used = run_qonnx(model, x)
    assert used == ("qonnx (MultiThreshold node 'mt' (domain qonnx.custom_op.general): a qonnx op with no standard-ONNX lowering here; "
                    "lowered: Quant, BipolarQuant, Trunc)")
    np.testing.assert_array_equal(out, [[0, 2, 3], [2, 1, 3]])
    with pytest.raises(wb.infra.ExportError, match=r"^MultiThreshold node 'mt'"):
        run_qonnx(model, x, executor="onnxruntime")
    with pytest.raises(wb.infra.ExportError, match=r"^executor 'ort'; expected one of auto, onnxruntime, qonnx$"):
        run_qonnx(model, x, executor="ort")


def _same_as_qonnx(task, q, path, n):
    x = as_onnx_input(task.data.eval.x[:n])
    ours, used = run_qonnx(path, x)
    ref, ref_used = run_qonnx(path, x, executor="qonnx")
    assert (used, ref_used) == ("onnxruntime", "qonnx")
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name,bits", [("ic-resnet8", 4), ("ic-resnet8", 8), ("kws-dscnn", 4)])
def test_workbench_exports_run_as_in_qonnx(name, bits, tmp_path):
    task = wb.create_task(name).small(256, 64, 64)
    model = wb.load_or_train_baseline(task, progress=False)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(bits, 8), wb.PTQConfig(calib_samples=32))
    path = wb.export.export_qonnx(q, task.example_input(), tmp_path / "m.qonnx.onnx")
    _same_as_qonnx(task, q, path, 3)
    res = wb.export.verify_qonnx(path, q, task, n=64)
    assert res["qonnx_executor"] == "onnxruntime" and res["qonnx_samples"] == 64 and res["qonnx_agreement"] == 1.0


def test_a_transformer_export_with_quantised_attention_runs_as_in_qonnx(tmp_path):
    task = wb.create_task("hf-bert", layers=2).small(16, 16, 8)
    model = wb.load_or_train_baseline(task, progress=False)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, attention_bits=8))
    path = wb.export.export_qonnx(q, task.example_input(), tmp_path / "bert.qonnx.onnx")
    assert {n.op_type for n in onnx.load(str(path)).graph.node} >= {"Quant", "MatMul", "Softmax"}
    _same_as_qonnx(task, q, path, 2)
    old = wb.export.verify_qonnx(path, q, task, n=2, executor="qonnx")
    new = wb.export.verify_qonnx(path, q, task, n=2)
    assert (old.pop("qonnx_executor"), new.pop("qonnx_executor")) == ("qonnx", "onnxruntime")
    assert old == new
