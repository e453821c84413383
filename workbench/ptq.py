"""Post-training quantisation steps, each Brevitas's own algorithm behind one function:

- ``act_equalization`` (SmoothQuant-style, before quantisation: scales move activation outliers
  into the weights, a float Mul in front of each layer keeps the function);
- cross-layer equalisation (``quantize_model(..., equalize_iters=N)``, on the float graph);
- ``calibrate`` (activation scales), then ``gpxq``: GPTQ or GPFQ (weights re-rounded layer by layer
  against calibration data), then ``bias_correction`` (mean output error removed).

:data:`PTQ_ALGORITHMS` names them as specs and recipes select them.
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


PTQ_ALGORITHMS = ("act_equalization", "cle", "bias_correction", "gptq", "gpfq")


def act_equalization(model: nn.Module, x: torch.Tensor, alpha: float = 0.5, batch_size: int = 128, progress: bool = False) -> nn.Module:
    """SmoothQuant-style activation equalisation of a FLOAT model (in place): per input channel,
    activations are divided and weights multiplied by ``max|x|^alpha / max|w|^(1-alpha)``; a float
    Mul in front of each layer keeps the function the same. Run it before quantisation."""
    from brevitas.graph.equalize import activation_equalization_mode

    if not 0.0 < alpha < 1.0:
        from .errors import SpecError

        raise SpecError(f"act_equalization: expected an alpha in (0, 1); got {alpha!r}")
    check_calibration(x, "equalisation data")
    model.eval()
    with torch.no_grad(), activation_equalization_mode(model, alpha, add_mul_node=True, layerwise=True):
        for xb in _batches(x, batch_size, "activation equalisation", progress):
            model(xb)
    return model


def _whole_tensor_gptq():
    """Brevitas's GPTQ quantising whole weight tensors. Its default quantises one weight column
    at a time, and a per-channel scale computed from a single column makes every weight exact, so
    GPTQ changed nothing (measured here on Brevitas 0.13.4: max weight change 1.5e-8). Here each
    column is taken from the quantisation of the whole, current weight tensor."""
    from brevitas.graph.gptq import GPTQ
    from brevitas.quant_tensor import _unpack_quant_tensor

    class WholeTensorGPTQ(GPTQ):
        def get_quant_weights(self, i, i1, permutation_list, with_quant_history=False):
            q = _unpack_quant_tensor(self.layer.quant_weight(quant_input=self.quant_metadata))
            q = q.flatten(1).view(self.groups, -1, q.flatten(1).shape[-1])
            if self.act_order:
                q = torch.stack([q[g][:, perm] for g, perm in enumerate(permutation_list)])
            return q[:, :, : i1 + i] if with_quant_history else q[:, :, i1 + i]

    return WholeTensorGPTQ


def gpxq(qmodel: nn.Module, x: torch.Tensor, algorithm: str = "gpfq", batch_size: int = 128, progress: bool = False) -> nn.Module:
    """GPTQ or GPFQ (Brevitas): re-round each layer's weights, layer by layer, so its output on
    the calibration data stays closest to the float layer's (in place, after calibration)."""
    from brevitas.graph.gpfq import gpfq_mode
    from brevitas.graph.gptq import gptq_mode

    check_calibration(x, f"{algorithm} data")
    qmodel.eval()
    mode = gpfq_mode(qmodel, use_quant_activations=True) if algorithm == "gpfq" else gptq_mode(qmodel, use_quant_activations=True,
                                                                                                gptq_class=_whole_tensor_gptq())
    with torch.no_grad(), mode as algo:
        for _ in tqdm(range(algo.num_layers), desc=algorithm, disable=not progress, leave=False):
            for xb in _batches(x, batch_size, algorithm, False):
                algo.model(xb)
            algo.update()
    return qmodel
