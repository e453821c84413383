"""Packed weight storage: QCDQ weights, embedding tables and ConvInteger weights of at most 4 bits
as ONNX INT4 / UINT4 (opset 21), and QONNX weights as integers at their bit width (2-4 bits two a
byte); the ``pack`` choice both exporters take. Each keeps the values the graph computes bit for
bit."""

from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

from ..infra.errors import ExportError
from .onnx_graph import _producers, prune_unused
from .onnx_io import PACKED_OPSET

PACK_MODES = {True: "int4", False: "none", "int4": "int4", "none": "none"}
PACKED_TYPES = (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)


def packing_wanted(qmodel: nn.Module, pack: bool | str) -> bool:
    """Whether :func:`workbench.export.qcdq.export_qcdq` packs weights: ``pack`` asks for it and the model holds integer
    weights of at most 4 bits. A packed format the QCDQ export cannot carry (``"int2"``...) is a
    one-line ExportError, raised before any file is written."""
    from ..core.formats import get_format

    if not isinstance(pack, (bool, str)) or pack not in PACK_MODES:
        raise ExportError(f"pack {pack!r}: the QCDQ (onnxruntime) export packs weights of at most 4 bits as ONNX INT4/UINT4 (opset {PACKED_OPSET}) "
                          f"or not at all; expected one of True, False, 'int4', 'none'")
    if PACK_MODES[pack] == "none":
        return False
    plan = getattr(qmodel, "workbench_plan", None)
    return any(lq.weight_bits is not None and lq.weight_bits <= 4 and get_format(lq.weight_format).kind != "minifloat"
               for lq in (plan.layers.values() if plan is not None else ())) or \
        any(lq.weight_bits <= 4 for lq in getattr(plan, "embeddings", {}).values())


def resolve_pack(pack: bool | str) -> str:
    """``"int4"`` or ``"none"`` for a ``pack`` choice (True / ``"int4"``: weights of at most 4 bits
    two a byte, every integer weight stored as an integer; False / ``"none"``: the exporters' own
    storage: int8 containers in QCDQ, float weights in QONNX). Anything else is a one-line
    :class:`ExportError`, raised before any file is written."""
    if not isinstance(pack, (bool, str)) or pack not in PACK_MODES:
        raise ExportError(f"pack {pack!r}: weights of at most 4 bits are stored two a byte or not at all; "
                          f"expected one of True, False, 'int4', 'none'")
    return PACK_MODES[pack]


def _raise_opset(model: onnx.ModelProto, opset: int) -> bool:
    """Raise the default-domain opset to ``opset`` (onnx's version converter adapts the nodes
    whose signature changed, e.g. ReduceMean's axes) and the IR version to one that carries INT4.
    False (the model untouched) if the converter cannot convert the graph."""
    from onnx import version_converter

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current < opset:
        value_info = list(model.graph.value_info)
        try:
            converted = version_converter.convert_version(model, opset)
        except Exception:  # the converter raises its own types; the weights then stay in int8 containers
            return False
        model.CopyFrom(converted)
        del model.graph.value_info[:]  # the converter infers shapes; keep the file as lean as it was
        model.graph.value_info.extend(value_info)
    model.ir_version = max(model.ir_version, 10)
    return True


