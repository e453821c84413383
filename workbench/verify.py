"""Prove an exported model computes what was explored: run it in onnxruntime (QCDQ) or qonnx
(QONNX) and compare with the Brevitas simulation: task metric, agreement, output error, file
size, which integer kernels onnxruntime really runs, and latency."""

from __future__ import annotations

import collections
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .evaluate import predict
from .metrics import output_agreement

INT_KERNEL_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                  "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat")
MAC_KERNEL_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def session(path: str | os.PathLike, threads: int = 1, optimized_path: str | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session at ORT_ENABLE_EXTENDED: the level at which QDQ fuses to integer kernels."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def optimized_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """Node types of the graph onnxruntime actually runs (after its graph optimisations)."""
    with tempfile.TemporaryDirectory() as tmp:
        opt = os.path.join(tmp, "optimized.onnx")
        session(path, optimized_path=opt)
        counts = collections.Counter(n.op_type for n in onnx.load(opt).graph.node)
    return dict(sorted(counts.items()))


def int_kernel_counts(op_counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in op_counts.items() if k in INT_KERNEL_OPS}


def as_onnx_input(x: torch.Tensor) -> np.ndarray:
    """Inputs as onnxruntime takes them: float32, or int64 for integer inputs (token ids)."""
    return x.numpy().astype(np.int64 if not torch.is_floating_point(x) else np.float32)


def run_onnx(sess: ort.InferenceSession, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    name = sess.get_inputs()[0].name
    arr = as_onnx_input(x)
    return np.concatenate([sess.run(None, {name: arr[i : i + batch_size]})[0] for i in range(0, len(arr), batch_size)])


def latency_ms(path: str | os.PathLike, example: torch.Tensor, runs: int = 200, warmup: int = 20) -> dict[str, float]:
    """Batch-1 latency percentiles on one intra-op thread (fastest for tiny models)."""
    sess = session(path, threads=1)
    name = sess.get_inputs()[0].name
    x = as_onnx_input(example[:1])
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times[i] = (time.perf_counter() - t0) * 1e3
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def verify_qcdq(onnx_path: str | os.PathLike, qmodel: torch.nn.Module, task, split=None, sim_outputs: torch.Tensor | None = None) -> dict:
    """Run the QCDQ export over the eval split in onnxruntime and compare with the simulation."""
    split = task.data.eval if split is None else split
    sim = predict(qmodel, split.x) if sim_outputs is None else sim_outputs
    out = torch.from_numpy(run_onnx(session(onnx_path, threads=os.cpu_count() or 1), split.x))
    ops = optimized_op_counts(onnx_path)
    ints = int_kernel_counts(ops)
    cmp = output_agreement(out, sim, task.is_classifier)
    return {
        "onnx_metric": task.score(out, split),
        "onnx_agreement": cmp["agreement"],
        "max_abs_diff": cmp["max_abs_diff"],
        "rel_output_error": cmp["rel_output_error"],
        "onnx_file_bytes": Path(onnx_path).stat().st_size,
        "int_kernel_nodes": int(sum(ints.values())),
        "int_kernels": ints,
        "ort_ops": ops,
    }


def verify_qonnx(qonnx_path: str | os.PathLike, qmodel: torch.nn.Module, task, n: int = 64) -> dict:
    """Execute the QONNX export with qonnx's reference executor on ``n`` eval samples."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    split = task.data.eval.head(n)
    wrapper = ModelWrapper(str(qonnx_path))
    iname, oname = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    xs = as_onnx_input(split.x)
    out = torch.from_numpy(np.concatenate([execute_onnx(wrapper, {iname: xs[i : i + 1]})[oname] for i in range(len(xs))]))
    sim = predict(qmodel, split.x)
    cmp = output_agreement(out, sim, task.is_classifier)
    return {
        "qonnx_samples": len(xs),
        "qonnx_metric": task.score(out, split),
        "qonnx_agreement": cmp["agreement"],
        "qonnx_max_abs_diff": cmp["max_abs_diff"],
        "qonnx_file_bytes": Path(qonnx_path).stat().st_size,
        "qonnx_quant_nodes": sum(1 for node in wrapper.graph.node if node.op_type in ("Quant", "BipolarQuant", "Trunc")),
    }


def onnx_weight_integers(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Per layer, the smallest and largest stored weight integer (relative to its zero point) in a
    QCDQ file: what the deployed model really holds, e.g. (-7, 7) for narrow-range 4-bit weights."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or "/weight_quant/" not in (node.name or node.output[0]):
            continue
        src = node.input[0]
        if src in producer and producer[src].op_type == "Clip":
            src = producer[src].input[0]
        if src not in consts:
            continue
        w = consts[src].astype(np.int32)
        zp = consts[node.input[2]].astype(np.int32) if len(node.input) > 2 and node.input[2] in consts else 0
        if np.ndim(zp) == 1:
            zp = zp.reshape((-1,) + (1,) * (w.ndim - 1))
        ints = w - zp
        layer = (node.name or node.output[0]).split("/weight_quant/")[0].strip("/")
        out[layer] = (int(ints.min()), int(ints.max()))
    return out
