"""Every quantised Conv / Linear / MatMul layer of every registered task runs as an integer kernel
in onnxruntime (issue 15, item 2), both in the workbench's sessions and in a user's session with
onnxruntime's default options (ORT_ENABLE_ALL, common-subexpression elimination on)."""

import collections

import onnx
import torch
import pytest

import workbench as wb
from workbench.export.qcdq import export_qcdq
from workbench.export.verify import (
    MAC_KERNEL_OPS,
    int_kernel_exceptions,
    op_counts,
    optimized_graph,
    quantised_layer_nodes,
    verify_qcdq,
)

# Quantised layers allowed to stay float, by task and node name, with the reason. None today.
EXCEPTIONS: dict[str, dict[str, str]] = {}

# Small variants keep this file quick; each has the structure that mattered (BERT: Q, K and V read
# one tensor; ResNet-18: convolutions whose output a residual Add reads in float).
VARIANTS = {"hf-bert": {"layers": 2}, "hf-minilm-embed": {"layers": 2}, "hf-resnet18": {"image_size": 32}, "hf-mobilenetv2": {"image_size": 32}}
SIZES = {"hf-resnet18": (8, 8, 16), "hf-mobilenetv2": (8, 8, 16), "hf-bert": (16, 16, 32), "hf-minilm-embed": (16, 16, 32)}


def _task_and_model(name):
    task = wb.create_task(name, **VARIANTS.get(name, {})).small(*SIZES.get(name, (64, 16, 32)))
    kwargs = {} if name.startswith("hf-") else {"epochs": 1}
    return task, wb.load_or_train_baseline(task, progress=False, **kwargs)


def _default_session_kernels(path) -> int:
    """Integer MAC kernels onnxruntime runs with default SessionOptions (what a user deploys)."""
    ops = op_counts(optimized_graph(path, level="default"))
    return sum(ops.get(k, 0) for k in MAC_KERNEL_OPS)


@pytest.mark.parametrize("name", wb.list_tasks())
def test_every_quantised_layer_of_every_task_runs_as_an_integer_kernel(name, tmp_path):
    task, model = _task_and_model(name)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    n_layers = int(wb.describe(q)["weight_bits"].notna().sum())
    path = export_qcdq(q, task.example_input(), tmp_path / f"{name}.onnx")
    graph = onnx.load(str(path)).graph
    assert len(quantised_layer_nodes(onnx.load(str(path)))) == n_layers
    # one quantiser per tensor (BERT's Q, K and V read one), and one DequantizeLinear per reader,
    # each with its own scale initializer, so that common-subexpression elimination cannot merge
    # them into one shared DequantizeLinear (which does not fuse)
    quantised = collections.Counter(n.input[0] for n in graph.node if n.op_type == "QuantizeLinear")
    assert max(quantised.values()) == 1
    readers = collections.Counter(i for n in graph.node for i in n.input)
    constants = {i.name for i in graph.initializer}
    act_dqs = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in constants]
    assert all(readers[d.output[0]] <= 1 for d in act_dqs)  # 0: the graph output
    assert len({d.input[1] for d in act_dqs}) == len(act_dqs)
    expected = n_layers - len(EXCEPTIONS.get(name, {}))
    res = verify_qcdq(path, q, task)
    assert res["int_kernel_exceptions"] == EXCEPTIONS.get(name, {})
    macs = sum(res["int_kernels"].get(k, 0) for k in MAC_KERNEL_OPS)
    assert macs == expected, res["int_kernels"]
    assert _default_session_kernels(path) == expected
    if task.is_classifier:
        assert res["onnx_agreement"] >= 0.9
    else:
        assert res["rel_output_error"] < 0.05


@pytest.mark.parametrize("spec", [(8, 4), (4, 4)])
def test_sub_8_bit_activations_fuse_and_stay_exact(digits, spec, tmp_path):
    """Brevitas exports a 4-bit activation as QuantizeLinear -> Clip -> DequantizeLinear; every
    layer still fuses, and the file computes what the simulation does: the same top-1 everywhere,
    and no output more than one step of the output quantiser apart. Exact equality is CPU-dependent:
    on an AVX2 CPU without VNNI / AVX-512 (AMD EPYC here) 3 of 3,600 W4A4 outputs land one step
    apart, also with onnxruntime's graph optimisations off (ORT_DISABLE_ALL: float QDQ, no integer
    kernel), so the simulation's float convolution and onnxruntime's sum a near-tie in another order."""
    task, model = digits
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(*spec))
    path = export_qcdq(q, task.example_input(), tmp_path / "digits.onnx")
    graph = onnx.load(str(path)).graph
    assert any(n.op_type == "Clip" for n in graph.node)  # the 4-bit range is still carried by the graph
    res = verify_qcdq(path, q, task)
    assert res["int_kernels"] == {"QLinearConv": 3, "QLinearGlobalAveragePool": 1, "QGemm": 1} and res["int_kernel_exceptions"] == {}
    with torch.no_grad():
        sim = q(task.data.eval.x)
    levels = torch.unique(getattr(sim, "value", sim).flatten())
    step = float((levels[1:] - levels[:-1]).min())  # the output quantiser's step
    assert res["onnx_agreement"] == 1.0 and res["max_abs_diff"] <= step * (1 + 1e-5), (res["max_abs_diff"], step)
    assert _default_session_kernels(path) == 4


