"""Quantised attention matmuls for Hugging Face ``transformers`` encoders (``attention_bits``).

transformers computes attention in a function it looks up by ``config._attn_implementation`` in
``ALL_ATTENTION_FUNCTIONS`` (the mask builder likewise in ``ALL_MASK_ATTENTION_FUNCTIONS``). This
module registers one more, :data:`IMPLEMENTATION`: the same arithmetic as transformers' eager
attention (``softmax(Q Kᵀ · scaling + mask) V``), with the inputs of both matmuls quantised by the
Brevitas activation quantisers of an :class:`AttentionQuant` attached to each attention module
(query, transposed key and value signed; the softmax probabilities unsigned; static per-tensor
scales, calibrated by the ordinary calibration pass and held in the model's state).
:func:`quantize_attention` attaches them and switches the model's configs to this
implementation; a module without its :class:`AttentionQuant` computes plain eager attention.
Attention that does more than BERT-style eager attention (soft-capping, sliding windows,
attention sinks: decoder LLMs) is refused in one line (:class:`UnsupportedLayerError`) when it
first runs, never computed wrongly.

Exported QCDQ, each matmul reads two ``QuantizeLinear -> DequantizeLinear`` pairs, which
onnxruntime fuses into ``MatMulIntegerToFloat`` (or ``QLinearMatMul``).

Importing this module registers the implementation (unpickling a quantised model imports it
through :class:`AttentionQuant`); it imports ``transformers``.
"""

from __future__ import annotations

import functools
import inspect

import brevitas.nn as qnn
import torch
from torch import nn

from ..infra.errors import UnsupportedLayerError

IMPLEMENTATION = "workbench_quant_attention"
ATTRIBUTE = "workbench_attention_quant"  # the AttentionQuant's name on each attention module
QUANTISERS = ("query", "key", "probs", "value")
_UNSUPPORTED = ("softcap", "sliding_window", "s_aux")  # attention arithmetic beyond eager BERT-style attention


class AttentionQuant(nn.Module):
    """The four activation quantisers of one attention module's two matmuls: ``query`` and
    ``key`` (Q · Kᵀ; the key is quantised transposed, as the matmul reads it), ``probs`` (the
    softmax output, unsigned) and ``value`` (probs · V)."""

    def __init__(self, bits: int, scale_type: str = "float"):
        super().__init__()
        from .quantizers import act_quantizer

        self.bits = int(bits)
        for name in QUANTISERS:
            signed = name != "probs"
            setattr(self, name, qnn.QuantIdentity(act_quant=act_quantizer(self.bits, signed, scale_type), return_quant_tensor=False))

    def forward(self, which: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` through quantiser ``which`` (called through this module, so that exported node names
        read ``.../<attention>/workbench_attention_quant/<which>/...``, as its state does)."""
        return _value(getattr(self, which)(x))


def _value(t):
    return t.value if hasattr(t, "value") else t


def quant_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                            scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """transformers' eager attention with quantised matmul inputs (see the module docstring)."""
    unsupported = [k for k in _UNSUPPORTED if kwargs.get(k) is not None] + (["sinks"] if getattr(module, "sinks", None) is not None else [])
    if unsupported:
        raise UnsupportedLayerError(f"{type(module).__name__}: attention_bits computes eager scaled-dot-product attention with an additive mask; "
                                    f"this model's attention also uses {', '.join(unsupported)}; expected a BERT-style encoder (leave attention_bits out)")
    aq = getattr(module, ATTRIBUTE, None)
    quant = aq if aq is not None else (lambda which, t: t)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    groups = getattr(module, "num_key_value_groups", 1) or 1
    if groups > 1:  # grouped-query attention: each key/value head serves several query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(quant("query", query), quant("key", key.transpose(2, 3))) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(quant("probs", probs), quant("value", value))
    return out.transpose(1, 2).contiguous(), probs


def _register() -> None:
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(IMPLEMENTATION, quant_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)  # the additive float mask eager attention adds


_register()


@functools.cache
def _dispatches(cls: type) -> bool:
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of the attention modules whose forward hands Q, K and V to transformers'
    attention interface (``ALL_ATTENTION_FUNCTIONS``), in order."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "config") and _dispatches(type(m))}


def quantize_attention(model: nn.Module, bits: int, scale_type: str = "float") -> list[str]:
    """Attach an :class:`AttentionQuant` at ``bits`` to every attention module of ``model`` (in
    place) and route their configs to :data:`IMPLEMENTATION`. Returns the modules' names (empty:
    the model has no transformers attention)."""
    found = attention_modules(model)
    for module in found.values():
        setattr(module, ATTRIBUTE, AttentionQuant(bits, scale_type))
        module.config._attn_implementation = IMPLEMENTATION  # the model's modules share this config: its mask builder follows
    return list(found)
