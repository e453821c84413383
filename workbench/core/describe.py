"""``describe(qmodel)``: what a quantised model really holds, one row per layer, read from the
model's own quantisers at run time (not from the spec that asked for it)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from .cost import packed_weight_bytes
from .formats import INT, minifloat_name
from ..tasks.models import layer_macs
from .quantize import QUANT_LAYERS, QUANTISABLE

COLUMNS = ["layer", "type", "weight_bits", "act_bits", "weight_format", "act_format", "granularity", "scale_type", "params", "macs", "weight_bytes", "weight_bytes_fp"]


def _is_po2(scale: torch.Tensor) -> bool:
    e = torch.log2(scale.detach().abs().flatten().double())
    return bool(torch.allclose(e, e.round(), atol=1e-6))


def _bits(qt) -> int | None:
    bw = getattr(qt, "bit_width", None)
    if bw is None and hasattr(qt, "exponent_bit_width"):  # a minifloat: sign + exponent + mantissa
        return 1 + int(round(float(qt.exponent_bit_width))) + int(round(float(qt.mantissa_bit_width)))
    return None if bw is None else int(round(float(bw)))


def _format(qt) -> str:
    """The number format (:mod:`workbench.core.formats`) of a quantised tensor or quantiser."""
    e = getattr(qt, "exponent_bit_width", None)
    if e is None:
        return INT
    e, m = (e() if callable(e) else e), qt.mantissa_bit_width
    m = m() if callable(m) else m
    return minifloat_name(int(round(float(e))), int(round(float(m))))


def _is_quant(inp) -> bool:
    return hasattr(inp, "bit_width") or hasattr(inp, "exponent_bit_width")


def describe(model: nn.Module, example_input: torch.Tensor | None = None) -> pd.DataFrame:
    """Per layer: type, weight bits, act bits (of the tensor it reads), their number formats
    (``int``, ``fp8_e4m3``, ...; None for float), weight-scale granularity and
    type, parameters, MACs per sample, packed weight bytes and float32 bytes.

    ``None`` bits mean float. Works on float models too (every layer then reads float).
    Quantised embedding tables are rows of type ``Embedding`` (granularity ``per_channel``: one
    scale per row; no activation, no MACs); tables kept float are ``Embedding (kept in float)``.
    """
    if example_input is None:
        shape = getattr(model, "workbench_input_shape", None)
        if shape is None:
            raise ValueError("describe() needs example_input for a model that was not calibrated by the workbench")
        example_input = torch.zeros((1, *shape), dtype=getattr(model, "workbench_input_dtype", torch.float32))
    plan = getattr(model, "workbench_plan", None)
    seen: dict[str, dict] = {}
    hooks = []
    for name, m in model.named_modules():
        if not isinstance(m, QUANTISABLE):
            continue

        def hook(mod, args, out, name=name):
            inp = args[0]
            act_bits = _bits(inp) if _is_quant(inp) else None
            act_format = _format(inp) if act_bits is not None else None
            iq = getattr(mod, "input_quant", None)
            if act_bits is None and iq is not None and iq.is_quant_enabled:
                act_format = _format(iq)
                act_bits = int(round(float(iq.bit_width()))) if act_format == INT else 1 + int(iq.exponent_bit_width()) + int(iq.mantissa_bit_width())
            seen[name] = {"act_bits": act_bits, "act_format": act_format, "macs": layer_macs(mod, out)}

        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, QUANTISABLE):
            continue
        n_w = m.weight.numel()
        n_b = 0 if m.bias is None else m.bias.numel()
        w_bits = gran = scale_type = w_format = None
        if isinstance(m, QUANT_LAYERS) and m.weight_quant.is_quant_enabled:
            qw = m.quant_weight()
            w_bits = _bits(qw)
            w_format = _format(qw)
            gran = "per_channel" if qw.scale.numel() > 1 else "per_tensor"
            scale_type = "po2" if _is_po2(qw.scale) else "float"
        base = next(c for c in QUANTISABLE if isinstance(m, c))
        depthwise = isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups > 1 and m.groups == m.in_channels
        rows.append(
            {
                "layer": name,
                "type": base.__name__ + (" (depthwise)" if depthwise else ""),
                "weight_bits": w_bits,
                "act_bits": seen.get(name, {}).get("act_bits"),
                "weight_format": w_format,
                "act_format": seen.get(name, {}).get("act_format"),
                "granularity": gran,
                "scale_type": scale_type,
                "params": n_w + n_b,
                "macs": seen.get(name, {}).get("macs", 0),
                "weight_bytes": packed_weight_bytes(n_w, n_b, w_bits),
                "weight_bytes_fp": packed_weight_bytes(n_w, n_b, None),
            }
        )
    for name, kind in (plan.unsupported.items() if plan else []):
        n = sum(p.numel() for p in model.get_submodule(name).parameters(recurse=False))
        rows.append({"layer": name, "type": f"{kind} (kept in float)", "weight_bits": None, "act_bits": None, "weight_format": None, "act_format": None,
                     "granularity": None, "scale_type": None, "params": n, "macs": 0, "weight_bytes": packed_weight_bytes(n, 0, None),
                     "weight_bytes_fp": packed_weight_bytes(n, 0, None)})
    rows += _embedding_rows(model)
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("weight_bits", "act_bits"):
        df[col] = df[col].astype("Int64")
    return df


def _embedding_rows(model: nn.Module) -> list[dict]:
    """Rows of the quantised embedding tables (:class:`workbench.core.quantize.RowQuantEmbedding`)."""
    from .quantize import RowQuantEmbedding

    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, RowQuantEmbedding) or not m.weight_quant.is_quant_enabled:
            continue
        qw = m.quant_weight()
        n = m.weight.numel()
        rows.append({"layer": name, "type": "Embedding", "weight_bits": _bits(qw), "act_bits": None, "weight_format": _format(qw), "act_format": None,
                     "granularity": "per_channel" if qw.scale.numel() > 1 else "per_tensor", "scale_type": "po2" if _is_po2(qw.scale) else "float",
                     "params": n, "macs": 0, "weight_bytes": packed_weight_bytes(n, 0, _bits(qw)), "weight_bytes_fp": packed_weight_bytes(n, 0, None)})
    return rows
