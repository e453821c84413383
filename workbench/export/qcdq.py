"""The QCDQ writer (QuantizeLinear-Clip-DequantizeLinear, for onnxruntime): Brevitas's export
followed by the graph rewrites (:mod:`workbench.export.rewrites`, :mod:`workbench.export.fusion`,
:mod:`workbench.export.packing`) that let onnxruntime run integer kernels, and the choice of
the weight encoding (u8 or s8) by the host CPU. Written atomically; the batch axis is dynamic."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import torch
from torch import nn

from ..infra.errors import ExportError
from .fusion import (
    activations_to_uint8,
    conv_integer_for_float_outputs,
    drop_identity_requantize,
    float_weights_for_float_outputs,
    fold_pad_into_conv,
    one_dequantize_per_reader,
    one_quantizer_per_tensor,
    quantize_before_flatten,
    sink_dequantize_through_shape_ops,
    unsigned_after_relu,
)
from .onnx_graph import prune_unused
from .onnx_io import (
    DYNAMIC_BATCH,
    MINIFLOAT_OPSET,
    OPSET,
    _check_bits_exportable,
    _exporting,
    has_minifloat,
)
from .packing import (
    pack_conv_integer_weights,
    pack_embedding_tables,
    pack_low_bit_weights,
    packing_wanted,
)
from .rewrites import (
    compact_graph,
    drop_initializer_inputs,
    dynamic_matmul_integer,
    fold_integer_weight_quantize,
    gather_quantized_rows,
    reencode_weights_u8,
)

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
