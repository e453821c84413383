"""Post-training quantisation steps, each Brevitas's own algorithm behind one function:

- ``act_equalization`` (SmoothQuant-style, before quantisation: scales move activation outliers
  into the weights, a float Mul in front of each layer keeps the function);
- cross-layer equalisation (``quantize_model(..., equalize_iters=N)``, on the float graph);
- ``calibrate`` (activation scales), then ``gpxq``: GPTQ or GPFQ (weights re-rounded layer by layer
  against calibration data) or ``learned_rounding`` (AdaRound), then ``bias_correction`` (mean
  output error removed).

``PTQConfig`` (workbench.export.pipeline) and a recipe's ``ptq:`` section select them by name.
"""

from __future__ import annotations

import torch
from brevitas.graph.calibrate import bias_correction_mode, calibration_mode
from torch import nn
from tqdm.auto import tqdm

from ..tasks.data import check_calibration
from ..infra.determinism import fixed_threads
from ..infra.errors import CalibrationError, SpecError
from ..tasks.models import module_calls
from ..tasks.model_inputs import LayerInputs


def _batches(x: torch.Tensor, batch_size: int, desc: str, progress: bool):
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress, leave=False):
        yield x[i : i + batch_size]


def calibrate(qmodel: nn.Module, x: torch.Tensor, batch_size: int = 128, progress: bool = False) -> nn.Module:
    """Collect activation statistics over ``x`` and fix the activation scales (in place).
    Data that does not fit the model is a one-line :class:`CalibrationError` naming both shapes."""
    check_calibration(x)
    qmodel.eval()
    seen = LayerInputs(qmodel)
    batch = None
    try:
        with torch.no_grad(), calibration_mode(qmodel), seen:
            for batch in _batches(x, batch_size, "calibrate", progress):
                qmodel(batch)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        if isinstance(exc, CalibrationError) or batch is None:
            raise
        error = seen.explain(batch, exc, "calibration data", tuple(x.shape))
        if error is None:
            raise
        raise error from None
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




def act_equalization(model: nn.Module, x: torch.Tensor, alpha: float = 0.5, batch_size: int = 128, progress: bool = False) -> nn.Module:
    """SmoothQuant-style activation equalisation of a FLOAT model (in place): per input channel,
    activations are divided and weights multiplied by ``max|x|^alpha / max|w|^(1-alpha)``; a float
    Mul in front of each layer keeps the function the same. Run it before quantisation."""
    from brevitas.graph.equalize import activation_equalization_mode

    if not 0.0 < alpha < 1.0:
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


@fixed_threads()  # each call runs at the workbench's thread count (read at call time), then restores the caller's
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


# ---------------------------------------------------------------------------- learned rounding
LEARNED_ROUND_TYPES = ("QuantConv1d", "QuantConv2d", "QuantLinear")


