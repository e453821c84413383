"""Per-layer statistics: weight and activation ranges, histograms, and quantisation-grid error.

Computed on the BatchNorm-folded float graph, i.e. on the weights that actually get quantised.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import torch
from brevitas.graph import quantize as bq
from torch import nn

from ..core.quantize import QUANTISABLE, build_quant_layer
from ..core.spec import LayerQuant


def folded_graph(model: nn.Module) -> nn.Module:
    """The traced float model with BatchNorm folded into the preceding layers (as quantised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bq.preprocess_for_quantize(copy.deepcopy(model).eval())


def quantised_weight(module: nn.Module, bits: int, granularity: str = "per_channel", scale_type: str = "float") -> tuple[torch.Tensor, torch.Tensor]:
    """``module``'s weight after quantisation at ``bits`` and its scale (per output channel or scalar)."""
    q = build_quant_layer(module, LayerQuant(bits, None, granularity, scale_type))
    with torch.no_grad():
        qw = q.quant_weight()
    return qw.value.detach(), qw.scale.detach().flatten()


def _activation_ranges(graph: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    ranges: dict[str, list[float]] = {}
    hooks = []
    for name, m in graph.named_modules():
        if isinstance(m, QUANTISABLE):
            def hook(mod, args, name=name):
                a = args[0]
                lo, hi = float(a.min()), float(a.max())
                old = ranges.get(name, [lo, hi])
                ranges[name] = [min(lo, old[0]), max(hi, old[1])]
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for i in range(0, len(x), 256):
                graph(x[i : i + 256])
    finally:
        for h in hooks:
            h.remove()
    return {k: (v[0], v[1]) for k, v in ranges.items()}


def layer_statistics(task, model: nn.Module, bits=(2, 3, 4, 6, 8), granularity: str = "per_channel", scale_type: str = "float") -> pd.DataFrame:
    """One row per layer: weight min / max / std, range of its input activation on the calibration
    split, and ``grid_error_b{bits}``: relative squared error ||Q(W) - W||^2 / ||W||^2."""
    graph = folded_graph(model)
    acts = _activation_ranges(graph, task.data.calib.x)
    rows = []
    depth = 0
    for name, m in graph.named_modules():
        if not isinstance(m, QUANTISABLE):
            continue
        w = m.weight.detach()
        row = {"layer": name, "depth": depth, "w_min": float(w.min()), "w_max": float(w.max()), "w_std": float(w.std()),
               "act_min": acts.get(name, (np.nan, np.nan))[0], "act_max": acts.get(name, (np.nan, np.nan))[1]}
        for b in bits:
            qw, _ = quantised_weight(m, b, granularity, scale_type)
            row[f"grid_error_b{b}"] = float(((qw - w) ** 2).sum() / (w**2).sum().clamp_min(1e-30))
        rows.append(row)
        depth += 1
    return pd.DataFrame(rows)


def weight_histogram(model: nn.Module, layer: str, bits: int, granularity: str = "per_channel", scale_type: str = "float", bins: int = 60,
                     graph: nn.Module | None = None) -> dict:
    """Histogram of a layer's folded weights and the quantisation grid at ``bits``.

    The grid shown is that of the output channel with the widest scale (all of them when per-tensor).
    """
    graph = folded_graph(model) if graph is None else graph
    m = graph.get_submodule(layer)
    w = m.weight.detach().flatten().numpy()
    counts, edges = np.histogram(w, bins=bins)
    _, scale = quantised_weight(m, bits, granularity, scale_type)
    top = float(scale.max())
    qmax = 2 ** (bits - 1) - 1
    grid = (np.arange(-qmax, qmax + 1) * top).tolist()
    return {"counts": counts.tolist(), "edges": edges.tolist(), "grid": grid, "scale": top, "bits": bits}
