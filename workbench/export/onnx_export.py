"""Export to ONNX: QCDQ (QuantizeLinear-Clip-DequantizeLinear, for onnxruntime), QONNX (FPGA
flows: FINN, hls4ml) and plain float ONNX. Files are written atomically; the batch axis is
dynamic for QCDQ and float exports."""

from __future__ import annotations

import collections
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

from ..infra.errors import ExportError, OutputPathError
from ..infra.fileio import atomic_target

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
            from ..infra.fileio import DISK_ERRNOS, disk_error

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


DYNAMIC_ACT_EXPORTERS = ("qcdq",)  # exporters that carry act_mode: dynamic (DynamicQuantizeLinear + MatMulInteger)


def check_formats_exportable(qmodel: nn.Module | dict, exporter: str, label: str) -> None:
    """One-line ExportError naming a layer and its number format if exporter ``exporter`` cannot
    carry it. ``qmodel``: a workbench-quantised model, or resolved settings ``{layer: LayerQuant}``
    (:func:`workbench.core.quantize.validate_spec`), to check a spec before anything is built."""
    from ..core.formats import get_format

    if isinstance(qmodel, dict):
        layers = qmodel
    else:
        plan = getattr(qmodel, "workbench_plan", None)
        layers = plan.layers if plan is not None else {}
    for name, lq in layers.items():
        if getattr(lq, "act_mode", "static") == "dynamic" and lq.act_bits is not None and exporter not in DYNAMIC_ACT_EXPORTERS:
            raise ExportError(f"layers.{name}.act_mode is 'dynamic'; the {label} export cannot carry run-time activation scales "
                              f"(exporters that can: {', '.join(DYNAMIC_ACT_EXPORTERS)}; leave {exporter} out of the formats)")
        for what, fmt_name, bits in (("weight_format", lq.weight_format, lq.weight_bits), ("act_format", lq.act_format, lq.act_bits)):
            fmt = get_format(fmt_name)
            if bits is not None and not fmt.carried_by(exporter):
                carriers = ", ".join(fmt.exporters or ())
                raise ExportError(f"layers.{name}.{what} is {fmt_name!r}; the {label} export cannot carry it (exporters that can: {carriers})")


def has_minifloat(qmodel: nn.Module) -> bool:
    from ..core.formats import get_format

    return any(get_format(f).kind == "minifloat" for f in plan_formats(qmodel))


WEIGHT_ENCODINGS = ("u8", "s8")
WEIGHT_ENCODING_CHOICES = ("u8", "s8", "auto")  # auto: s8 where the host CPU has VNNI (or is ARM), else u8


def cpu_vnni(cpuinfo: str | None = None, machine: str | None = None) -> bool | None:
    """Whether a CPU has 8-bit dot-product instructions that make onnxruntime's U8S8 kernels exact
    (x86 ``avx512_vnni`` or ``avx_vnni`` in the /proc/cpuinfo flags; ARM (aarch64/arm64) always).

    Pure when both arguments are given; by default it reads this host's ``/proc/cpuinfo`` and
    ``platform.machine()``. None: unknown (no cpuinfo to read, no flags line)."""
    import platform

    machine = (platform.machine() if machine is None else machine).lower()
    if machine in ("aarch64", "arm64") or machine.startswith("armv8"):
        return True
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = [line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.split(":", 1)[0].strip() == "flags" and ":" in line]
    if not flags:
        return None
    return all(bool({"avx512_vnni", "avx_vnni"} & set(f)) for f in flags)


