"""Prove an exported model computes what was explored: run it in onnxruntime (QCDQ) or qonnx
(QONNX) and compare with the Brevitas simulation: task metric, agreement, output error, file
size, which integer kernels onnxruntime really runs, and latency."""

from __future__ import annotations

import collections
import functools
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ..infra import children
from ..tasks.evaluate import predict
from ..tasks.metrics import output_agreement

INT_KERNEL_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                  "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat")
MAC_KERNEL_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


FLOAT8_TYPES = tuple(getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ") if hasattr(onnx.TensorProto, n))


def has_float8(path: str | os.PathLike) -> bool:
    """Whether an ONNX file quantises to a float8 type (a minifloat QCDQ export)."""
    st = os.stat(path)
    return _has_float8(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _has_float8(path: str, mtime_ns: int, size: int) -> bool:
    graph = onnx.load(path, load_external_data=False).graph
    if any(i.data_type in FLOAT8_TYPES for i in graph.initializer):
        return True
    return any(a.t.data_type in FLOAT8_TYPES for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t"))


def optimization_level(path: str | os.PathLike) -> str:
    """``extended`` (QDQ fuses to integer kernels), or ``disabled`` for float8 files: onnxruntime's
    graph optimisations compute wrong results on float8 QuantizeLinear/DequantizeLinear (found on a
    digits CNN: at the extended level a Conv output was off by 7.7; at the basic level E5M2 weights
    and inputs flipped 7% of the predictions; with optimisations off it matched the simulation)."""
    return "disabled" if has_float8(path) else "extended"


_LEVELS = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
           "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}


def session(path: str | os.PathLike, threads: int = 1, optimized_path: str | None = None, level: str | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session at ORT_ENABLE_EXTENDED, the level at which QDQ fuses to integer
    kernels (or at ``level``; None: :func:`optimization_level` of the file)."""
    so = ort.SessionOptions()
    level = level or optimization_level(path)
    if level != "default":  # "default": onnxruntime's own level (ORT_ENABLE_ALL), left unset
        so.graph_optimization_level = _LEVELS[level]
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def optimized_graph(path: str | os.PathLike, level: str | None = None) -> onnx.ModelProto:
    """The graph onnxruntime actually runs (after its graph optimisations, at :func:`session`'s
    level, or ``level``: ``"default"`` is what a user's session with default options runs)."""
    with children.temp_dir("wb-ort-") as tmp:
        opt = os.path.join(tmp, "optimized.onnx")
        session(path, optimized_path=opt, level=level)
        return onnx.load(opt)


def op_counts(graph: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in graph.graph.node).items()))


def optimized_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """Node types of the graph onnxruntime actually runs (after its graph optimisations)."""
    return op_counts(optimized_graph(path))


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
    """Batch-1 latency percentiles of one file on one intra-op thread (fastest for tiny models), at
    :func:`latency_level` (onnxruntime's default level). To compare two files use
    :func:`paired_latency`."""
    lat = paired_latency({"file": path}, example, runs=runs, warmup=warmup)["file"]
    return {"p50": lat["p50"], "p99": lat["p99"]}


def latency_stats(times_ms) -> dict[str, float]:
    """``{"latency_ms_p50", "latency_ms_p99", "latency_ms_max", "jitter"}`` of per-run times in
    milliseconds; ``jitter`` is p99 / p50 (real-time budgets are set by the worst case, not the
    median)."""
    t = np.asarray(list(times_ms), dtype=np.float64)
    if t.size == 0:
        raise ValueError("latency_stats needs at least one timed run")
    p50, p99 = float(np.percentile(t, 50)), float(np.percentile(t, 99))
    return {"latency_ms_p50": p50, "latency_ms_p99": p99, "latency_ms_max": float(t.max()), "jitter": p99 / p50 if p50 > 0 else float("nan")}


def time_runs(fn, runs: int = 200, warmup: int = 20) -> dict[str, float]:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times timed; :func:`latency_stats` of them.
    The caller pins the runtime to one thread (its own setting) before passing ``fn``."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - t0) * 1e3
    return latency_stats(times)


def latency_level(path: str | os.PathLike) -> str:
    """The optimisation level latency is measured at: onnxruntime's ``default`` (ORT_ENABLE_ALL, what
    a deployment gets without asking), except where a file needs another to compute correctly
    (float8 files: ``disabled``, see :func:`optimization_level`)."""
    level = optimization_level(path)
    return "default" if level == "extended" else level


def host_cpu(cpuinfo: str | None = None) -> str:
    """This host's CPU model: the first ``model name`` (x86) or ``Model`` / ``Hardware`` (ARM) line
    of ``cpuinfo`` (default: /proc/cpuinfo), else :func:`platform.processor`, else the machine
    type (``x86_64``); ``"unknown CPU"`` when none says."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for key in ("model name", "Model", "Hardware"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown CPU"


def latency_where(threads: int = 1, batch: int = 1) -> str:
    """Where :func:`paired_latency` measures: ``"host CPU (<model>), onnxruntime <version>, 1 thread,
    batch 1"``: the label a latency figure carries."""
    return f"host CPU ({host_cpu()}), onnxruntime {ort.__version__}, {threads} thread{'s' if threads != 1 else ''}, batch {batch}"


def paired_latency(paths: dict[str, str | os.PathLike], example: torch.Tensor, runs: int = 200, warmup: int = 20) -> dict:
    """Batch-1 latency of several files (a float baseline and its quantised export) measured the
    same way, in this process: one session per file at :func:`latency_level`, one intra-op thread,
    ``warmup`` untimed runs each, then ``runs`` timed rounds that interleave the files (each round
    runs every file once; the order rotates by one file per round, so none always runs first).

    Returns ``{name: {"p50", "p99", "max", "level"}}`` per file (milliseconds) plus ``"order"``: the names
    in the order the timed runs happened (``runs * len(paths)`` entries) and ``"method"``: one line
    saying how it was measured."""
    if not paths:
        raise ValueError("paired_latency needs at least one file")
    names = list(paths)
    levels = {n: latency_level(p) for n, p in paths.items()}
    sessions = {n: session(p, threads=1, level=levels[n]) for n, p in paths.items()}
    x = as_onnx_input(example[:1])
    feeds = {n: {s.get_inputs()[0].name: x} for n, s in sessions.items()}
    for _ in range(warmup):
        for n in names:
            sessions[n].run(None, feeds[n])
    times = {n: np.empty(runs) for n in names}
    order = []
    for i in range(runs):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            sessions[n].run(None, feeds[n])
            times[n][i] = (time.perf_counter() - t0) * 1e3
            order.append(n)
    out: dict = {n: {"p50": float(np.percentile(times[n], 50)), "p99": float(np.percentile(times[n], 99)), "max": float(times[n].max()),
                     "level": levels[n]} for n in names}
    level_text = ", ".join(f"{n} {levels[n]}" for n in names)
    out["order"] = order
    out["method"] = f"interleaved, batch 1, 1 thread, {runs} runs, levels: {level_text}"
    return out


def verify_qcdq(onnx_path: str | os.PathLike, qmodel: torch.nn.Module, task, split=None, sim_outputs: torch.Tensor | None = None) -> dict:
    """Run the QCDQ export over the eval split in onnxruntime and compare with the simulation.

    A file onnxruntime cannot run (a number format it has no kernel for) is still checked to load
    (``onnx.checker``); the result then says so in one line (``qcdq_verified: False``,
    ``qcdq_unverified_reason``) with the comparison keys None."""
    split = task.data.eval if split is None else split
    try:
        sess = session(onnx_path, threads=os.cpu_count() or 1)
    except Exception as exc:  # onnxruntime raises its own types (NotImplemented, InvalidGraph, Fail)
        return unverified_qcdq(onnx_path, f"onnxruntime cannot run it: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", qmodel)
    sim = predict(qmodel, split.x) if sim_outputs is None else sim_outputs
    out = torch.from_numpy(run_onnx(sess, split.x))
    optimized = optimized_graph(onnx_path)
    ops = op_counts(optimized)
    ints = int_kernel_counts(ops)
    cmp = output_agreement(out, sim, task.kind)
    level = optimization_level(onnx_path)
    return {
        "qcdq_verified": True,
        **({} if level == "extended" else {"onnx_optimization_level": level}),
        "onnx_metric": task.score(out, split),
        "onnx_agreement": cmp["agreement"],
        "max_abs_diff": cmp["max_abs_diff"],
        "rel_output_error": cmp["rel_output_error"],
        "onnx_file_bytes": Path(onnx_path).stat().st_size,
        **onnx_storage(onnx_path, qmodel),
        "int_kernel_nodes": int(sum(ints.values())),
        "int_kernels": ints,
        "ort_ops": ops,
        "int_kernel_exceptions": int_kernel_exceptions(onnx_path, optimized),
    }


def unverified_qcdq(onnx_path: str | os.PathLike, reason: str, qmodel: torch.nn.Module | None = None) -> dict:
    """The verification keys of a QCDQ file no runtime here runs: it is checked to load, and the
    reason is one line."""
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    return {"qcdq_verified": False, "qcdq_unverified_reason": reason, "onnx_metric": None, "onnx_agreement": None, "max_abs_diff": None,
            "rel_output_error": None, "onnx_file_bytes": Path(onnx_path).stat().st_size, **onnx_storage(onnx_path, qmodel), "int_kernel_nodes": 0,
            "int_kernels": {}, "ort_ops": {}, "int_kernel_exceptions": {}}


def verify_float(onnx_path: str | os.PathLike, float_model: torch.nn.Module, task, split=None, fp_outputs: torch.Tensor | None = None) -> dict:
    """Run the float ONNX export over the eval split in onnxruntime and compare with the float torch model."""
    split = task.data.eval if split is None else split
    ref = predict(float_model, split.x) if fp_outputs is None else fp_outputs
    out = torch.from_numpy(run_onnx(session(onnx_path, threads=os.cpu_count() or 1, level="extended"), split.x))
    cmp = output_agreement(out, ref, task.kind)
    return {
        "float_onnx_metric": task.score(out, split),
        "float_agreement": cmp["agreement"],
        "float_max_abs_diff": cmp["max_abs_diff"],
        "float_file_bytes": Path(onnx_path).stat().st_size,
    }


def verify_qonnx(qonnx_path: str | os.PathLike, qmodel: torch.nn.Module, task, n: int = 64, executor: str = "auto") -> dict:
    """Execute the QONNX export on ``n`` eval samples and compare with the simulation.

    ``executor="auto"`` (the default) runs it in onnxruntime with qonnx's quantisers lowered to
    standard ops (:func:`workbench.export.qonnx_run.run_qonnx`: the same numbers as qonnx's executor, in
    one session: seconds, not minutes, on a transformer encoder); a graph that cannot be lowered
    runs in qonnx's node-by-node ``execute_onnx``, as does ``executor="qonnx"``. The result's
    ``qonnx_executor`` says which ran: ``"onnxruntime"``, ``"qonnx"`` or ``"qonnx (<why>)"``."""
    from .qonnx_run import run_qonnx

    split = task.data.eval.head(n)
    model = onnx.load(str(qonnx_path))
    xs = as_onnx_input(split.x)
    outputs, used = run_qonnx(model, xs, executor)
    out = torch.from_numpy(outputs)
    quant_nodes = sum(1 for node in model.graph.node if node.op_type in ("Quant", "BipolarQuant", "Trunc"))
    del model
    sim = predict(qmodel, split.x)
    cmp = output_agreement(out, sim, task.kind)
    return {
        "qonnx_samples": len(xs),
        "qonnx_executor": used,
        "qonnx_metric": task.score(out, split),
        "qonnx_agreement": cmp["agreement"],
        "qonnx_max_abs_diff": cmp["max_abs_diff"],
        "qonnx_file_bytes": Path(qonnx_path).stat().st_size,
        "qonnx_quant_nodes": quant_nodes,
        **qonnx_storage(qonnx_path, qmodel),
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
        if node.op_type not in ("DequantizeLinear", "Mul") or "/weight_quant/" not in (node.name or node.output[0]):
            continue
        src = node.input[0]
        if node.op_type == "Mul" and not (src in producer and producer[src].op_type == "Cast"):
            continue
        while src in producer and producer[src].op_type in ("Clip", "Cast"):  # Cast: a packed 4-bit weight
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


_PACKED = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
_INT8 = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE, *FLOAT8_TYPES}


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.raw_data:
        return len(t.raw_data)
    from onnx import numpy_helper

    arr = numpy_helper.to_array(t)
    return (arr.size + 1) // 2 if t.data_type in _PACKED else int(arr.nbytes)


def onnx_storage(path: str | os.PathLike, qmodel: torch.nn.Module | None = None) -> dict:
    """What an exported file's bytes hold, so "weight bytes" (the cost model) and "file bytes" are
    never confused: ``onnx_weight_bytes_packed`` (INT4/UINT4 initialisers, two values a byte),
    ``onnx_int8_bytes`` (int8/uint8 initialisers: 5-8-bit weights in int8 containers, zero
    points), ``onnx_int32_bytes`` (quantised biases), ``onnx_float_bytes`` (float initialisers:
    scales, float layers' weights and biases), ``onnx_graph_bytes`` (the rest of the file: nodes,
    names) and ``packing``: ``{"int4": [...], "int8": [...], <format>: [...], "float": [...]}``,
    which layers' weights the file stores how: each integer layer of ``qmodel``'s plan is found
    in the file by its weight integers (:func:`match_layer_weights`; ``unmatched`` if it is not
    found), minifloat layers are listed under their format, unquantised ones under ``float``
    (None without a plan); embedding tables are listed too: int8 / int4 when quantised, float
    otherwise."""
    model = onnx.load(str(path))
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t")]
    out = {"onnx_weight_bytes_packed": 0, "onnx_int8_bytes": 0, "onnx_int32_bytes": 0, "onnx_float_bytes": 0}
    for t in tensors:
        key = ("onnx_weight_bytes_packed" if t.data_type in _PACKED else "onnx_int8_bytes" if t.data_type in _INT8
               else "onnx_int32_bytes" if t.data_type == onnx.TensorProto.INT32 else "onnx_float_bytes" if t.data_type in _FLOATS else None)
        if key is not None:
            out[key] += _tensor_bytes(t)
    out["onnx_graph_bytes"] = Path(path).stat().st_size - sum(out.values())
    out["packing"] = _packing(qmodel, model)
    return out


def _packing(qmodel, model: onnx.ModelProto) -> dict | None:
    """``{storage: [layers]}`` of a QCDQ file: each integer layer is found in the file by its
    weight integers (:func:`match_layer_weights`), whatever the node names (ConvInteger layers,
    Brevitas's short node names), and listed by how its tensor is stored (INT4/UINT4: ``int4``,
    INT8/UINT8: ``int8``); minifloat layers under their format, unquantised ones under ``float``."""
    from onnx import numpy_helper

    tensors = {}
    for t in model.graph.initializer:
        if t.data_type in _PACKED | _INT8 and len(t.dims) >= 2:
            tensors[t.name] = ("int4" if t.data_type in _PACKED else "int8", numpy_helper.to_array(t))
    return _layers_by_storage(qmodel, tensors)


def _layers_by_storage(qmodel, tensors: dict[str, tuple[str, np.ndarray]]) -> dict | None:
    from ..core.formats import get_format

    plan = getattr(qmodel, "workbench_plan", None)
    if plan is None:
        return None
    found = match_layer_weights(qmodel, {name: ints for name, (_, ints) in tensors.items()})
    out: dict[str, list[str]] = {}
    for name, lq in plan.layers.items():
        if lq.weight_bits is None:
            key = "float"
        elif get_format(lq.weight_format).kind == "minifloat":
            key = lq.weight_format
        else:
            key = tensors[found[name]][0] if name in found else "unmatched"
        out.setdefault(key, []).append(name)
    packed = any(kind == "int4" for kind, _ in tensors.values())
    for name, lq in getattr(plan, "embeddings", {}).items():  # quantised embedding tables (int storage, per-row scales)
        out.setdefault("int4" if packed and lq.weight_bits <= 4 else "int8", []).append(name)
    for name, kind in plan.unsupported.items():  # layers kept float (embedding tables not asked to be quantised)
        if kind == "Embedding":
            out.setdefault("float", []).append(name)
    return out


def layer_weight_integers(qmodel: torch.nn.Module) -> dict[str, np.ndarray]:
    """``{layer: integer weights}`` (Brevitas's ``quant_weight().int()``, zero point included) of
    the integer-quantised layers of a workbench-quantised model."""
    from ..core.formats import get_format

    plan = getattr(qmodel, "workbench_plan", None)
    modules = dict(qmodel.named_modules())
    out = {}
    for name, lq in (plan.layers.items() if plan is not None else ()):
        if lq.weight_bits is None or get_format(lq.weight_format).kind == "minifloat" or name not in modules:
            continue
        try:
            with torch.no_grad():
                out[name] = modules[name].quant_weight().int().detach().cpu().numpy().astype(np.int64)
        except (AttributeError, RuntimeError, TypeError, ValueError):  # a layer Brevitas gives no integer view of: left unmatched
            continue
    return out


def match_layer_weights(qmodel: torch.nn.Module, tensors: dict[str, np.ndarray]) -> dict[str, str]:
    """``{layer: tensor name}``: which of a file's integer tensors holds each layer's weights. A
    tensor matches a layer when it has the layer's weight shape (or its transpose, for 2-D) and
    differs from the layer's integers by one constant per output channel (the u8 encoding's +128,
    a packed UINT4's zero point of 8, a per-channel zero point): node names are not used (Brevitas
    names ONNX nodes after the last part of a module's path, and ConvInteger nodes are the
    export's own). Each tensor serves one layer, first come first served in the model's layer order."""
    layers = layer_weight_integers(qmodel)
    taken: set[str] = set()
    wide: dict[str, np.ndarray] = {}  # int64 copies, made once, of the tensors whose shape fits a layer
    out = {}
    for layer, ints in layers.items():
        for name, t in tensors.items():
            shape = tuple(np.shape(t))
            if name in taken or (shape != ints.shape and shape[::-1] != ints.shape):
                continue
            if name not in wide:
                wide[name] = np.asarray(t).astype(np.int64)
            t = wide[name]
            for cand in (t, t.T if t.ndim == 2 else None):
                if cand is None or cand.shape != ints.shape:
                    continue
                d = (cand - ints).reshape(ints.shape[0], -1)
                if (d == d[:, :1]).all():
                    out[layer] = name
                    taken.add(name)
                    break
            if layer in out:
                break
    return out


def qonnx_storage(path: str | os.PathLike, qmodel: torch.nn.Module | None = None) -> dict:
    """What a QONNX file's bytes hold: ``qonnx_weight_bytes_packed`` (integer weights of at most 4
    bits, two a byte in uint8 initialisers unpacked in the graph), ``qonnx_int8_bytes`` /
    ``qonnx_int16_bytes`` (integer weights in 8- / 16-bit initialisers), ``qonnx_float_bytes``
    (float initialisers: scales, biases, float weights), ``qonnx_graph_bytes`` (the rest: nodes,
    names, shapes) and ``qonnx_packing``: ``{"int4" | "int8" | "int16" | "float": [layers]}`` (layers
    found by their weight integers: the Quant nodes' inputs are computed from the constants and
    requantised as the Quant node does; None without ``qmodel``'s plan)."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    storage: dict[str, str] = {}  # initialiser -> int4 / int8 / int16
    for n in graph.node:
        if n.op_type in ("BitwiseAnd", "BitShift") and n.input[0] in inits:
            storage[n.input[0]] = "int4"
    for name, t in inits.items():
        if name not in storage and len(t.dims) >= 1:
            if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
                storage[name] = "int8"
            elif t.data_type in (onnx.TensorProto.INT16, onnx.TensorProto.UINT16):
                storage[name] = "int16"
    out = {"qonnx_weight_bytes_packed": 0, "qonnx_int8_bytes": 0, "qonnx_int16_bytes": 0, "qonnx_float_bytes": 0}
    for name, t in inits.items():
        key = ({"int4": "qonnx_weight_bytes_packed", "int8": "qonnx_int8_bytes", "int16": "qonnx_int16_bytes"}.get(storage.get(name))
               or ("qonnx_float_bytes" if t.data_type in _FLOATS else None))
        if key is not None:
            out[key] += _tensor_bytes(t)
    out["qonnx_graph_bytes"] = Path(path).stat().st_size - sum(out.values())
    # each weight Quant node: its input computed from the constants, its integers, and how they are stored
    quants = [n for n in graph.node if n.op_type == "Quant" and all(i in inits for i in n.input[1:4])]
    constant_nodes, known = [], set(inits)
    for n in graph.node:
        if n.domain in ("", "ai.onnx") and all(i in known for i in n.input if i):
            constant_nodes.append(n)
            known.update(n.output)
    wanted = [q.input[0] for q in quants if q.input[0] in known]
    values = {name: numpy_helper.to_array(inits[name]) for name in wanted if name in inits}
    computed = [w for w in wanted if w not in inits]
    if computed:
        sub = onnx.helper.make_graph(constant_nodes, "weights", [], [onnx.helper.make_tensor_value_info(w, onnx.TensorProto.FLOAT, None) for w in computed],
                                     initializer=list(graph.initializer))
        sub_model = onnx.helper.make_model(sub, opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")])
        values.update(zip(computed, ReferenceEvaluator(sub_model).run(None, {})))
    tensors = {}
    for q in quants:
        if q.input[0] not in values:
            continue
        from .packing import _qonnx_integers

        scale, zeropt, bw = (numpy_helper.to_array(inits[i]) for i in q.input[1:4])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in q.attribute}
        ints = _qonnx_integers(np.asarray(values[q.input[0]], np.float32), scale, zeropt, int(bw), bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)))
        src, seen = q.input[0], set()
        stack = [src]
        kinds = set()
        while stack:  # the initialisers this weight is computed from
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in storage:
                kinds.add(storage[name])
            if name in producer:
                stack.extend(producer[name].input)
        kind = "int4" if "int4" in kinds else "int16" if "int16" in kinds else "int8" if "int8" in kinds else "float"
        tensors[q.name or q.output[0]] = (kind, ints)
    out["qonnx_packing"] = _layers_by_storage(qmodel, tensors)
    return out


LAYER_OPS = ("Conv", "Gemm", "MatMul")


def quantised_layer_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv / Gemm / MatMul nodes of a QCDQ graph whose weight is a quantised
    constant (read through DequantizeLinear, possibly behind a Transpose), and the ConvInteger
    nodes the export wrote for convolutions with float outputs and MatMulInteger nodes for layers
    with dynamic activations, and MatMul nodes both of whose inputs are dequantised activations
    (quantised attention matmuls): the layers that should run as integer kernels."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    names = []
    for node in graph.node:
        if node.op_type in ("ConvInteger", "MatMulInteger"):
            names.append(node.name)
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        src = producer.get(node.input[1])
        if src is not None and src.op_type == "Transpose":
            src = producer.get(src.input[0])
        weight = producer.get(src.input[0]) if src is not None else None
        if src is not None and src.op_type == "DequantizeLinear" and (
                src.input[0] in consts or weight is not None and weight.op_type == "Clip" and weight.input[0] in consts):  # Clip: s8 narrow range
            names.append(node.name)
        elif src is not None and src.op_type == "Mul" and producer.get(src.input[0]) is not None and producer[src.input[0]].op_type == "Cast" \
                and producer[src.input[0]].input[0] in consts:  # a quantised weight the export dequantises by Cast and Mul (float output)
            names.append(node.name)
        elif node.op_type == "MatMul" and all(_dequantized_activation(producer.get(i), consts) for i in node.input[:2]):
            names.append(node.name)  # an attention matmul with both inputs quantised (attention_bits)
    return names


def _dequantized_activation(node, consts) -> bool:
    return node is not None and node.op_type == "DequantizeLinear" and node.input[0] not in consts


def int_kernel_exceptions(path: str | os.PathLike, optimized: onnx.ModelProto | None = None) -> dict[str, str]:
    """``{node name: why}`` for each quantised layer (:func:`quantised_layer_nodes`) that
    onnxruntime still runs as a float Conv / Gemm / MatMul after its graph optimisations (at the
    level :func:`session` uses); empty when every one runs as an integer kernel."""
    model = onnx.load(str(path))
    if optimized is None:
        optimized = optimized_graph(path)
    still_float = {n.name for n in optimized.graph.node if n.op_type in LAYER_OPS + ("FusedConv", "FusedGemm")}  # Fused*: float, fused with its activation
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers = collections.Counter(i for n in graph.node for i in n.input)
    out = {}
    for name in quantised_layer_nodes(model):
        if name not in still_float:
            continue
        node = next(n for n in graph.node if n.name == name)
        src = producer.get(node.input[0])
        if src is None or src.op_type != "DequantizeLinear":
            why = f"its input is not quantised (read from {src.op_type if src is not None else 'a graph input'})"
        elif readers[src.output[0]] > 1:
            why = "its input DequantizeLinear has several readers"
        else:
            why = "onnxruntime has no integer kernel for this pattern (output read in float?)"
        out[name] = why
    return out
