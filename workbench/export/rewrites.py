"""ONNX graph rewrites of how a QCDQ export stores and names its tensors: integer weight
constants (folded from QuantizeLinear, re-encoded as uint8), quantised embedding tables read row
by row, dynamic activations as MatMulInteger, and short tensor names (QCDQ and QONNX). Each
keeps the values the graph computes bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_graph import (
    _constant,
    _consumers,
    _producers,
    _replace_node,
    _short_names,
    _topological_sort,
    prune_unused,
)


def drop_initializer_inputs(model: onnx.ModelProto) -> int:
    """Remove graph inputs that are initializers (the exporter lists them with
    ``export_weight_q_node``); onnxruntime then treats the weights as constants."""
    inits = {i.name for i in model.graph.initializer}
    drop = [i for i in model.graph.input if i.name in inits]
    for i in drop:
        model.graph.input.remove(i)
    return len(drop)


_INT_QTYPES = {onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8}


def fold_integer_weight_quantize(model: onnx.ModelProto) -> int:
    """Replace ``QuantizeLinear`` of a constant float tensor into int8 / uint8 by the integer
    constant it computes (``saturate(round_half_even(x / scale) + zero_point)``, in float32 as
    onnxruntime does), so integer weights are stored as integers. Float8 outputs are left as
    they are. Returns the number of nodes folded."""
    graph = model.graph
    folded = 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        x, scale = _constant(graph, node.input[0]), _constant(graph, node.input[1])
        zp_init = next((i for i in graph.initializer if i.name == node.input[2]), None)
        zp_node = next((n for n in graph.node if n.op_type == "Constant" and n.output[0] == node.input[2]), None)
        zp_type = zp_init.data_type if zp_init is not None else (zp_node.attribute[0].t.data_type if zp_node is not None else None)
        if x is None or scale is None or zp_type not in _INT_QTYPES or x.dtype != np.float32:
            continue
        zp = _constant(graph, node.input[2])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        info = np.iinfo(_INT_QTYPES[zp_type])
        q = np.clip(np.rint(x / scale.astype(np.float32)) + zp.astype(np.float32), info.min, info.max).astype(_INT_QTYPES[zp_type])
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        graph.node.remove(node)
        folded += 1
    return folded


def reencode_weights_u8(model: onnx.ModelProto) -> int:
    """Re-encode constant int8 weights feeding DequantizeLinear as uint8 (w + 128, zero point + 128).

    ``(w_u8 - zp_u8) * s == (w_s8 - zp_s8) * s`` exactly, so the graph computes the same values.
    A Clip between the constant and DequantizeLinear (Brevitas's narrow / sub-8-bit range) is
    dropped: the constant already lies in its range. Returns the number of tensors re-encoded.
    """
    graph = model.graph
    producer = _producers(graph)
    count = 0
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear":
            continue
        src = node.input[0]
        clip = producer.get(src)
        if clip is not None and clip.op_type == "Clip":
            src = clip.input[0]
        w = _constant(graph, src)
        if w is None or w.dtype != np.int8:
            continue
        zp = _constant(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.int8)
        if zp is None:
            continue
        base = node.name or node.output[0]
        w_name, zp_name = f"{base}/weight_u8", f"{base}/zero_point_u8"
        graph.initializer.extend([
            numpy_helper.from_array((w.astype(np.int16) + 128).astype(np.uint8), w_name),
            numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), zp_name),
        ])
        node.input[0] = w_name
        if len(node.input) > 2:
            node.input[2] = zp_name
        else:
            node.input.append(zp_name)
        count += 1
    return count


# ------------------------------------------------------------------------- embedding tables


def gather_quantized_rows(model: onnx.ModelProto) -> int:
    """Rewrite ``int8 table (-> Clip) -> DequantizeLinear(axis 0) -> Gather(ids)`` (how Brevitas
    exports a per-row quantised embedding table, :class:`workbench.core.quantize.RowQuantEmbedding`)
    as ``Gather(int8 table, ids) -> Cast(float) -> Mul(Gather(row scales, ids))``: each call
    dequantises the rows it reads, never the whole table, and the table is stored as int8.
    ``(q - 0) * s`` in float32 either way, so the values are Brevitas's, bit for bit. Only zero
    points of 0 (Brevitas's symmetric weight quantisers) and Gather on axis 0. Returns the number
    of tables rewritten."""
    graph = model.graph
    producer = _producers(graph)
    count = 0
    for gather in list(graph.node):
        if gather.op_type != "Gather" or next((a.i for a in gather.attribute if a.name == "axis"), 0) != 0:
            continue
        dq = producer.get(gather.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        src = dq.input[0]
        clip = producer.get(src)
        if clip is not None and clip.op_type == "Clip":
            src = clip.input[0]
        table, scale = _constant(graph, src), _constant(graph, dq.input[1])
        zp = _constant(graph, dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.int8)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if table is None or scale is None or zp is None or table.dtype != np.int8 or table.ndim != 2 or zp.any():
            continue
        if scale.size == table.shape[0] and (scale.ndim == 1 and axis == 0 or scale.ndim == 2):
            rows = True
        elif scale.size == 1:
            rows = False
        else:
            continue
        base = (dq.name or dq.output[0]).split("/weight_quant/")[0].strip("/") or gather.output[0]
        names = {k: f"{base}/embedding/{k}" for k in ("table", "scale", "ints", "float", "row_scale")}
        graph.initializer.extend([numpy_helper.from_array(table, names["table"]),
                                  numpy_helper.from_array(scale.astype(np.float32).reshape((-1, 1) if rows else ()), names["scale"])])
        ids = gather.input[1]
        new = [onnx.helper.make_node("Gather", [names["table"], ids], [names["ints"]], name=f"{base}/embedding/Gather", axis=0),
               onnx.helper.make_node("Cast", [names["ints"]], [names["float"]], name=f"{base}/embedding/Cast", to=onnx.TensorProto.FLOAT)]
        if rows:
            new.append(onnx.helper.make_node("Gather", [names["scale"], ids], [names["row_scale"]], name=f"{base}/embedding/GatherScale", axis=0))
        new.append(onnx.helper.make_node("Mul", [names["float"], names["row_scale"] if rows else names["scale"]], [gather.output[0]], name=f"{base}/embedding/Scale"))
        _replace_node(graph, gather, new)
        count += 1
    if count:
        prune_unused(model)
    return count


# ------------------------------------------------------------------------- dynamic activations


def dynamic_matmul_integer(model: onnx.ModelProto) -> int:
    """Rewrite each layer whose input Brevitas exports as ``DynamicQuantizeLinear -> DequantizeLinear``
    (``act_mode: dynamic``) into what onnxruntime's ``quantize_dynamic`` emits:
    ``DynamicQuantizeLinear -> MatMulInteger(x_q, W_q, x_zp, w_zp) -> Cast -> Mul(x_scale * w_scale)``,
    which onnxruntime runs as ``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat`` (it fuses no
    ``DequantizeLinear`` whose scale is computed at run time). The integer sum is exact; the result
    differs from the float MatMul of the dequantised tensors only by float32 rounding. Identical
    DynamicQuantizeLinear nodes of one tensor (Q, K and V) become one. Weights: a constant integer
    tensor (through Clip / Transpose) with one zero point per tensor or per output column. Returns
    the number of MatMuls rewritten."""
    graph = model.graph
    producer = _producers(graph)
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    # one DynamicQuantizeLinear per tensor
    first: dict[str, object] = {}
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            continue
        if node.input[0] in first:
            for mine, kept in zip(node.output, first[node.input[0]].output):
                renamed[mine] = kept
        else:
            first[node.input[0]] = node
    if renamed:
        for node in graph.node:
            node.input[:] = [renamed.get(i, i) for i in node.input]
        prune_unused(model)
        producer = _producers(graph)
        consumers = _consumers(graph)
    count = 0
    for dql in [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]:
        xq, xs, xzp = dql.output[:3]
        for dq in [n for n in consumers.get(xq, []) if n.op_type == "DequantizeLinear" and list(n.input[:3]) == [xq, xs, xzp]]:
            if dq.output[0] in outputs:
                continue
            for mm in [n for n in consumers.get(dq.output[0], []) if n.op_type in ("MatMul", "Gemm") and n.input[0] == dq.output[0]]:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in mm.attribute}
                if mm.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
                    continue
                w = _dynamic_weight(graph, producer, mm.input[1], transposed=bool(attrs.get("transB", 0)))
                bias = None
                if mm.op_type == "Gemm" and len(mm.input) > 2 and mm.input[2]:
                    bias = _constant(graph, mm.input[2])
                    if bias is None:
                        continue
                if w is None:
                    continue
                wq, wzp, ws = w
                base = mm.name or mm.output[0]
                names = {k: f"{base}/dynamic/{k}" for k in ("w", "wzp", "ws", "acc", "acc_f", "scale", "scaled")}
                graph.initializer.extend([numpy_helper.from_array(wq, names["w"]), numpy_helper.from_array(wzp, names["wzp"]),
                                          numpy_helper.from_array(ws, names["ws"])])
                scaled = mm.output[0] if bias is None else names["scaled"]
                new = [onnx.helper.make_node("MatMulInteger", [xq, names["w"], xzp, names["wzp"]], [names["acc"]], name=f"{base}/MatMulInteger"),
                       onnx.helper.make_node("Cast", [names["acc"]], [names["acc_f"]], name=f"{base}/Cast", to=onnx.TensorProto.FLOAT),
                       onnx.helper.make_node("Mul", [xs, names["ws"]], [names["scale"]], name=f"{base}/ScaleProduct"),
                       onnx.helper.make_node("Mul", [names["acc_f"], names["scale"]], [scaled], name=f"{base}/Scale")]
                if bias is not None:
                    new.append(onnx.helper.make_node("Add", [scaled, mm.input[2]], [mm.output[0]], name=f"{base}/Bias"))
                _replace_node(graph, mm, new)
                count += 1
    if count:
        for vi in list(graph.value_info):
            graph.value_info.remove(vi)
        prune_unused(model)
        _topological_sort(graph)
    return count


def _dynamic_weight(graph: onnx.GraphProto, producer: dict, name: str, transposed: bool = False):
    """``(integers (K, N), zero point (N,) or scalar, scale (N,) or scalar)`` of a MatMul's constant
    quantised weight ``DequantizeLinear(W [-> Clip]) [-> Transpose]`` (``transposed``: a Gemm's
    ``transB``), or None."""
    node = producer.get(name)
    perm = [1, 0] if transposed else None
    if node is not None and node.op_type == "Transpose" and not transposed:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        node = producer.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear" or len(node.input) < 3:
        return None
    src = node.input[0]
    if src in producer and producer[src].op_type == "Clip":
        src = producer[src].input[0]
    w, s, z = _constant(graph, src), _constant(graph, node.input[1]), _constant(graph, node.input[2])
    if w is None or s is None or z is None or w.ndim != 2 or w.dtype not in (np.int8, np.uint8):
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % 2
    if perm is not None:
        if perm != [1, 0]:
            return None
        w, axis = w.T, 1 - axis
    if s.size > 1 and axis != 1:  # per-row scales of B: not a per-output-column scale
        return None
    zp = z.reshape(-1) if z.size > 1 else z.reshape(())
    return np.ascontiguousarray(w), zp.astype(w.dtype), s.astype(np.float32).reshape(-1) if s.size > 1 else s.astype(np.float32).reshape(())


NAMED_OPS = ("Conv", "Gemm", "MatMul", "ConvInteger", "MatMulInteger")  # layers: per-layer diagnostics name them


def compact_graph(model: onnx.ModelProto) -> None:
    """Shrink a QCDQ graph's names, a quarter to a third of a small model's file, alike for every
    export (so file sizes compare what the weights take): internal tensors become ``t0``, ``t1``, ...
    in node order; layer nodes (Conv, Gemm, MatMul, ConvInteger) and weight DequantizeLinear nodes
    keep their names with Brevitas's ``export_handler`` part shortened to ``e`` (per-layer
    diagnostics and :func:`workbench.export.verify.onnx_weight_integers` read them); other node names,
    which ONNX makes optional, are dropped, as is the ``value_info`` shape cache. Graph inputs and
    outputs keep their names."""
    graph = model.graph
    short = _short_names(graph)

    for node in graph.node:
        label = node.name or node.output[0]
        weight_dq = node.op_type in ("DequantizeLinear", "Mul") and "/weight_quant/" in label  # Mul: float_weights_for_float_outputs
        node.name = label.replace("export_handler", "e") if (node.op_type in NAMED_OPS or weight_dq) else ""
        node.doc_string = ""
        node.input[:] = [short(i) for i in node.input]
        node.output[:] = [short(o) for o in node.output]
    for init in graph.initializer:
        init.name = short(init.name)
    del graph.value_info[:]


def compact_qonnx_names(model: onnx.ModelProto) -> None:
    """Shorten a QONNX graph's internal tensor names to ``t0``, ``t1``, ... in node order (in
    nodes, initialisers, shapes and qonnx's datatype annotations), as :func:`compact_graph` does
    for QCDQ: about 8 kB of a ResNet-8 file. Node names, which hls4ml names its layers after, and
    the graph's input and output names stay."""
    graph = model.graph
    short = _short_names(graph)

    for node in graph.node:
        node.input[:] = [short(i) for i in node.input]
        node.output[:] = [short(o) for o in node.output]
    for init in graph.initializer:
        init.name = short(init.name)
    for vi in graph.value_info:
        vi.name = short(vi.name)
    for qa in graph.quantization_annotation:
        qa.tensor_name = short(qa.tensor_name)
