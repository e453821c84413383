"""Run a QONNX graph fast and exactly as qonnx does: qonnx's quantisers (``Quant``,
``BipolarQuant``, ``Trunc``) lowered to standard ONNX ops that compute qonnx's own numpy
arithmetic step for step in float32, the constant part (weights and their quantisers) computed
once, the whole graph run in one onnxruntime session with its graph optimisations and weight
prepacking off (so every node runs the kernel qonnx's node-by-node executor runs). A graph with
another qonnx op runs in qonnx's executor, and the result says why."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ..infra.errors import ExportError

STANDARD_DOMAINS = ("", "ai.onnx")
LOWERED_OPS = ("Quant", "BipolarQuant", "Trunc")
EXECUTORS = ("auto", "onnxruntime", "qonnx")
_RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli")
_ROUNDING = ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")


class _Builder:
    """New nodes and constants, named after the node they replace."""

    def __init__(self, prefix: str):
        self.prefix, self.count, self.nodes, self.inits = prefix, 0, [], []

    def name(self) -> str:
        self.count += 1
        return f"{self.prefix}__l{self.count}"

    def const(self, value) -> str:
        name = self.name()
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None) -> str:
        out = out or self.name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out if out.startswith(self.prefix) else f"{self.prefix}__{op_type}"))
        return out

    def rounding(self, y: str, mode: str, out: str | None = None) -> str:
        """qonnx's ``resolve_rounding_mode(mode)(y)`` in ONNX ops."""
        mode = mode.upper()
        if mode in ("ROUND", "HALF_EVEN"):
            return self.op("Round", y, out=out)  # np.round: half to even, as ONNX Round
        if mode in ("CEIL", "FLOOR"):
            return self.op(mode.capitalize(), y, out=out)
        sign, mag = self.op("Sign", y), self.op("Abs", y)
        if mode == "UP":  # np.sign(x) * np.ceil(np.abs(x))
            mag = self.op("Ceil", mag)
        elif mode == "DOWN":  # np.fix: toward zero
            mag = self.op("Floor", mag)
        elif mode == "HALF_UP":  # np.sign(x) * np.floor(np.abs(x) + 0.5)
            mag = self.op("Floor", self.op("Add", mag, self.const(0.5)))
        else:  # HALF_DOWN: np.sign(x) * np.ceil(np.abs(x) - 0.5)
            mag = self.op("Ceil", self.op("Sub", mag, self.const(0.5)))
        return self.op("Mul", sign, mag, out=out)


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {(node.name or node.output[0])!r}"