def resolve_weight_encoding(choice: str = "auto", vnni: bool | None | str = "probe") -> str:
    """``u8`` or ``s8`` for a ``weight_encoding`` choice: ``auto`` is s8 when ``vnni`` (a probe
    result; ``"probe"``: :func:`cpu_vnni` of this host) is True, else u8 (exact on every CPU, so
    also the choice when the probe cannot tell, None). A choice outside ``u8|s8|auto`` is a
    one-line :class:`ExportError`."""
    if choice not in WEIGHT_ENCODING_CHOICES:
        raise ExportError(f"weight_encoding {choice!r}; expected one of {', '.join(WEIGHT_ENCODING_CHOICES)}")
    if choice != "auto":
        return choice
    return "s8" if (cpu_vnni() if vnni == "probe" else vnni) is True else "u8"


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
    ``"auto"`` picks s8 where this host's CPU has VNNI (or is ARM), else u8
    (:func:`resolve_weight_encoding`): the file then depends on the machine.
    """
    from brevitas.export import export_onnx_qcdq

    weight_encoding = resolve_weight_encoding(weight_encoding)
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
        gather_quantized_rows(model)  # quantised embedding tables: gather integer rows, not a dequantised table
        if weight_encoding == "u8":
            reencode_weights_u8(model)
        dynamic_matmul_integer(model)
        if not minifloat:
            unsigned_after_relu(model)
            activations_to_uint8(model)
        one_quantizer_per_tensor(model)
        one_dequantize_per_reader(model)
        sink_dequantize_through_shape_ops(model)
        fold_pad_into_conv(model)
        drop_identity_requantize(model)
        quantize_before_flatten(model)
        conv_integer_for_float_outputs(model)
        float_weights_for_float_outputs(model)
        if packing:
            pack_low_bit_weights(model)
            pack_embedding_tables(model)
            pack_conv_integer_weights(model)
        prune_unused(model)
        compact_graph(model)
        onnx.save(model, tmp)
    return Path(path)


def export_qonnx(qmodel: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, pack: bool | str = True) -> Path:
    """QONNX (Quant nodes with arbitrary bit widths), cleaned up with qonnx, batch 1.

    ``pack=True`` (``"int4"``, the default) stores integer weights as integers at their bit width
    (:func:`pack_qonnx_weights`: 2-4 bits two a byte, 5-8 bits int8, 9-16 bits int16) in front of
    the same Quant nodes: qonnx executes the file bit for bit as before, and qonnx's cleanup
    (FoldConstants) gives back float weight initialisers for FINN / hls4ml; tensor names are
    shortened (:func:`compact_qonnx_names`; cleanup's GiveReadableTensorNames names them again).
    ``pack=False`` (``"none"``) writes Brevitas's float weights and names, as before. A bad
    ``pack`` is a one-line ExportError before any file is written."""
    from brevitas.export import export_qonnx as _export
    from qonnx.util.cleanup import cleanup

    mode = resolve_pack(pack)
    qmodel.eval()
    with _exporting(path, "QONNX") as tmp:
        _export(qmodel, args=example_input[:1], export_path=tmp, dynamo=False, **NAMES)
        cleanup(tmp, out_file=tmp)
        if mode != "none":
            model = onnx.load(tmp)
            pack_qonnx_weights(model, mode)
            compact_qonnx_names(model)
            onnx.save(model, tmp)
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


NAMED_OPS = ("Conv", "Gemm", "MatMul", "ConvInteger", "MatMulInteger")  # layers: per-layer diagnostics name them


def _short_names(graph: onnx.GraphProto):
    """A function giving each internal tensor name ``t0``, ``t1``, ... in the order first asked
    (graph inputs and outputs keep theirs; the same name always gets the same short one)."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = f"t{len(names)}"
        return names[name]

    return short


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


# ------------------------------------------------------------------------- integer-kernel fusion
# onnxruntime fuses DequantizeLinear -> Conv/Gemm/MatMul (-> QuantizeLinear) into QLinearConv /
# QGemm / MatMulIntegerToFloat only where (a) each DequantizeLinear has one reader, and (b) the
# activation type matches what the kernels take (uint8 with uint8 weights). Two things in
# Brevitas's QCDQ graphs break that: identical input quantisers of several layers (Q, K and V of
# an attention block) whose nodes and scale initializers are identical, which onnxruntime's
# common-subexpression elimination merges into one DequantizeLinear with several readers; and
# sub-8-bit signed activations, exported as QuantizeLinear(int8) -> Clip -> DequantizeLinear,
# which onnxruntime's own int8 -> uint8 conversion does not look through (it wants the pair
# adjacent), so the layer sees int8 activations beside uint8 weights and stays float.


def _replace_node(graph: onnx.GraphProto, old, new: list) -> None:
    """Put the nodes ``new`` where ``old`` was, in order (the graph stays topologically sorted)."""
    at = list(graph.node).index(old)
    graph.node.remove(old)
    for k, node in enumerate(new):
        graph.node.insert(at + k, node)


def _producers(graph: onnx.GraphProto) -> dict:
    """``{tensor name: the node that writes it}``."""
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


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


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (stable otherwise)."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in produced for i in n.input):
                ordered.append(n)
                produced.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle or an input nothing produces: leave the order as it was
            return
        pending = rest
    nodes = [onnx.NodeProto() for _ in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)


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


def pack_embedding_tables(model: onnx.ModelProto) -> int:
    """Store each int8 table that a Gather reads (:func:`gather_quantized_rows`) and whose values
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


def pack_conv_integer_weights(model: onnx.ModelProto) -> int:
    """Store the weights of ConvInteger nodes (:func:`conv_integer_for_float_outputs`) and of
    ``Cast -> Mul`` weights (:func:`float_weights_for_float_outputs`; INT4 read by the Cast to
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


def resolve_pack(pack: bool | str) -> str:
    """``"int4"`` or ``"none"`` for a ``pack`` choice (True / ``"int4"``: weights of at most 4 bits
    two a byte, every integer weight stored as an integer; False / ``"none"``: the exporters' own
    storage: int8 containers in QCDQ, float weights in QONNX). Anything else is a one-line
    :class:`ExportError`, raised before any file is written."""
    if not isinstance(pack, (bool, str)) or pack not in PACK_MODES:
        raise ExportError(f"pack {pack!r}: weights of at most 4 bits are stored two a byte or not at all; "
                          f"expected one of True, False, 'int4', 'none'")
    return PACK_MODES[pack]


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
