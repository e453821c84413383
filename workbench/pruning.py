"""Weight pruning masks: unstructured magnitude (per layer or global) and N:M semi-structured
sparsity (2:4), applied to Conv1d / Conv2d / Linear weights.

These masks leave tensors dense: they change what the weights are, not how big the model is,
and reports say so. (Structured channel pruning that shrinks the model is a later step.)
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import torch
from torch import nn

from .errors import SpecError
from .quantize import QUANTISABLE


def _check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not (0.0 <= float(sparsity) < 1.0):
        raise SpecError(f"sparsity: expected a value in [0, 1); got {sparsity!r}")
    return float(sparsity)


def prunable_layers(model: nn.Module, layers: list[str] | None = None) -> dict[str, nn.Module]:
    found = {name: m for name, m in model.named_modules() if isinstance(m, QUANTISABLE)}
    if layers is None:
        return found
    missing = [n for n in layers if n not in found]
    if missing:
        import difflib

        close = difflib.get_close_matches(missing[0], list(found), n=3, cutoff=0.4)
        raise SpecError(f"layers.{missing[0]}: no such prunable layer" + (f"; closest: {', '.join(close)}" if close else ""))
    return {n: found[n] for n in layers}


def unstructured_masks(model: nn.Module, sparsity: float, scope: str = "global", layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks (1 = kept) zeroing the smallest-magnitude weights.

    ``scope="layer"``: each layer loses ``sparsity`` of its weights; ``"global"``: one magnitude
    threshold across all layers, so the total hits ``sparsity`` and sensitive layers keep more.
    """
    sparsity = _check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise SpecError(f"scope {scope!r}; expected 'global' or 'layer'")
    mods = prunable_layers(model, layers)
    masks = {}
    if scope == "layer":
        for name, m in mods.items():
            w = m.weight.detach().abs().flatten()
            k = int(round(sparsity * w.numel()))
            mask = torch.ones_like(w)
            if k:
                mask[torch.argsort(w, stable=True)[:k]] = 0
            masks[name] = mask.view_as(m.weight)
        return masks
    flat = torch.cat([m.weight.detach().abs().flatten() for m in mods.values()])
    k = int(round(sparsity * flat.numel()))
    keep = torch.ones_like(flat)
    if k:
        keep[torch.argsort(flat, stable=True)[:k]] = 0
    offset = 0
    for name, m in mods.items():
        n = m.weight.numel()
        masks[name] = keep[offset : offset + n].view_as(m.weight)
        offset += n
    return masks


def nm_masks(model: nn.Module, n: int = 2, m: int = 4, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """N:M masks: in every group of ``m`` consecutive weights along a layer's reduction dimension
    (input features, or input channels x kernel), keep the ``n`` largest. A tail shorter than
    ``m`` stays dense; layers whose reduction dimension is shorter than ``m`` are left out."""
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise SpecError(f"N:M sparsity needs integers 0 < n < m; got {n}:{m}")
    masks = {}
    for name, mod in prunable_layers(model, layers).items():
        w = mod.weight.detach().abs().reshape(mod.weight.shape[0], -1)
        length = w.shape[1] - w.shape[1] % m
        if length == 0:
            continue
        groups = w[:, :length].reshape(w.shape[0], -1, m)
        order = torch.argsort(groups, dim=-1, stable=True)
        keep = torch.ones_like(groups)
        keep.scatter_(-1, order[..., : m - n], 0)
        mask = torch.ones_like(w)
        mask[:, :length] = keep.reshape(w.shape[0], length)
        masks[name] = mask.view_as(mod.weight)
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with the masked weights set to zero (the input model is unchanged)."""
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for name, mask in masks.items():
            w = pruned.get_submodule(name).weight
            w.mul_(mask.to(w.dtype))
    return pruned


def sparsity_table(model: nn.Module) -> pd.DataFrame:
    """Per prunable layer: weights, zeros, sparsity, and dense float32 bytes (unchanged by masks)."""
    rows = []
    for name, m in prunable_layers(model).items():
        w = m.weight.detach()
        zeros = int((w == 0).sum())
        rows.append({"layer": name, "weights": w.numel(), "zeros": zeros, "sparsity": zeros / w.numel(), "dense_bytes": 4 * w.numel()})
    df = pd.DataFrame(rows)
    df.attrs["global_sparsity"] = float(df["zeros"].sum() / max(1, df["weights"].sum())) if len(df) else math.nan
    return df