def _rounding_targets(qmodel: nn.Module, layers, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The weight-quantised layers learned rounding will run on, in execution order; a named layer
    it cannot run on is a one-line :class:`SpecError`."""
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    from .spec import glob_hits

    modules = dict(qmodel.named_modules())
    supported = {n for n, m in modules.items() if type(m).__name__ in LEARNED_ROUND_TYPES and m.weight_quant.is_quant_enabled}
    if layers is None:
        chosen = set(supported)
        for n, m in modules.items():
            if isinstance(m, QuantWeightBiasInputOutputLayer) and n not in supported and m.weight_quant.is_quant_enabled:
                raise SpecError(f"learned rounding on layer {n!r} ({type(m).__name__}): it supports {', '.join(LEARNED_ROUND_TYPES)}; "
                                "name the layers to round in rounding_layers")
    else:
        chosen = set()
        for sel in layers:
            if sel in modules and sel not in supported:  # an exact name: it must be one learned rounding supports
                m = modules[sel]
                what = ("its weights are not quantised" if type(m).__name__ in LEARNED_ROUND_TYPES else f"it supports {', '.join(LEARNED_ROUND_TYPES)}"
                        + (f" (a glob such as '{sel}.*' selects the layers inside a block)" if any(True for _ in m.children()) else ""))
                raise SpecError(f"learned rounding on layer {sel!r} ({type(m).__name__}): {what}")
            hits = glob_hits(sel, sorted(supported), f"rounding_layers: {sel!r}")  # its own name (names win over globs), or the supported layers its glob matches
            if not hits:
                raise SpecError(f"rounding_layers: {sel!r} matches no weight-quantised Conv or Linear layer; expected a layer name or glob such as 'stack1.*'")
            chosen.update(hits)
    # execution order, and shared layers (run more than once per forward) refused: their captured
    # input would be only the first call's
    calls = module_calls(qmodel, example, sorted(chosen))
    for n in sorted(chosen):
        if calls.get(n, 0) != 1:
            ran = "never runs" if n not in calls else f"runs {calls[n]} times per forward (shared weights)"
            raise SpecError(f"learned rounding on layer {n!r}: it {ran}; expected a layer that runs once per forward")
    return [(n, modules[n]) for n in sorted(chosen, key=list(calls).index)]


def _layer_inputs(qmodel: nn.Module, layer: nn.Module, x: torch.Tensor, batch_size: int) -> list:
    """The inputs ``layer`` receives inside ``qmodel`` for each batch of ``x`` (the forward stops there)."""
    from brevitas.utils.torch_utils import StopFwdException

    store = []

    def hook(module, args):
        store.append(args[0])
        raise StopFwdException

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                try:
                    qmodel(x[i : i + batch_size])
                except StopFwdException:
                    pass
    finally:
        handle.remove()
    return store


def _bake_rounding(layer: nn.Module, injector) -> None:
    """Write the learned integer weights back as on-grid float weights and restore nearest rounding:
    the layer becomes an ordinary Brevitas layer (exports, checkpoints) with the same integers."""
    from brevitas.quant_tensor import _unpack_quant_tensor

    layer.eval()
    with torch.no_grad():
        learned = layer.quant_weight()
        ints = learned.int().clone()
        layer.weight.copy_(_unpack_quant_tensor(learned))
    layer.weight_quant.quant_injector = injector
    layer.weight_quant.init_tensor_quant()
    layer.eval()
    with torch.no_grad():
        baked = layer.quant_weight().int()
    if not torch.equal(baked, ints):  # a channel's largest weight rounded inwards changes its scale
        changed = int((baked != ints).sum())
        raise SpecError(f"learned rounding: {changed} weights of a layer changed when its rounding was fixed; expected none")


@fixed_threads()  # each call runs at the workbench's thread count (read at call time), then restores the caller's
def learned_rounding(qmodel: nn.Module, x: torch.Tensor, *, iters: int = 500, batch_size: int = 32, lr: float = 1e-3,
                     reg_weight: float = 0.01, layers=None, seed: int = 0, progress: bool = False) -> nn.Module:
    """AdaRound (Nagel et al. 2020) with Brevitas's learned-round quantiser (hard sigmoid) and its
    rounding regulariser, layer by layer in execution order (in place, after calibration).

    For each layer, the inputs it receives in the quantised model (earlier layers already rounded)
    are captured; per weight, the choice between rounding down and up is learned so the layer's
    output stays closest (MSE) to the same layer with float weights on the same inputs. The
    regulariser's temperature anneals so every choice ends at 0 or 1. The learned integers are then
    written back (:func:`_bake_rounding`), so export and checkpoints see an ordinary model.

    ``layers``: names or globs of the layers to round (default: every weight-quantised Conv1d,
    Conv2d and Linear). Naming a layer it does not support is a :class:`SpecError`.
    """
    import torch.nn.functional as F
    from brevitas.graph.calibrate import quantization_status_manager
    from brevitas.inject.enum import LearnedRoundImplType
    from brevitas.quant_tensor import _unpack_quant_tensor
    from brevitas_examples.common.learned_round.learned_round_method import (
        RoundRegularisationLoss,
        insert_learned_round_quantizers,
        return_learned_round_quantizers,
    )

    check_calibration(x, "learned-rounding data")
    qmodel.eval()
    generator = torch.Generator().manual_seed(seed)
    x = x[torch.randperm(len(x), generator=generator)]
    targets = _rounding_targets(qmodel, layers, x[:2])
    bar = tqdm(total=len(targets) * iters, desc="learned rounding", disable=not progress, leave=False)
    for name, layer in targets:
        inputs = _layer_inputs(qmodel, layer, x, batch_size)
        with torch.no_grad(), quantization_status_manager(layer, disable_weight_quant=True, disable_bias_quant=True):
            wanted = [_unpack_quant_tensor(layer(a)).detach() for a in inputs]
        injector = layer.weight_quant.quant_injector
        insert_learned_round_quantizers(layer, LearnedRoundImplType.HARD_SIGMOID, learned_round_zeta=1.1, learned_round_gamma=-0.1)
        (rounding,) = return_learned_round_quantizers(layer)
        rounding.train()
        regulariser = RoundRegularisationLoss(layer, weight=reg_weight, max_count=iters, b_range=(20, 2), warmup=0.2)
        optimiser = torch.optim.Adam([rounding.value], lr=lr)
        order = torch.randint(len(inputs), (iters,), generator=generator).tolist()
        with torch.enable_grad():
            for i in order:
                out = _unpack_quant_tensor(layer(inputs[i]))
                loss = F.mse_loss(out, wanted[i]) + regulariser(out, wanted[i])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                bar.update()
        _bake_rounding(layer, injector)
    bar.close()
    qmodel.eval()
    return qmodel
