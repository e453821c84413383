"""Post-training quantisation steps: activation calibration and bias correction.

Cross-layer equalisation runs before quantisation (``quantize_model(..., equalize_iters=N)``),
since Brevitas applies it to the float graph.
"""

from __future__ import annotations

import torch
from brevitas.graph.calibrate import bias_correction_mode, calibration_mode
from torch import nn
from tqdm.auto import tqdm

from .data import check_calibration


def _batches(x: torch.Tensor, batch_size: int, desc: str, progress: bool):
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress, leave=False):
        yield x[i : i + batch_size]


def calibrate(qmodel: nn.Module, x: torch.Tensor, batch_size: int = 128, progress: bool = False) -> nn.Module:
    """Collect activation statistics over ``x`` and fix the activation scales (in place)."""
    check_calibration(x)
    qmodel.eval()
    with torch.no_grad(), calibration_mode(qmodel):
        for xb in _batches(x, batch_size, "calibrate", progress):
            qmodel(xb)
    qmodel.workbench_input_shape = tuple(x.shape[1:])
    qmodel.workbench_input_dtype = x.dtype  # token ids stay integers
    return qmodel


def bias_correction(qmodel: nn.Module, x: torch.Tensor, batch_size: int = 128, progress: bool = False) -> nn.Module:
    """Shift each layer's bias so its mean output matches the float layer's (in place)."""
    check_calibration(x, "bias-correction data")
    qmodel.eval()
    with torch.no_grad(), bias_correction_mode(qmodel):
        for xb in _batches(x, batch_size, "bias correction", progress):
            qmodel(xb)
    return qmodel