def pack_low_bit_weights(model: onnx.ModelProto) -> int:
    """Store every constant 8-bit weight tensor feeding DequantizeLinear whose integers (less the
    zero point) fit in 4 bits as a packed INT4 / UINT4 initialiser, two values a byte, followed by
    a Cast back to its 8-bit type.

    uint8 weights w with zero point z (the ``u8`` encoding) become UINT4 ``w - z + 8`` with zero
    point 8; int8 weights with zero point 0 become INT4 ``w``. Both compute the same real values
    bit for bit. onnxruntime folds the Cast of a constant at session start, so the
    DequantizeLinear still fuses into QLinearConv / QGemm (a DequantizeLinear reading INT4
    directly runs as float Conv: 2x slower on ResNet-8 here). The opset is raised to 21 when
    anything is packed; a graph onnx's version
    converter cannot raise to opset 21 is left unpacked (the summary's ``packing`` then lists its
    layers under ``int8``). Returns the number of tensors packed."""
    import ml_dtypes

    graph = model.graph
    producer = _producers(graph)
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    plans = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits and node.input[0] not in producer:
            continue
        src = node.input[0]
        clip = producer.get(src)
        if clip is not None and clip.op_type == "Clip" and readers.get(src) == 1:
            src = clip.input[0]
        if src not in inits or readers.get(src) != 1 and src != node.input[0]:
            continue
        w = numpy_helper.to_array(inits[src])
        if w.dtype not in (np.uint8, np.int8) or w.ndim < 2:
            continue
        zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else np.zeros((), w.dtype)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        zb = zp.astype(np.int16)
        if zb.ndim == 1 and zb.size > 1:
            shape = [1] * w.ndim
            shape[axis] = -1
            zb = zb.reshape(shape)
        ints = w.astype(np.int16) - zb
        if ints.min() < -8 or ints.max() > 7:
            continue
        if w.dtype == np.uint8:
            packed, new_zp = (ints + 8).astype(ml_dtypes.uint4), np.full(zp.shape, 8, np.uint8)
        elif not zp.any():
            packed, new_zp = ints.astype(ml_dtypes.int4), None
        else:
            continue
        plans.append((node, packed, new_zp, onnx.helper.np_dtype_to_tensor_dtype(w.dtype)))
    if not plans or not _raise_opset(model, PACKED_OPSET):
        return 0
    graph = model.graph
    by_output = {n.output[0]: n for n in graph.node}
    casts = []
    for node, packed, new_zp, to in plans:
        node = by_output[node.output[0]]  # the converter copies the graph
        base = node.name or node.output[0]
        w_name = f"{base}/weight_4bit"
        graph.initializer.append(numpy_helper.from_array(packed, w_name))
        casts.append(onnx.helper.make_node("Cast", [w_name], [f"{base}/weight_8bit"], to=to, name=f"{base}/Cast"))
        node.input[0] = f"{base}/weight_8bit"
        if new_zp is not None:
            graph.initializer.append(numpy_helper.from_array(new_zp, f"{base}/zero_point_4bit"))
            node.input[2] = f"{base}/zero_point_4bit"
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    prune_unused(model)
    return len(plans)