def _lower_node(node, inst, consts: dict, b: _Builder) -> None:
    """Append the standard ops computing ``node`` as qonnx's ``execute_node`` does."""
    from qonnx.custom_op.general.bipolar_quant import BipolarQuant
    from qonnx.custom_op.general.intquant import IntQuant, max_int, min_int
    from qonnx.custom_op.general.trunc import Trunc_v1, Trunc_v2

    def param(i: int) -> np.ndarray:
        name = node.input[i] if i < len(node.input) else ""
        if name not in consts:
            raise ExportError(f"{_node_label(node)}: input {i} ({name or 'missing'}) is not a constant; "
                              "the lowering needs constant scales, zero points and bit widths")
        value = consts[name]
        if value.dtype != np.float32:
            raise ExportError(f"{_node_label(node)}: input {i} ({name}) is {value.dtype}; expected float32")
        return value

    def rounding_mode() -> str:
        mode = inst.get_nodeattr("rounding_mode")
        if mode.upper() not in _ROUNDING:
            raise ExportError(f"{_node_label(node)}: rounding mode {mode!r}; expected one of {', '.join(_ROUNDING)}")
        return mode

    x, out = node.input[0], node.output[0]
    if isinstance(inst, IntQuant):  # qonnx int_quant
        scale, zeropt, bw = param(1), param(2), param(3)
        if bw.size != 1:
            raise ExportError(f"{_node_label(node)}: bit width of shape {bw.shape}; expected a scalar")
        signed, narrow = inst.get_nodeattr("signed"), inst.get_nodeattr("narrow")
        y = b.op("Add", b.op("Div", x, node.input[1]), node.input[2])
        if bw == 1 and signed:  # qonnx: 1-bit signed is bipolar, no clamp or rounding
            y = b.op("Where", b.op("GreaterOrEqual", y, b.const(0.0)), b.const(1.0), b.const(-1.0))
        else:
            lo, hi = min_int(signed, narrow, bw), max_int(signed, narrow, bw)
            y = b.op("Max", b.op("Min", y, b.const(np.asarray(hi).astype(np.float32))), b.const(np.asarray(lo).astype(np.float32)))
            y = b.rounding(y, rounding_mode())
        b.op("Mul", b.op("Sub", y, node.input[2]), node.input[1], out=out)
    elif isinstance(inst, BipolarQuant):  # qonnx binary_quant
        param(1)
        y = b.op("Where", b.op("GreaterOrEqual", x, b.const(0.0)), b.const(1.0), b.const(-1.0))
        b.op("Mul", y, node.input[1], out=out)
    elif isinstance(inst, Trunc_v2):  # qonnx trunc_v2
        scale, zeropt, out_scale, out_bw = param(1), param(2), param(4), param(5)
        trunc_scale = 2 ** np.round(np.log2(out_scale / scale))
        signed, narrow = inst.get_nodeattr("signed"), inst.get_nodeattr("narrow")
        lo, hi = min_int(signed, narrow, out_bw), max_int(signed, narrow, out_bw)
        y = b.op("Round", b.op("Add", b.op("Div", x, node.input[1]), node.input[2]))
        y = b.op("Div", y, b.const(trunc_scale))
        y = b.op("Max", b.op("Min", y, b.const(np.asarray(hi).astype(np.float32))), b.const(np.asarray(lo).astype(np.float32)))
        y = b.rounding(y, rounding_mode())
        b.op("Mul", b.op("Sub", y, b.const(zeropt / trunc_scale)), node.input[4], out=out)
    elif isinstance(inst, Trunc_v1):  # qonnx trunc_v1
        scale, zeropt, in_bw, out_bw = param(1), param(2), param(3), param(4)
        y = b.op("Round", b.op("Add", b.op("Div", x, node.input[1]), node.input[2]))
        y = b.rounding(b.op("Div", y, b.const(2.0 ** (in_bw - out_bw))), rounding_mode())
        b.op("Mul", b.op("Sub", y, node.input[2]), node.input[1], out=out)
    else:
        raise ExportError(f"{_node_label(node)} (domain {node.domain}): a qonnx op with no standard-ONNX lowering here; "
                          f"lowered: {', '.join(LOWERED_OPS)}")


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in STANDARD_DOMAINS and n.attribute and n.attribute[0].HasField("t"):
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return consts


def lower_qonnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a QONNX model in standard ONNX ops only: each Quant / BipolarQuant / Trunc node
    replaced by the ops that compute qonnx's numpy implementation (``int_quant``,
    ``binary_quant``, ``trunc_v1`` / ``trunc_v2``, chosen by the model's qonnx opset as qonnx
    chooses) in the same order, in float32, with the clamp bounds computed by qonnx's own
    ``min_int`` / ``max_int``. Raises ExportError (one line, naming the node) where that cannot be
    done: another qonnx op, a non-constant or non-float32 scale / zero point / bit width, an
    unknown rounding mode, or integer datatype annotations (qonnx rounds those tensors as it
    runs)."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp, is_custom_op
    from qonnx.util.basic import get_preferred_qonnx_opset, get_sanitize_quant_tensors

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    opsets = {o.domain: o.version for o in out.opset_import}
    std = max(opsets.get("", 0), opsets.get("ai.onnx", 0))
    if std < 11:
        raise ExportError(f"ONNX opset {std}; the lowering needs opset 11 or later (Round, tensor Clip bounds)")
    if get_sanitize_quant_tensors():
        for a in graph.quantization_annotation:
            for kv in a.quant_parameter_tensor_names:
                if kv.key == "finn_datatype" and DataType[kv.value].is_integer():
                    raise ExportError(f"tensor {a.tensor_name!r} is annotated {kv.value}: qonnx's executor rounds it to integers as it runs; "
                                      "the lowering does not")
    consts = _constants(graph)
    nodes, inits, lowered_domains = [], [], set()
    for node in graph.node:
        if node.domain in STANDARD_DOMAINS or not is_custom_op(node.domain, node.op_type):
            nodes.append(node)  # qonnx runs it in onnxruntime too
            continue
        try:
            inst = getCustomOp(node, onnx_opset_version=opsets.get(node.domain, get_preferred_qonnx_opset()))
        except KeyError:
            raise ExportError(f"{_node_label(node)} (domain {node.domain}): qonnx has no implementation of it") from None
        b = _Builder(node.name or node.output[0])
        _lower_node(node, inst, consts, b)
        nodes += b.nodes
        inits += b.inits
        lowered_domains.add(node.domain)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    used = {n.domain for n in graph.node}
    keep = [o for o in out.opset_import if o.domain in STANDARD_DOMAINS or o.domain in used or o.domain not in lowered_domains]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


