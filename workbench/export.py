"""Export to ONNX: QCDQ (QuantizeLinear-Clip-DequantizeLinear, for onnxruntime), QONNX (FPGA
flows: FINN, hls4ml) and plain float ONNX. Files are written atomically; the batch axis is
dynamic for QCDQ and float exports."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .errors import ExportError, OutputPathError
from .fileio import atomic_target

OPSET = 13
MINIFLOAT_OPSET = 19  # the first opset whose QuantizeLinear / DequantizeLinear carry float8
PACKED_OPSET = 21  # the first opset whose Cast / DequantizeLinear carry INT4 / UINT4
INPUT_NAME, OUTPUT_NAME = "input", "output"


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


@contextlib.contextmanager
def _exporting(path: str | os.PathLike, label: str):
    """Yield a temporary file beside ``path``; it replaces ``path`` only if the block succeeds, and
    any failure becomes one :class:`ExportError` line."""
    with atomic_target(path) as tmp, _quiet():
        try:
            yield tmp
        except OutputPathError:
            raise
        except Exception as exc:
            from .outdir import DISK_ERRNOS, disk_error

            if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
                raise disk_error(exc, path) from None
            raise ExportError(f"{label} export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


NAMES = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
DYNAMIC_BATCH = {**NAMES, "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}


def _check_bits_exportable(qmodel: nn.Module, max_bits: int, fmt: str) -> None:
    plan = getattr(qmodel, "workbench_plan", None)
    if plan is None:
        return
    for name, lq in plan.layers.items():
        for what, bits in (("weight_bits", lq.weight_bits), ("act_bits", lq.act_bits)):
            if bits is not None and bits > max_bits:
                raise ExportError(f"layers.{name}.{what} is {bits}; {fmt} export supports at most {max_bits} bits (use QONNX for wider integers)")


def plan_formats(qmodel: nn.Module) -> dict[str, set[str]]:
    """``{format name: {layer names}}`` of the number formats a workbench-quantised model holds
    (weights and the activations its layers read; float tensors are left out)."""
    plan = getattr(qmodel, "workbench_plan", None)
    out: dict[str, set[str]] = {}
    for name, lq in (plan.layers.items() if plan is not None else ()):
        for fmt, bits in ((lq.weight_format, lq.weight_bits), (lq.act_format, lq.act_bits)):
            if bits is not None:
                out.setdefault(fmt, set()).add(name)
    return out


def check_formats_exportable(qmodel: nn.Module | dict, exporter: str, label: str) -> None:
    """One-line ExportError naming a layer and its number format if exporter ``exporter`` cannot
    carry it. ``qmodel``: a workbench-quantised model, or resolved settings ``{layer: LayerQuant}``
    (:func:`workbench.quantize.validate_spec`), to check a spec before anything is built."""
    from .formats import get_format

    if isinstance(qmodel, dict):
        layers = qmodel
    else:
        plan = getattr(qmodel, "workbench_plan", None)
        layers = plan.layers if plan is not None else {}
    for name, lq in layers.items():
        for what, fmt_name, bits in (("weight_format", lq.weight_format, lq.weight_bits), ("act_format", lq.act_format, lq.act_bits)):
            fmt = get_format(fmt_name)
            if bits is not None and not fmt.carried_by(exporter):
                carriers = ", ".join(fmt.exporters or ())
                raise ExportError(f"layers.{name}.{what} is {fmt_name!r}; the {label} export cannot carry it (exporters that can: {carriers})")


def has_minifloat(qmodel: nn.Module) -> bool:
    from .formats import get_format

    return any(get_format(f).kind == "minifloat" for f in plan_formats(qmodel))


WEIGHT_ENCODINGS = ("u8", "s8")


def export_qcdq(qmodel: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, weight_encoding: str = "u8",
                pack: bool | str = True) -> Path:
    """QCDQ ONNX (opset 13) that onnxruntime fuses into integer kernels.

    A model holding minifloat (FP8) layers is exported at opset 19 with its weights quantised by
    QuantizeLinear nodes in the graph (Brevitas exports FP8 weights no other way); integer weight
    tensors are folded back into integer constants, so they are stored as today.

    ``weight_encoding="u8"`` (default) stores each int8 weight tensor w as uint8 w + 128 with zero
    point 128: the same real values, bit for bit, but onnxruntime then runs U8U8 kernels, which
    are exact on every CPU. With ``"s8"`` (Brevitas's own int8 weights) onnxruntime picks U8S8
    kernels, whose int16 intermediate sums saturate on x86 CPUs without VNNI (AVX2 only), so the
    runtime can disagree with the simulation there; choose it for VNNI or ARM targets.
    """
    from brevitas.export import export_onnx_qcdq

    if weight_encoding not in WEIGHT_ENCODINGS:
        raise ExportError(f"weight_encoding {weight_encoding!r}; expected one of {', '.join(WEIGHT_ENCODINGS)}")
    packing = packing_wanted(qmodel, pack)
    _check_bits_exportable(qmodel, 8, "QCDQ (onnxruntime)")
    qmodel.eval()
    minifloat = has_minifloat(qmodel)
    extra = {"opset_version": MINIFLOAT_OPSET, "export_weight_q_node": True} if minifloat else {"opset_version": OPSET}
    with _exporting(path, "QCDQ") as tmp:
        export_onnx_qcdq(qmodel, args=example_input[:1], export_path=tmp, dynamo=False, **extra, **DYNAMIC_BATCH)
        model = onnx.load(tmp)
        if minifloat:
            drop_initializer_inputs(model)
            fold_integer_weight_quantize(model)
        if weight_encoding == "u8":
            reencode_weights_u8(model)
        sink_dequantize_through_shape_ops(model)
        if packing:
            pack_low_bit_weights(model)
        prune_unused(model)
        onnx.save(model, tmp)
    return Path(path)


def export_qonnx(qmodel: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> Path:
    """QONNX (Quant nodes with arbitrary bit widths), cleaned up with qonnx, batch 1."""
    from brevitas.export import export_qonnx as _export
    from qonnx.util.cleanup import cleanup

    qmodel.eval()
    with _exporting(path, "QONNX") as tmp:
        _export(qmodel, args=example_input[:1], export_path=tmp, dynamo=False, **NAMES)
        cleanup(tmp, out_file=tmp)
    return Path(path)


def export_float(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> Path:
    """The float model as ONNX, for latency and agreement baselines."""
    model.eval()
    with _exporting(path, "float ONNX") as tmp:
        torch.onnx.export(model, (example_input[:1],), tmp, opset_version=OPSET, dynamo=False, **DYNAMIC_BATCH)
    return Path(path)


# ------------------------------------------------------------------------- graph rewrites


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


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def reencode_weights_u8(model: onnx.ModelProto) -> int:
    """Re-encode constant int8 weights feeding DequantizeLinear as uint8 (w + 128, zero point + 128).

    ``(w_u8 - zp_u8) * s == (w_s8 - zp_s8) * s`` exactly, so the graph computes the same values.
    A Clip between the constant and DequantizeLinear (Brevitas's narrow / sub-8-bit range) is
    dropped: the constant already lies in its range. Returns the number of tensors re-encoded.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
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


def prune_unused(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers whose outputs nothing reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


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


# ------------------------------------------------------------------------- packed storage

PACK_MODES = {True: "int4", False: "none", "int4": "int4", "none": "none"}
PACKED_TYPES = (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)


def packing_wanted(qmodel: nn.Module, pack: bool | str) -> bool:
    """Whether :func:`export_qcdq` packs weights: ``pack`` asks for it and the model holds integer
    weights of at most 4 bits. A packed format the QCDQ export cannot carry (``"int2"``...) is a
    one-line ExportError, raised before any file is written."""
    from .formats import get_format

    if not isinstance(pack, (bool, str)) or pack not in PACK_MODES:
        raise ExportError(f"pack {pack!r}: the QCDQ (onnxruntime) export packs weights of at most 4 bits as ONNX INT4/UINT4 (opset {PACKED_OPSET}) "
                          f"or not at all; expected one of True, False, 'int4', 'none'")
    if PACK_MODES[pack] == "none":
        return False
    plan = getattr(qmodel, "workbench_plan", None)
    return any(lq.weight_bits is not None and lq.weight_bits <= 4 and get_format(lq.weight_format).kind != "minifloat"
               for lq in (plan.layers.values() if plan is not None else ()))


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
    anything is packed, and names are compacted (:func:`compact_names`); a graph onnx's version
    converter cannot raise to opset 21 is left unpacked (the summary's ``packing`` then lists its
    layers under ``int8``). Returns the number of tensors packed."""
    import ml_dtypes

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
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
    compact_names(model)
    return len(plans)


def compact_names(model: onnx.ModelProto) -> None:
    """Shrink a graph's names, which are a third of a small model's file: node names are dropped
    (optional in ONNX) and Brevitas's ``export_handler`` path part becomes ``e``; graph inputs and
    outputs keep their names. Used on packed files only, so 8-bit files stay as they were."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}

    def short(name: str) -> str:
        return name if name in keep else name.replace("export_handler", "e")

    names = {i for n in graph.node for i in (*n.input, *n.output)} | {i.name for i in graph.initializer}
    if len({short(n) for n in names}) != len(names):  # a shortened name would collide: keep them all
        names = None
    for node in graph.node:
        node.name = ""
        if names is None:
            continue
        for k, name in enumerate(node.input):
            node.input[k] = short(name)
        for k, name in enumerate(node.output):
            node.output[k] = short(name)
    if names is None:
        return
    for init in graph.initializer:
        init.name = short(init.name)
    for vi in graph.value_info:
        vi.name = short(vi.name)
