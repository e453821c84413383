"""What every ONNX writer shares: opsets, input / output names and the dynamic batch axis, the
atomic write of an export (:func:`_exporting`: one :class:`ExportError` line on failure), the
checks that a quantised model's bits and number formats fit an exporter, and the plain float
ONNX export (:func:`export_float`, for latency and agreement baselines)."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch
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


def export_float(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> Path:
    """The float model as ONNX, for latency and agreement baselines."""
    model.eval()
    with _exporting(path, "float ONNX") as tmp:
        torch.onnx.export(model, (example_input[:1],), tmp, opset_version=OPSET, dynamo=False, **DYNAMIC_BATCH)
    return Path(path)