def fold_constants(model: onnx.ModelProto, threads: int = 1) -> int:
    """Compute, once, every node whose inputs are all constants (weights, their unpacking and
    quantisers) in an onnxruntime session like :func:`qonnx_session`'s, and store the tensors the
    rest of the graph reads as initialisers (in place). Returns the number of nodes folded."""
    graph = model.graph
    known = {i.name for i in graph.initializer}
    folded, rest = [], []
    for n in graph.node:
        subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)
        inputs = [i for i in n.input if i]
        if not subgraph and n.op_type not in _RANDOM_OPS and all(i in known for i in inputs) and (inputs or n.op_type == "Constant"):
            folded.append(n)
            known.update(n.output)
        else:
            rest.append(n)
    if not folded:
        return 0
    read = {i for n in rest for i in n.input} | {o.name for o in graph.output}
    wanted = [o for n in folded for o in n.output if o in read]
    if wanted:
        typed = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in list(typed.graph.value_info) + list(typed.graph.output)}
        if any(types.get(w, 0) == 0 for w in wanted):
            raise ExportError(f"tensor {next(w for w in wanted if not types.get(w))!r}: its type cannot be inferred, so it cannot be folded")
        inits_read = {i for n in folded for i in n.input}
        sub = helper.make_graph(folded, "constants", [], [helper.make_tensor_value_info(w, types[w], None) for w in wanted],
                                initializer=[i for i in graph.initializer if i.name in inits_read])
        sub_model = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        values = _session(sub_model.SerializeToString(), threads).run(None, {})
        del sub_model, sub
        graph.initializer.extend(numpy_helper.from_array(np.asarray(v), w) for w, v in zip(wanted, values))
        del values
    del graph.node[:]
    graph.node.extend(rest)
    still_read = {i for n in rest for i in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]  # the folded tensors' shapes are their initialisers'; the rest are re-inferred by onnxruntime
    return len(folded)


def _session(model_bytes: bytes, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fusions: each node runs its own kernel, as in qonnx
    so.add_session_config_entry("session.disable_prepacking", "1")  # weights read as qonnx feeds them, unpacked
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def qonnx_session(model: onnx.ModelProto | str | os.PathLike, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session running a QONNX model as qonnx's executor does:
    :func:`lower_qonnx`, :func:`fold_constants`, graph optimisations and prepacking off.
    Raises ExportError (one line) where the graph cannot be lowered or onnxruntime cannot load it."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    threads = threads or os.cpu_count() or 1
    lowered = lower_qonnx(model)
    fold_constants(lowered, threads)
    data = lowered.SerializeToString()
    del lowered
    try:
        return _session(data, threads)
    except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, NotImplemented)
        raise ExportError(f"onnxruntime cannot run the lowered graph: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def run_qonnx(model: onnx.ModelProto | str | os.PathLike, x: np.ndarray, executor: str = "auto") -> tuple[np.ndarray, str]:
    """The model's first output on each sample of ``x`` (run one sample at a time, as the QONNX
    export has batch 1), and which executor computed it: ``"onnxruntime"`` (:func:`qonnx_session`)
    or ``"qonnx"`` (qonnx's node-by-node ``execute_onnx``; ``"qonnx (<why>)"`` where ``"auto"``
    fell back to it because the graph cannot be lowered). ``executor``: ``"auto"`` (onnxruntime
    where the graph lowers), ``"onnxruntime"`` (an ExportError where it does not) or ``"qonnx"``."""
    if executor not in EXECUTORS:
        raise ExportError(f"executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    used = "qonnx"
    if executor != "qonnx":
        try:
            sess = qonnx_session(model)
        except ExportError as exc:
            if executor == "onnxruntime":
                raise
            used = f"qonnx ({exc})"
        else:
            name = sess.get_inputs()[0].name
            return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))]), "onnxruntime"
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    wrapper = ModelWrapper(model)
    iname, oname = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    return np.concatenate([execute_onnx(wrapper, {iname: x[i : i + 1]})[oname] for i in range(len(x))]), used
