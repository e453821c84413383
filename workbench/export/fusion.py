"""ONNX graph rewrites that let onnxruntime fuse a QCDQ graph into integer kernels (QLinearConv,
QGemm, ConvInteger, QLinearGlobalAveragePool): uint8 activations, one quantiser per tensor and one
dequantiser per reader, ReLU folded into unsigned quantisers, ConvInteger for float outputs, and
the small-CNN rewrites (zero Pads folded into convolutions, identity requantisers skipped,
quantisers moved in front of Flatten). Each keeps the values the graph computes bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_graph import (
    _constant,
    _consumers,
    _producers,
    _replace_node,
    _topological_sort,
)

# onnxruntime fuses DequantizeLinear -> Conv/Gemm/MatMul (-> QuantizeLinear) into QLinearConv /
# QGemm / MatMulIntegerToFloat only where (a) each DequantizeLinear has one reader, and (b) the
# activation type matches what the kernels take (uint8 with uint8 weights). Two things in
# Brevitas's QCDQ graphs break that: identical input quantisers of several layers (Q, K and V of
# an attention block) whose nodes and scale initializers are identical, which onnxruntime's
# common-subexpression elimination merges into one DequantizeLinear with several readers; and
# sub-8-bit signed activations, exported as QuantizeLinear(int8) -> Clip -> DequantizeLinear,
# which onnxruntime's own int8 -> uint8 conversion does not look through (it wants the pair
# adjacent), so the layer sees int8 activations beside uint8 weights and stays float.


def _activation_chains(graph: onnx.GraphProto):
    """``(quantize, clip or None, [dequantize, ...])`` for each QuantizeLinear of a non-constant
    tensor whose output is read only by DequantizeLinear nodes, directly or through one Clip (with
    constant bounds) that only DequantizeLinear nodes read."""
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    for q in list(graph.node):
        if q.op_type != "QuantizeLinear" or _constant(graph, q.input[0]) is not None or q.output[0] in outputs:
            continue
        users = consumers.get(q.output[0], [])
        clip = None
        if len(users) == 1 and users[0].op_type == "Clip" and users[0].input[0] == q.output[0]:
            clip = users[0]
            if clip.output[0] in outputs or any(_constant(graph, b) is None for b in clip.input[1:] if b):
                continue
            users = consumers.get(clip.output[0], [])
        if users and all(u.op_type == "DequantizeLinear" and u.input[0] == (clip or q).output[0] for u in users):
            yield q, clip, users


def activations_to_uint8(model: onnx.ModelProto) -> int:
    """Re-encode int8 activation quantisers as uint8 (zero point + 128, Clip bounds + 128).

    ``saturate_u8(round(x / s) + zp + 128) == saturate_s8(round(x / s) + zp) + 128`` and the
    Clip and DequantizeLinear shift by the same 128, so the graph computes the same values bit for
    bit. onnxruntime does this itself for an adjacent QuantizeLinear -> DequantizeLinear pair but
    not through the Clip of a sub-8-bit activation; uint8 activations are what its integer kernels
    take beside uint8 (or int8) weights. Returns the number of quantisers re-encoded."""
    graph = model.graph
    count = 0
    for q, clip, dqs in list(_activation_chains(graph)):
        zp = _constant(graph, q.input[2]) if len(q.input) > 2 and q.input[2] else None
        if zp is None or zp.dtype != np.int8 or any(len(d.input) < 3 or d.input[2] != q.input[2] for d in dqs):
            continue
        base = q.name or q.output[0]
        zp_name = f"{base}/zero_point_u8"
        graph.initializer.append(numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), zp_name))
        q.input[2] = zp_name
        for d in dqs:
            d.input[2] = zp_name
        if clip is not None:
            for j in (1, 2):
                if j < len(clip.input) and clip.input[j]:
                    bound = _constant(graph, clip.input[j])
                    name = f"{clip.name or clip.output[0]}/bound{j}_u8"
                    graph.initializer.append(numpy_helper.from_array((bound.astype(np.int16) + 128).astype(np.uint8), name))
                    clip.input[j] = name
        for vi in [v for v in graph.value_info if v.name in (q.output[0], clip.output[0] if clip is not None else "")]:
            graph.value_info.remove(vi)
        count += 1
    return count


def _quantizer_key(graph: onnx.GraphProto, q, clip) -> tuple:
    def value(name):
        a = _constant(graph, name) if name else None
        return None if a is None else (a.dtype.str, a.shape, a.tobytes())

    attrs = tuple(sorted((a.name, onnx.helper.get_attribute_value(a)) for a in q.attribute))
    bounds = None if clip is None else tuple(value(b) for b in clip.input[1:])
    return (q.input[0], value(q.input[1]), value(q.input[2]) if len(q.input) > 2 else None, attrs, bounds)


def one_quantizer_per_tensor(model: onnx.ModelProto) -> int:
    """Merge QuantizeLinear (-> Clip) chains that quantise the same tensor with the same scale,
    zero point and range (Q, K and V each quantising their shared input): the DequantizeLinear
    nodes of the merged chains read the one kept. The same values, computed once. Returns the
    number of chains removed (prune_unused drops their nodes)."""
    graph = model.graph
    kept: dict[tuple, object] = {}
    merged = 0
    for q, clip, dqs in list(_activation_chains(graph)):
        key = _quantizer_key(graph, q, clip)
        if None in key[1:3]:
            continue
        if key not in kept:
            kept[key] = (clip or q).output[0]
            continue
        for d in dqs:
            d.input[0] = kept[key]
        merged += 1
    if merged:
        _topological_sort(graph)
    return merged


def one_dequantize_per_reader(model: onnx.ModelProto) -> int:
    """Give every activation DequantizeLinear with several readers one copy per reader, each with
    its own scale and zero-point initializers (copies of the same values), so that no graph
    optimisation (onnxruntime's common-subexpression elimination compares inputs by name) merges
    them back; onnxruntime fuses a DequantizeLinear into an integer kernel only when it has one
    reader. Activation QuantizeLinear / DequantizeLinear nodes get their own quantisation
    parameters too. Returns the number of DequantizeLinear nodes added."""
    graph = model.graph
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    added = 0
    nodes = list(graph.node)
    for dq in nodes:
        if dq.op_type != "DequantizeLinear" or _constant(graph, dq.input[0]) is not None or dq.output[0] in outputs:
            continue
        readers = consumers.get(dq.output[0], [])
        for k, reader in enumerate(readers[1:], start=1):
            copy = onnx.NodeProto()
            copy.CopyFrom(dq)
            copy.name = f"{dq.name or dq.output[0]}/reader{k}"
            copy.output[0] = f"{dq.output[0]}/reader{k}"
            for j, name in enumerate(reader.input):
                if name == dq.output[0]:
                    reader.input[j] = copy.output[0]
            graph.node.insert(list(graph.node).index(dq) + 1, copy)
            added += 1
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or _constant(graph, node.input[0]) is not None:
            continue
        for j in (1, 2):
            if j < len(node.input) and node.input[j]:
                value = _constant(graph, node.input[j])
                if value is not None:
                    name = f"{node.name or node.output[0]}/qparam{j}"
                    graph.initializer.append(numpy_helper.from_array(value, name))
                    node.input[j] = name
    return added


def unsigned_after_relu(model: onnx.ModelProto) -> int:
    """Re-encode an int8 activation quantiser with zero point 0 that reads a Relu output as uint8
    with zero point 0 and a Clip to its old upper bound (127, or a sub-8-bit one).

    The input is never negative, so ``saturate_s8(round(x / s))`` and
    ``min(saturate_u8(round(x / s)), 127)`` are the same integers, bit for bit. onnxruntime then
    drops the Relu (a uint8 zero point of 0 clamps at zero already) and fuses
    ``Conv -> Relu -> QuantizeLinear`` into QLinearConv. Run before :func:`activations_to_uint8`.

    A float ``Clip`` with constant bounds ``0 <= lo`` (ReLU6, read only by the quantiser; the
    per-module path's next layer quantises its input after it) is moved past the quantiser as
    integer bounds ``rint(lo / s)`` and ``rint(hi / s)``: rounding is monotone, so
    ``round(clip(x, lo, hi) / s) == clip(round(x / s), rint(lo / s), rint(hi / s))`` bit for bit,
    and onnxruntime, which drops a float Clip only when the quantiser's whole range lies inside it,
    then fuses ``Conv -> QuantizeLinear`` into QLinearConv. Returns the number of quantisers re-encoded."""
    graph = model.graph
    producer = _producers(graph)
    consumers = _consumers(graph)
    count = 0
    for q, clip, dqs in list(_activation_chains(graph)):
        src = producer.get(q.input[0])
        pad = src if _is_zero_pad(graph, src, q, consumers) else None
        if pad is not None:  # tf_padding's Pad (folded into the Conv later): Relu / Clip(0, hi) commute with it
            src = producer.get(pad.input[0])
            if src is None or len(consumers.get(src.output[0], [])) != 1:
                continue
        zp = _constant(graph, q.input[2]) if len(q.input) > 2 and q.input[2] else None
        if src is None or src.op_type not in ("Relu", "Clip") or zp is None or zp.dtype != np.int8 or zp.size != 1 or int(zp) != 0:
            continue
        if any(len(d.input) < 3 or d.input[2] != q.input[2] for d in dqs):
            continue
        float_bounds = None
        if src.op_type == "Clip":
            float_bounds = _nonnegative_clip_as_integers(graph, src, pad or q, consumers)
            if float_bounds is None or (pad is not None and float(_constant(graph, src.input[1])) != 0.0):
                continue
        base = q.name or q.output[0]
        lo, hi = 0, 127
        if float_bounds is not None:  # the float Clip's bounds, applied to the integers instead
            lo, hi = max(lo, float_bounds[0]), min(hi, float_bounds[1])
            (pad or q).input[0] = src.input[0]
            graph.node.remove(src)
        if clip is not None:
            lo_c, hi_c = (_constant(graph, b) if b else None for b in (list(clip.input[1:]) + ["", ""])[:2])
            lo = max(lo, int(lo_c)) if lo_c is not None else lo
            hi = min(hi, int(hi_c)) if hi_c is not None else hi
        zp_name, lo_name, hi_name = f"{base}/zero_point_u8", f"{base}/clip_min_u8", f"{base}/clip_max_u8"
        graph.initializer.extend([numpy_helper.from_array(np.zeros((), np.uint8), zp_name),
                                  numpy_helper.from_array(np.array(lo, np.uint8), lo_name),
                                  numpy_helper.from_array(np.array(hi, np.uint8), hi_name)])
        q.input[2] = zp_name
        for d in dqs:
            d.input[2] = zp_name
        if clip is None:
            clipped = f"{q.output[0]}/clipped"
            clip = onnx.helper.make_node("Clip", [q.output[0], lo_name, hi_name], [clipped], name=f"{base}/Clip_u8")
            graph.node.insert(list(graph.node).index(q) + 1, clip)
            for d in dqs:
                d.input[0] = clipped
        else:
            del clip.input[1:]
            clip.input.extend([lo_name, hi_name])
        for vi in [v for v in graph.value_info if v.name == q.output[0]]:
            graph.value_info.remove(vi)
        count += 1
    return count


def _is_zero_pad(graph: onnx.GraphProto, node, reader: onnx.NodeProto, consumers) -> bool:
    """Whether ``node`` is a constant-mode Pad of zeros read only by ``reader``."""
    if node is None or node.op_type != "Pad" or consumers.get(node.output[0], []) != [reader] or node.output[0] in {o.name for o in graph.output}:
        return False
    mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
    value = _constant(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    return mode == b"constant" and value is not None and value.size == 1 and float(value.reshape(())) == 0.0 and not (len(node.input) > 3 and node.input[3])


def _nonnegative_clip_as_integers(graph: onnx.GraphProto, clip: onnx.NodeProto, reader: onnx.NodeProto, consumers) -> tuple[int, int] | None:
    """``(rint(lo / s), rint(hi / s))`` for a float Clip with constant bounds ``lo >= 0`` read only
    by ``reader`` (the per-tensor QuantizeLinear of scale ``s``, or a zero Pad that it reads; None
    when it is not one; the upper bound is 127 when the Clip has none). Computed as the quantiser
    does: float32 division, half to even."""
    users = consumers.get(clip.output[0], [])
    if len(clip.input) < 2 or not clip.input[1] or len(users) != 1 or users[0] != reader or clip.output[0] in {o.name for o in graph.output}:
        return None
    q = reader if reader.op_type == "QuantizeLinear" else consumers[reader.output[0]][0]
    scale = _constant(graph, q.input[1])
    lo_f = _constant(graph, clip.input[1])
    hi_f = _constant(graph, clip.input[2]) if len(clip.input) > 2 and clip.input[2] else None
    if scale is None or scale.size != 1 or lo_f is None or lo_f.size != 1 or float(lo_f) < 0 or (hi_f is not None and hi_f.size != 1):
        return None
    s = np.float32(scale.reshape(()))
    lo = int(np.rint(np.float32(lo_f.reshape(())) / s))
    hi = 127 if hi_f is None else int(np.clip(np.rint(np.float32(hi_f.reshape(())) / s), 0, 127))
    return min(lo, 127), hi


def _feeds_quantizer(node, consumers) -> bool:
    """Whether ``node``'s output is read only by one QuantizeLinear, directly or through one Relu /
    Clip (what onnxruntime fuses into QLinearConv)."""
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type in ("Relu", "Clip"):
        users = consumers.get(users[0].output[0], [])
    return len(users) == 1 and users[0].op_type == "QuantizeLinear"


def conv_integer_for_float_outputs(model: onnx.ModelProto) -> int:
    """Rewrite ``DequantizeLinear(x) -> Conv <- DequantizeLinear(w)`` whose output stays float
    (read by a residual Add, a pooling layer, or nothing quantised) as
    ``ConvInteger -> Cast -> Mul(scale_x * scale_w) -> Add(bias)``: onnxruntime fuses no QDQ Conv
    without an output QuantizeLinear, and the simulation keeps that output float. The integer sum
    is exact; the result differs from the float convolution only by float32 rounding (as
    MatMulIntegerToFloat does for MatMul). Only uint8 activations and uint8 weights with one zero
    point per tensor (onnxruntime's ConvInteger takes no other). Returns the number rewritten."""
    graph = model.graph
    producer = _producers(graph)
    consumers = _consumers(graph)
    count = 0
    for conv in list(graph.node):
        if conv.op_type != "Conv" or _feeds_quantizer(conv, consumers):
            continue
        dq_x, dq_w = producer.get(conv.input[0]), producer.get(conv.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            continue
        if len(consumers.get(dq_x.output[0], [])) != 1 or len(dq_x.input) < 3 or len(dq_w.input) < 3:
            continue
        w = _constant(graph, dq_w.input[0])
        sx, zx = _constant(graph, dq_x.input[1]), _constant(graph, dq_x.input[2])
        sw, zw = _constant(graph, dq_w.input[1]), _constant(graph, dq_w.input[2])
        if any(v is None for v in (w, sx, zx, sw, zw)) or w.dtype != np.uint8 or zx.dtype != np.uint8 or sx.size != 1 or zx.size != 1:
            continue
        if np.unique(zw).size != 1:
            continue
        bias = None
        if len(conv.input) > 2 and conv.input[2]:
            dq_b = producer.get(conv.input[2])
            if dq_b is not None and dq_b.op_type == "DequantizeLinear":
                bq, sb = _constant(graph, dq_b.input[0]), _constant(graph, dq_b.input[1])
                zb = _constant(graph, dq_b.input[2]) if len(dq_b.input) > 2 and dq_b.input[2] else np.zeros((), np.int32)
                if bq is None or sb is None or zb is None:
                    continue
                bias = ((bq.astype(np.float32) - zb.astype(np.float32)) * sb.astype(np.float32)).astype(np.float32)
            else:
                bias = _constant(graph, conv.input[2])
                if bias is None:
                    continue
        base = conv.name or conv.output[0]
        shape = [1, w.shape[0]] + [1] * (w.ndim - 2)
        scale = (sx.astype(np.float32).reshape(()) * sw.astype(np.float32).reshape(-1)).astype(np.float32)
        scale = np.broadcast_to(scale, (w.shape[0],)).reshape(shape)
        names = {k: f"{base}/integer/{k}" for k in ("w", "zw", "scale", "bias", "acc", "acc_f", "scaled")}
        graph.initializer.extend([numpy_helper.from_array(w, names["w"]), numpy_helper.from_array(np.array(zw.reshape(-1)[0], np.uint8), names["zw"]),
                                  numpy_helper.from_array(np.ascontiguousarray(scale), names["scale"])])
        attrs = [a for a in conv.attribute]
        new = [onnx.helper.make_node("ConvInteger", [dq_x.input[0], names["w"], dq_x.input[2], names["zw"]], [names["acc"]], name=f"{base}/ConvInteger"),
               onnx.helper.make_node("Cast", [names["acc"]], [names["acc_f"]], name=f"{base}/Cast", to=onnx.TensorProto.FLOAT)]
        new[0].attribute.extend(attrs)
        if bias is not None:
            graph.initializer.append(numpy_helper.from_array(bias.reshape(shape[1:]).astype(np.float32), names["bias"]))
            new += [onnx.helper.make_node("Mul", [names["acc_f"], names["scale"]], [names["scaled"]], name=f"{base}/Scale"),
                    onnx.helper.make_node("Add", [names["scaled"], names["bias"]], [conv.output[0]], name=f"{base}/Bias")]
        else:
            new.append(onnx.helper.make_node("Mul", [names["acc_f"], names["scale"]], [conv.output[0]], name=f"{base}/Scale"))
        _replace_node(graph, conv, new)
        count += 1
    return count


def float_weights_for_float_outputs(model: onnx.ModelProto) -> int:
    """Rewrite the weight ``DequantizeLinear`` of a Conv whose output stays float (no ConvInteger
    was written for it: int8 weights, whose U8S8 ConvInteger onnxruntime runs 1.8x slower than
    the float Conv on hf-resnet18) as ``Cast(to float) -> Mul(scale)``: the same float32 values
    bit for bit (one rounding of ``w * scale``, as DequantizeLinear does), but onnxruntime folds a
    Cast and Mul of constants once at session start, while it dequantises a weight
    DequantizeLinear again on every run (1.2 ms of hf-resnet18's 4 ms). The file still stores the
    integers. Only weights with zero point 0. Returns the number of weights rewritten."""
    graph = model.graph
    producer = _producers(graph)
    consumers = _consumers(graph)
    count = 0
    for conv in list(graph.node):
        if conv.op_type != "Conv" or len(conv.input) < 2 or _feeds_quantizer(conv, consumers):
            continue
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers.get(dq.output[0], [])) != 1:
            continue
        src = dq.input[0]
        clip = producer.get(src)
        if clip is not None and clip.op_type == "Clip":  # Brevitas's narrow range: the constant lies in it
            src = clip.input[0]
        w, scale = _constant(graph, src), _constant(graph, dq.input[1])
        zp = _constant(graph, dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.int8)
        if w is None or scale is None or zp is None or w.dtype != np.int8 or zp.any() or scale.dtype != np.float32:
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if scale.size > 1:
            shape = [1] * w.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
        base = dq.name or dq.output[0]
        scale_name, cast_out = f"{base}/scale_f", f"{base}/weight_f"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(scale.astype(np.float32)), scale_name))
        new = [onnx.helper.make_node("Cast", [src], [cast_out], to=onnx.TensorProto.FLOAT, name=f"{base}/Cast"),
               onnx.helper.make_node("Mul", [cast_out, scale_name], [dq.output[0]], name=f"{base}/Scale")]
        _replace_node(graph, dq, new)
        count += 1
    return count


SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


def sink_dequantize_through_shape_ops(model: onnx.ModelProto) -> int:
    """Swap ``DequantizeLinear -> Flatten/Reshape`` into ``Flatten/Reshape -> DequantizeLinear``.

    With a per-tensor scale and zero point, dequantising commutes exactly with a reshape. The
    swap lets onnxruntime see ``DequantizeLinear -> Gemm`` and fuse a QGemm (it does not look
    through Flatten itself). Returns the number of swaps.
    """
    graph = model.graph
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    swaps = 0
    for dq in list(graph.node):
        if dq.op_type != "DequantizeLinear" or dq.output[0] in outputs:
            continue
        users = consumers.get(dq.output[0], [])
        if len(users) != 1 or users[0].op_type not in SHAPE_OPS or users[0].input[0] != dq.output[0]:
            continue
        scale = _constant(graph, dq.input[1])
        zp = _constant(graph, dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros(())
        if scale is None or zp is None or scale.size != 1 or zp.size != 1:
            continue
        shape_op = users[0]
        q_in, f_out = dq.input[0], shape_op.output[0]
        moved = f"{f_out}/quantized"
        shape_op.input[0] = q_in
        shape_op.output[0] = moved
        dq.input[0] = moved
        dq.output[0] = f_out
        nodes = list(graph.node)
        nodes.remove(dq)
        nodes.insert(nodes.index(shape_op) + 1, dq)
        del graph.node[:]
        graph.node.extend(nodes)
        for vi in [v for v in graph.value_info if v.name in (f_out, moved)]:
            graph.value_info.remove(vi)
        swaps += 1
    return swaps


# ------------------------------------------------------------------------- small-CNN rewrites
# Three patterns of Brevitas's QCDQ graphs of small CNNs kept onnxruntime from running them fully
# integer (kws-dscnn ran slower in int8 than in float): an explicit zero Pad in front of a
# convolution's input quantiser (ZeroPad2d; float Pad plus a second QuantizeLinear /
# DequantizeLinear pair each run), a requantiser with the very scale and zero point of the
# quantiser before it, and a global average pool read through Flatten by the next quantiser (float
# GlobalAveragePool instead of QLinearGlobalAveragePool). Each rewrite keeps the values the graph
# computes bit for bit.


def _scalar_qparams(graph: onnx.GraphProto, node) -> tuple | None:
    """``(scale, zero point)`` of a per-tensor QuantizeLinear / DequantizeLinear into int8 / uint8
    (not float8: onnxruntime runs no Flatten, Pad or pool on those), else None."""
    scale = _constant(graph, node.input[1])
    zp = _constant(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or zp is None or scale.size != 1 or zp.size != 1 or zp.dtype not in (np.int8, np.uint8):
        return None
    return scale.reshape(()), zp.reshape(())


def _evaluate_constant(graph: onnx.GraphProto, name: str, opsets) -> np.ndarray | None:
    """The value of tensor ``name`` when it is computed from constants only (the small
    ConstantOfShape / Concat / Slice subgraph torch exports for a Pad's pads), else None."""
    value = _constant(graph, name)
    if value is not None:
        return value
    producer = _producers(graph)
    inits = {i.name: i for i in graph.initializer}
    needed, stack, seen = [], [name], set()
    while stack:
        t = stack.pop()
        if not t or t in seen or t in inits:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None:
            return None  # a graph input
        needed.append(node)
        stack.extend(node.input)
    from onnx.reference import ReferenceEvaluator

    order = [n for n in graph.node if n in needed]
    used = {i for n in order for i in n.input}
    sub = onnx.helper.make_graph(order, "constant", [], [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
                                 [inits[i] for i in used if i in inits])
    try:
        return np.asarray(ReferenceEvaluator(onnx.helper.make_model(sub, opset_imports=list(opsets))).run(None, {})[0])
    except Exception:  # the reference evaluator raises its own types; the Pad then stays
        return None


def fold_pad_into_conv(model: onnx.ModelProto) -> int:
    """Fold a zero ``Pad -> QuantizeLinear (-> Clip) -> DequantizeLinear -> Conv`` chain into the
    convolution's own ``pads``: the quantiser then reads the Pad's input. A padded 0.0 quantises
    to the zero point and dequantises to exactly 0.0, which is what the Conv pads with, so the
    values are the same bit for bit; onnxruntime then runs no float Pad and fuses the Conv.
    Only constant-mode pads of zero on the spatial axes, a Clip that keeps the zero point.
    Returns the number of Pads folded."""
    graph = model.graph
    producer = _producers(graph)
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    folded = 0
    for conv in list(graph.node):
        if conv.op_type != "Conv" or any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        dq = producer.get(conv.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers.get(dq.output[0], [])) != 1:
            continue
        clip = producer.get(dq.input[0])
        q = producer.get(clip.input[0]) if clip is not None and clip.op_type == "Clip" else clip
        clip = clip if clip is not None and clip.op_type == "Clip" else None
        if q is None or q.op_type != "QuantizeLinear" or len(consumers.get(q.output[0], [])) != 1:
            continue
        if clip is not None and len(consumers.get(clip.output[0], [])) != 1:  # another reader still wants the padded tensor
            continue
        pad = producer.get(q.input[0])
        if pad is None or pad.op_type != "Pad" or len(consumers.get(pad.output[0], [])) != 1 or pad.output[0] in outputs:
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        if mode != b"constant" or len(pad.input) < 2 or (len(pad.input) > 3 and pad.input[3]):
            continue
        value = _evaluate_constant(graph, pad.input[2], model.opset_import) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        pads = _evaluate_constant(graph, pad.input[1], model.opset_import)
        qp = _scalar_qparams(graph, q)
        if value is None or pads is None or qp is None or np.any(value != 0) or pads.ndim != 1 or pads.size % 2 or np.any(pads < 0):
            continue
        rank = pads.size // 2
        if rank < 3 or np.any(pads[[0, 1, rank, rank + 1]] != 0):
            continue
        if clip is not None:
            lo, hi = (_constant(graph, b) if b else None for b in (list(clip.input[1:]) + ["", ""])[:2])
            zp = int(qp[1])
            if (len(clip.input) > 1 and clip.input[1] and lo is None) or (len(clip.input) > 2 and clip.input[2] and hi is None):
                continue
            if (lo is not None and zp < int(lo)) or (hi is not None and zp > int(hi)):
                continue
        conv_pads = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0] * (2 * (rank - 2)))
        spatial = [int(p) for p in pads[2:rank]] + [int(p) for p in pads[rank + 2:]]
        new_pads = [a + b for a, b in zip(conv_pads, spatial)]
        for a in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(a)
        conv.attribute.append(onnx.helper.make_attribute("pads", new_pads))
        q.input[0] = pad.input[0]
        graph.node.remove(pad)  # its only reader was q: left in, it would count as a second reader of its input
        folded += 1
    return folded


def drop_identity_requantize(model: onnx.ModelProto) -> int:
    """Skip ``DequantizeLinear -> QuantizeLinear`` pairs with the same per-tensor scale, zero point
    and integer type: ``Q(DQ(q)) == q`` exactly for every integer q of the type, so the readers of
    the QuantizeLinear read ``q`` itself. (Brevitas requantises a tensor that a shape-preserving
    op, e.g. a folded Pad, passed on with the same quantiser parameters.) Returns the number of
    pairs skipped."""
    graph = model.graph
    producer = _producers(graph)
    outputs = {o.name for o in graph.output}
    dropped = 0
    for q in list(graph.node):
        if q.op_type != "QuantizeLinear" or q.output[0] in outputs:
            continue
        dq = producer.get(q.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        a, b = _scalar_qparams(graph, dq), _scalar_qparams(graph, q)
        if a is None or b is None or a[1].dtype != b[1].dtype or a[0].dtype != b[0].dtype or a[0] != b[0] or a[1] != b[1]:
            continue
        for n in graph.node:
            for j, name in enumerate(n.input):
                if name == q.output[0]:
                    n.input[j] = dq.input[0]
        dropped += 1
    return dropped


def quantize_before_flatten(model: onnx.ModelProto) -> int:
    """Swap ``GlobalAveragePool / AveragePool -> Flatten/Reshape -> QuantizeLinear`` into
    ``... -> QuantizeLinear -> Flatten/Reshape``: a per-tensor quantiser commutes with a reshape
    exactly, and onnxruntime then fuses ``DequantizeLinear -> GlobalAveragePool ->
    QuantizeLinear`` into QLinearGlobalAveragePool (integer sum, one requantisation) and reads the
    next layer's DequantizeLinear after the Flatten. Returns the number of swaps."""
    graph = model.graph
    producer = _producers(graph)
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    swaps = 0
    for q in list(graph.node):
        if q.op_type != "QuantizeLinear" or _scalar_qparams(graph, q) is None:
            continue
        shape_op = producer.get(q.input[0])
        if shape_op is None or shape_op.op_type not in SHAPE_OPS or shape_op.output[0] in outputs or len(consumers.get(shape_op.output[0], [])) != 1:
            continue
        pool = producer.get(shape_op.input[0])
        if pool is None or pool.op_type not in ("GlobalAveragePool", "AveragePool") or len(consumers.get(pool.output[0], [])) != 1:
            continue
        q_out, moved = q.output[0], f"{q.output[0]}/before_reshape"
        q.input[0], q.output[0] = pool.output[0], moved
        shape_op.input[0], shape_op.output[0] = moved, q_out
        for vi in [v for v in graph.value_info if v.name in (q_out, moved, shape_op.input[0])]:
            graph.value_info.remove(vi)
        swaps += 1
    if swaps:
        _topological_sort(graph)
    return swaps