def pack_embedding_tables(model: onnx.ModelProto) -> int:
    """Store each int8 table that a Gather reads (:func:`workbench.export.rewrites.gather_quantized_rows`) and whose values
    fit in 4 bits as a packed INT4 initialiser, two values a byte, with a Cast back to int8 in
    front of the Gather (onnxruntime folds the Cast of a constant at session start). Raises the
    opset to 21 as :func:`pack_low_bit_weights` does (a graph the converter cannot raise stays
    unpacked). Returns the number of tables packed."""
    import ml_dtypes

    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    inits = {i.name: i for i in model.graph.initializer}
    wanted = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits or readers.get(node.input[0]) != 1:
            continue
        table = numpy_helper.to_array(inits[node.input[0]])
        if table.dtype == np.int8 and table.ndim == 2 and table.size and table.min() >= -8 and table.max() <= 7:
            wanted.append(node.input[0])
    if not wanted or not _raise_opset(model, PACKED_OPSET):
        return 0
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    casts = []
    for name in wanted:
        table = numpy_helper.to_array(inits[name])
        graph.initializer.remove(inits[name])
        graph.initializer.append(numpy_helper.from_array(table.astype(ml_dtypes.int4), f"{name}_4bit"))
        casts.append(onnx.helper.make_node("Cast", [f"{name}_4bit"], [name], to=onnx.TensorProto.INT8, name=f"{name}/Cast"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(wanted)


def pack_conv_integer_weights(model: onnx.ModelProto) -> int:
    """Store the weights of ConvInteger nodes (:func:`workbench.export.fusion.conv_integer_for_float_outputs`) and of
    ``Cast -> Mul`` weights (:func:`workbench.export.fusion.float_weights_for_float_outputs`; INT4 read by the Cast to
    float itself) whose integers (less the zero point) fit in 4 bits packed, as
    :func:`pack_low_bit_weights` does for weights read through DequantizeLinear: uint8 w with zero point z becomes UINT4 ``w - z + 8``
    with zero point 8, int8 w with zero point 0 INT4 ``w``, each followed by a Cast back to its
    8-bit type (ConvInteger takes 8-bit weights; onnxruntime folds the Cast of a constant at
    session start). The same integer sums bit for bit. Raises the opset to 21 when anything is
    packed. Returns the number of tensors packed."""
    import ml_dtypes

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers = collections.Counter(i for n in graph.node for i in n.input)
    plans = []
    for node in graph.node:  # float_weights_for_float_outputs: Cast(int8 weight -> float) -> Mul(scale), zero point 0
        if node.op_type == "Cast" and node.input[0] in inits and readers[node.input[0]] == 1 and inits[node.input[0]].data_type == onnx.TensorProto.INT8:
            w = numpy_helper.to_array(inits[node.input[0]])
            if w.ndim >= 2 and w.min() >= -8 and w.max() <= 7:
                plans.append((node.output[0], w.astype(ml_dtypes.int4), None, None))
    for node in graph.node:
        if node.op_type != "ConvInteger" or len(node.input) < 2 or node.input[1] not in inits or readers[node.input[1]] != 1:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        zp = numpy_helper.to_array(inits[node.input[3]]) if len(node.input) > 3 and node.input[3] in inits else np.zeros((), w.dtype)
        if w.dtype not in (np.uint8, np.int8) or zp.size != 1:
            continue
        ints = w.astype(np.int16) - zp.astype(np.int16).reshape(())
        if ints.min() < -8 or ints.max() > 7:
            continue
        if w.dtype == np.uint8:
            plans.append((node.output[0], (ints + 8).astype(ml_dtypes.uint4), np.array(8, np.uint8), onnx.TensorProto.UINT8))
        elif not zp.any():
            plans.append((node.output[0], ints.astype(ml_dtypes.int4), None, onnx.TensorProto.INT8))
    if not plans or not _raise_opset(model, PACKED_OPSET):
        return 0
    graph = model.graph
    by_output = {n.output[0]: n for n in graph.node}
    casts = []
    for out, packed, new_zp, to in plans:
        node = by_output[out]  # the converter copies the graph
        base = node.name or out
        w_name = f"{base}/weight_4bit"
        graph.initializer.append(numpy_helper.from_array(packed, w_name))
        if to is None:  # a Cast to float reads the INT4 tensor itself
            node.input[0] = w_name
            continue
        casts.append(onnx.helper.make_node("Cast", [w_name], [f"{base}/weight_8bit"], to=to, name=f"{base}/Cast4"))
        node.input[1] = f"{base}/weight_8bit"
        if new_zp is not None:
            graph.initializer.append(numpy_helper.from_array(new_zp, f"{base}/zero_point_4bit"))
            while len(node.input) < 4:
                node.input.append("")
            node.input[3] = f"{base}/zero_point_4bit"
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    prune_unused(model)
    return len(plans)


# ------------------------------------------------------------------------- packed QONNX weights
# Brevitas's QONNX export stores every weight as a float initialiser read by a Quant node, so the
# file is as big as the float model's. Here each such weight becomes its integers at their bit
# width (computed exactly as qonnx's Quant computes them), dequantised by standard ONNX nodes in
# front of the same Quant node: Quant(dequantised) gives back the same values bit for bit, so
# qonnx's executor computes what it computed before, and qonnx's cleanup (FoldConstants) folds the
# new nodes into a float initialiser again (the form FINN and hls4ml read). Sub-byte integers
# cannot be INT4 tensors here: onnxruntime's Python API, through which qonnx executes standard
# nodes one by one (and folds constants), neither takes nor returns INT4 arrays. They are packed
# two a byte into a uint8 initialiser and unpacked with BitShift / BitwiseAnd (opset 18).

QONNX_PACK_OPSET = 18  # BitwiseAnd


def _qonnx_integers(w: np.ndarray, scale: np.ndarray, zeropt: np.ndarray, bits: int, signed: bool, narrow: bool) -> np.ndarray:
    """The integers qonnx's Quant computes for ``w`` (round half to even after clamping)."""
    from qonnx.custom_op.general.quant import max_int, min_int

    y = w / scale + zeropt
    y = np.where(y > max_int(signed, narrow, bits), np.float32(max_int(signed, narrow, bits)), y)
    y = np.where(y < min_int(signed, narrow, bits), np.float32(min_int(signed, narrow, bits)), y)
    return np.round(y)


def _qonnx_quant(x, scale, zeropt, bits, signed, narrow, rounding):
    from qonnx.custom_op.general.quant import quant

    return np.asarray(quant(x, scale, zeropt, bits, signed, narrow, rounding), dtype=np.float32)


def pack_qonnx_weights(model: onnx.ModelProto, pack: bool | str = True) -> dict[str, int]:
    """Store the float weight of every QONNX ``Quant`` node with a constant input, scale, zero point
    and bit width of 2-16 bits as integers: 2-4 bits packed two a byte (a uint8 initialiser,
    unpacked by BitwiseAnd / BitShift / Concat / Reshape; needs opset 18, else int8 containers),
    5-8 bits as INT8 / UINT8, 9-16 bits as INT16 / UINT16; then ``Cast`` to float, ``Sub`` the
    nibble offset and the zero point (each only when not 0) and ``Mul`` by the scale feed the same
    Quant node. Each tensor is checked before it is replaced: the Quant node's output from the new
    input must equal its output from the old one, bit for bit (else it stays float). With
    ``pack="none"`` (False) nothing changes. Returns ``{"int4": n, "int8": n, "int16": n}``: the
    tensors stored each way."""
    counts = {"int4": 0, "int8": 0, "int16": 0}
    if resolve_pack(pack) == "none":
        return counts
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nibbles = opset >= QONNX_PACK_OPSET
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    new_nodes, new_inits, value_info = [], [], []
    shared: dict[str, np.ndarray] = {}
    U8, F32 = onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT
    for node in graph.node:
        if node.op_type != "Quant" or len(node.input) < 4 or any(i not in inits for i in node.input[:4]) or readers.get(node.input[0]) != 1:
            continue
        w, scale, zeropt, bw = (numpy_helper.to_array(inits[i]) for i in node.input[:4])
        if w.dtype != np.float32 or w.ndim < 1 or bw.size != 1 or float(bw) != int(bw) or not 2 <= int(bw) <= 16:
            continue
        bits = int(bw)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
        rounding = attrs.get("rounding_mode", b"ROUND")
        rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
        if rounding.upper() not in ("ROUND", "HALF_EVEN"):
            continue
        q = _qonnx_integers(w, scale, zeropt, bits, signed, narrow)
        kind = "int4" if bits <= 4 and nibbles else "int8" if bits <= 8 else "int16"
        base = node.name or node.output[0]  # new tensors: <Quant node>.<step>; new nodes unnamed (names are optional)
        steps: list = []  # (node, output element type)
        offset = 8 if kind == "int4" and signed else 0  # signed nibbles hold q + 8
        if kind == "int4":
            nib = (q.astype(np.int16) + offset).astype(np.uint8).reshape(-1)
            half = (nib.size + 1) // 2
            nib = np.concatenate([nib, np.zeros(2 * half - nib.size, np.uint8)])
            stored = (nib[:half] | (nib[half:] << 4)).astype(np.uint8)  # low nibbles: the first half; high: the second
            ints_name = f"{base}.q"
            shape_name = "pack.shape_" + "x".join(map(str, w.shape))
            shared.update({"pack.mask": np.array(15, np.uint8), "pack.shift": np.array(4, np.uint8), shape_name: np.array(w.shape, np.int64)})
            steps += [(onnx.helper.make_node("BitwiseAnd", [ints_name, "pack.mask"], [f"{base}.lo"]), U8, [half]),
                      (onnx.helper.make_node("BitShift", [ints_name, "pack.shift"], [f"{base}.hi"], direction="RIGHT"), U8, [half]),
                      (onnx.helper.make_node("Concat", [f"{base}.lo", f"{base}.hi"], [f"{base}.n"], axis=0), U8, [2 * half])]
            src = f"{base}.n"
            if 2 * half != w.size:
                size_name = f"pack.size_{w.size}"
                shared.update({"pack.zero": np.array([0], np.int64), size_name: np.array([w.size], np.int64)})
                steps.append((onnx.helper.make_node("Slice", [src, "pack.zero", size_name], [f"{base}.t"]), U8, [w.size]))
                src = f"{base}.t"
            steps.append((onnx.helper.make_node("Reshape", [src, shape_name], [f"{base}.r"]), U8, list(w.shape)))
            src, ints = f"{base}.r", (q.astype(np.int16) + offset).astype(np.uint8)
        else:
            int_type = {("int8", True): np.int8, ("int8", False): np.uint8, ("int16", True): np.int16, ("int16", False): np.uint16}[kind, signed]
            stored = ints = q.astype(int_type)
            ints_name = src = f"{base}.q"
        steps.append((onnx.helper.make_node("Cast", [src], [f"{base}.f"], to=F32), F32, list(w.shape)))
        deq, cur = ints.astype(np.float32), f"{base}.f"
        if offset:
            shared["pack.offset8"] = np.array(offset, np.float32)
            steps.append((onnx.helper.make_node("Sub", [cur, "pack.offset8"], [f"{base}.o"]), F32, list(w.shape)))
            deq, cur = deq - np.float32(offset), f"{base}.o"
        if np.any(zeropt != 0):
            steps.append((onnx.helper.make_node("Sub", [cur, node.input[2]], [f"{base}.z"]), F32, list(w.shape)))
            deq, cur = (deq - zeropt).astype(np.float32), f"{base}.z"
        steps.append((onnx.helper.make_node("Mul", [cur, node.input[1]], [f"{base}.w"]), F32, list(w.shape)))
        deq = (deq * scale).astype(np.float32)
        if not np.array_equal(_qonnx_quant(deq, scale, zeropt, bw, signed, narrow, rounding), _qonnx_quant(w, scale, zeropt, bw, signed, narrow, rounding)):
            continue  # the Quant node would not give back the same values: this weight stays float
        new_inits.append(numpy_helper.from_array(stored, ints_name))
        value_info.append(onnx.helper.make_tensor_value_info(ints_name, onnx.helper.np_dtype_to_tensor_dtype(stored.dtype), list(stored.shape)))
        for step, elem, shape in steps:
            value_info.append(onnx.helper.make_tensor_value_info(step.output[0], elem, shape))
        node.input[0] = f"{base}.w"
        new_nodes += [step for step, _, _ in steps]
        counts[kind] += 1
    if not new_nodes:
        return counts
    for name, value in shared.items():
        new_inits.append(numpy_helper.from_array(value, name))
        value_info.append(onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    graph.initializer.extend(new_inits)
    graph.value_info.extend(value_info)  # qonnx executes a node only when every tensor it reads has a shape
    known = {v.name for v in graph.value_info} | {v.name for v in graph.input}
    for name in dict.fromkeys(i for n in new_nodes for i in n.input):  # the scales and zero points the new nodes read
        if name not in known and name in inits:
            graph.value_info.append(onnx.helper.make_tensor_value_info(name, inits[name].data_type, list(inits[name].dims)))
            known.add(name)
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    prune_unused(model)
    used = {i for n in graph.node for i in n.input} | {o for n in graph.node for o in n.output}
    for vi in [v for v in graph.value_info if v.name not in used]:
        graph.value_info.remove(vi)
    return counts
