"""What the ``tflite-int8`` target knows of a quantised model's layers: the ops a layer becomes, which
layers the file can carry (:func:`support_table`), each layer's settings, and the float *carrier*
model the converter sees (:func:`carrier_model`)."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import warnings

import torch
from torch import nn

from ...infra.errors import ExportError


#: TFLite ops a workbench layer becomes (the op whose output is the layer's output).
LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")
ACT_BITS = (8, 16)
CALIB_SAMPLES = 256  # AEQ calibration samples (every tensor needs a range before carrying)
MATCH_SAMPLES = 8  # samples the tensor <-> quantiser matching compares
MATCH_TOLERANCE = 0.15  # mean |tflite - sim| / mean |sim| under which the closest quantiser is taken
NAME_TOLERANCE = 0.8  # ... under which the quantiser named like the tensor's module is taken (wrong ones: about 1.4)


#: How :func:`export_tflite_int8` stores quantised weights: ``native`` (4-bit as packed INT4,
#: 8-bit as int8) or ``int8`` (every weight tensor int8; 2..7-bit codes held in it).
WEIGHT_CONTAINERS = ("native", "int8")
#: Weight bits an int8 container holds exactly (8: AEQ's own int8 quantisation).
CONTAINER_BITS = range(2, 9)


# ----------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:400]}"


@contextlib.contextmanager
def _quiet():
    """Silence the converters' progress output (Python-level stdout / stderr)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _stderr_to_null():
    """Silence C-level stderr (TFLite Micro prints allocation failures there)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _module_regex(layer: str) -> str:
    """A regex finding the torch module ``layer`` (``features.3``) in a litert_torch tensor name,
    where each path component is written ``<type qualname>_<attribute name>``."""
    parts = layer.split(".")
    return r"(?:^|/)" + "/".join(r"[A-Za-z0-9.]+_" + re.escape(p) for p in parts) + r"(?=;|$)"


def quant_layers(qmodel: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of the qmodel's Conv/Linear layers (quantised or left float), in order."""
    from ...core.quantize import QUANTISABLE

    return {n: m for n, m in qmodel.named_modules() if isinstance(m, QUANTISABLE)}


def _layer_settings(qmodel: nn.Module) -> dict[str, dict]:
    """Per layer: op, weight_bits, act_bits, formats, granularity, scale type (from describe)."""
    from ...core.describe import describe

    table = describe(qmodel)
    out = {}
    for r in table.to_dict("records"):
        out[r["layer"]] = r
    return out


def _nan_none(v):
    """None for a missing table cell (None, NaN, pandas NA), else the value."""
    import pandas as pd

    try:
        return None if v is None or bool(pd.isna(v)) else v
    except (TypeError, ValueError):
        return v


# ----------------------------------------------------------------------------- support