def test_exceptions_name_layers_that_stay_float(digits, tmp_path):
    """A graph in which a layer cannot fuse (here: its input is read in float, before its
    quantiser) reports that layer by name, with the reason."""
    task, model = digits
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    path = export_qcdq(q, task.example_input(), tmp_path / "digits.onnx")
    model_proto = onnx.load(str(path))
    graph = model_proto.graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    dq = next(n for n in graph.node if n.output[0] == gemm.input[0])
    quantize = next(n for n in graph.node if n.output[0] == dq.input[0])
    while quantize.op_type != "QuantizeLinear":  # the export quantises the pool's output before the Flatten
        quantize = next(n for n in graph.node if n.output[0] == quantize.input[0])
    flat = onnx.helper.make_node("Flatten", [quantize.input[0]], ["float_flat"], axis=1)  # the float tensor the quantiser reads
    graph.node.insert(list(graph.node).index(gemm), flat)
    gemm.input[0] = flat.output[0]
    broken = tmp_path / "broken.onnx"
    onnx.save(model_proto, str(broken))
    assert int_kernel_exceptions(broken) == {gemm.name: "its input is not quantised (read from Flatten)"}


@pytest.mark.parametrize("pad", [False, True])
def test_relu6_before_a_quantiser_becomes_integer_bounds_bit_for_bit(pad):
    """Conv -> Clip(0, 6) (-> zero Pad) -> QuantizeLinear(int8): the float Clip moves behind the
    quantiser as integer bounds (rounding is monotone), the file computes the same values on
    convolution outputs below 0, inside [0, 6] and above 6, and onnxruntime then fuses the Conv
    into QLinearConv."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from workbench.export.fusion import activations_to_uint8, unsigned_after_relu

    rng = np.random.default_rng(0)
    s = np.float32(0.0625)  # 6 / s = 96 < 127: the upper bound clips in the integers
    inits = [numpy_helper.from_array(rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8), "w"),
             numpy_helper.from_array(np.float32(0.05), "sw"), numpy_helper.from_array(np.int8(0), "zw"),
             numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi"),
             numpy_helper.from_array(s, "s"), numpy_helper.from_array(np.int8(0), "z"),
             numpy_helper.from_array(np.float32(0.1), "sx"), numpy_helper.from_array(np.int8(0), "zx"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"]), helper.make_node("Conv", ["xd", "wd"], ["c"]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r"])]
    src = "r"
    if pad:
        nodes.append(helper.make_node("Pad", ["r", "pads"], ["p"], mode="constant"))
        src = "p"
    nodes += [helper.make_node("QuantizeLinear", [src, "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    side = 6
    model = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    before = model.SerializeToString()
    assert unsigned_after_relu(model) == 1
    activations_to_uint8(model)
    assert not any(n.op_type == "Clip" and n.input[0] == "c" for n in model.graph.node)  # the float Clip is gone
    no_opt = ort.SessionOptions()
    no_opt.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(before, no_opt, providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(model.SerializeToString(), no_opt, providers=["CPUExecutionProvider"])
    for scale in (0.5, 3.0, 20.0):
        x = (rng.standard_normal((1, 3, side, side)) * scale).astype(np.float32)
        assert np.array_equal(ref.run(None, {"x": x})[0], new.run(None, {"x": x})[0])
    if not pad:  # (a Pad is folded into the next Conv's pads by the export: hf-mobilenetv2's test)
        ops = op_counts(onnx.load_from_string(_ort_optimized(model)))
        assert ops.get("QLinearConv") == 1 and "Conv" not in ops, ops


def _ort_optimized(model: onnx.ModelProto) -> bytes:
    import os
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return open(opts.optimized_model_filepath, "rb").read()