def support_table(qmodel: nn.Module):
    """One row per layer: ``layer``, ``op``, ``supported``, ``reason``. Carried: integer weights of
    2 to 8 bits (per-channel or per-tensor, float scales; 2/3/5/6/7-bit codes in int8 containers,
    said in ``reason``), int activations of 8 or 16 bits (static), layers left float. Refused:
    other bit widths, FP8 / minifloat formats, power-of-two scales
    (AEQ recomputes max-abs scales), dynamic activations, quantised embedding tables and attention."""
    import pandas as pd

    rows = []
    plan = getattr(qmodel, "workbench_plan", None)
    for name, r in _layer_settings(qmodel).items():
        op = str(r.get("type"))
        wb, ab = _nan_none(r.get("weight_bits")), _nan_none(r.get("act_bits"))
        wf, af = _nan_none(r.get("weight_format")), _nan_none(r.get("act_format"))
        reasons = []
        if op.startswith("Embedding"):
            if wb is not None:
                reasons.append("quantised embedding tables are not carried by the TFLite target")
            rows.append({"layer": name, "op": op, "supported": not reasons, "reason": "; ".join(reasons)})
            continue
        if wb is not None and int(wb) not in CONTAINER_BITS:
            reasons.append(f"{int(wb)}-bit weights (TFLite carries 2- to 8-bit weights: 8-bit int8, 4-bit INT4, others in int8 containers)")
        if ab is not None and int(ab) not in ACT_BITS:
            reasons.append(f"{int(ab)}-bit activations (TFLite runs int8 or int16 activations)")
        if wf not in (None, "int"):
            reasons.append(f"weight format {wf} (TFLite Micro has integer kernels only)")
        if af not in (None, "int"):
            reasons.append(f"activation format {af} (TFLite Micro has integer kernels only)")
        if wb is not None and str(r.get("scale_type")) == "po2":
            reasons.append("power-of-two scales (AEQ recomputes max-abs float scales)")
        if wb is None and ab is not None:
            reasons.append("float weights reading quantised activations (TFLite has no such kernel; leave the layer float or quantise its weights)")
        if wb is not None and ab is None:
            reasons.append("quantised weights reading float activations (weight-only layers are not carried; quantise its input too)")
        note = ""
        if not reasons and wb is not None and int(wb) not in (4, 8):
            note = f"{int(wb)}-bit codes in an int8 container (TFLite has no {int(wb)}-bit type: stored, and read from flash, at 8 bits)"
        rows.append({"layer": name, "op": op, "supported": not reasons, "reason": "; ".join(reasons) or note})
    if plan is not None:
        spec = plan.spec
        if getattr(spec, "attention_bits", None) is not None:
            rows.append({"layer": "attention", "op": "attention", "supported": False, "reason": "quantised attention matmuls are not carried"})
        for name in plan.embeddings or {}:
            if not any(r["layer"] == name for r in rows):
                rows.append({"layer": name, "op": "Embedding", "supported": False, "reason": "quantised embedding tables are not carried"})
    dyn = _dynamic_layers(qmodel)
    for row in rows:
        if row["layer"] in dyn:
            row["supported"] = False
            row["reason"] = "; ".join(filter(None, [row["reason"], "dynamic activation quantisation (TFLite Micro needs static scales)"]))
    return pd.DataFrame(rows, columns=["layer", "op", "supported", "reason"])


def _dynamic_layers(qmodel) -> set[str]:
    plan = getattr(qmodel, "workbench_plan", None)
    if plan is None:
        return set()
    return {name for name, lq in plan.layers.items() if getattr(lq, "act_dynamic", False) or getattr(lq, "dynamic", False)}


# ----------------------------------------------------------------------------- carrier model


def carrier_model(qmodel: nn.Module, float_model: nn.Module) -> nn.Module:
    """A float copy of ``float_model`` that computes what the simulation's weights compute: every
    BatchNorm absent from (or an Identity in) ``qmodel`` (folded by the simulation) becomes an
    Identity, and every Conv/Linear gets ``qmodel``'s weight (dequantised where quantised) and bias."""
    carrier = copy.deepcopy(float_model).eval()
    qmods = dict(qmodel.named_modules())
    fmods = dict(carrier.named_modules())
    for name, m in list(fmods.items()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            qm = qmods.get(name)
            if qm is None or isinstance(qm, nn.Identity):
                _set_module(carrier, name, nn.Identity())
    for name, qm in quant_layers(qmodel).items():
        fm = fmods.get(name)
        if fm is None:
            raise ExportError(f"layer {name} of the quantised model has no module of that name in the float model; pass the float model the simulation was built from")
        with torch.no_grad():
            w = qm.quant_weight().value if _weight_quantised(qm) else qm.weight
            fm.weight.data = w.detach().clone().float().reshape(fm.weight.shape)
            if qm.bias is not None:
                fm.bias = nn.Parameter(qm.bias.detach().clone().float())
            elif fm.bias is not None:
                fm.bias = None
    return carrier


def _weight_quantised(layer: nn.Module) -> bool:
    """Whether a Brevitas layer quantises its weights (its weight quantiser is enabled)."""
    proxy = getattr(layer, "weight_quant", None)
    return isinstance(proxy, nn.Module) and bool(getattr(proxy, "is_quant_enabled", False))


def quiet_toolchain_logs() -> None:
    """Keep the converters' own log lines (TensorFlow's C++ INFO lines, torchao's missing-kernel
    warnings) off the user's terminal; errors still surface as exceptions."""
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("torchao", "absl", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)
