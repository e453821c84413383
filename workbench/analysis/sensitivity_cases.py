"""One case of a sensitivity sweep (:mod:`workbench.analysis.sensitivity`): its key and the
full-model spec it stands for, the quantised versions of its layer (weight-only ones frozen), the
reference full rebuild (:func:`naive_case`) and the scoring of its outputs against the float
model's. ``config`` arguments are :class:`~workbench.analysis.sensitivity.SensitivityConfig`."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.formats import FORMATS, INT
from ..core.quantize import apply_weight_settings, build_quant_layer
from ..core.spec import LayerQuant, QuantSpec
from ..export.pipeline import quantize_task
from ..infra.errors import SpecError
from ..tasks.evaluate import predict
from ..tasks.metrics import output_agreement


def bits_and_format(value) -> tuple[int | None, str | None]:
    """A sweep entry (bits, None for float, or a fixed-width format name) as (bits, format)."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return FORMATS[value].fixed_bits, value
    return value, INT


def case_key(layer: str, w, a, mode: str) -> str:
    return f"{mode}|{layer}|w{w if w is not None else 'fp'}|a{a if a is not None else 'fp'}"


def case_spec(config, layer: str, w, a) -> QuantSpec:
    """The full-model spec a case stands for (what the naive loop builds)."""
    if config.mode == "leave-one-float":
        return config.base.with_layers({layer: {"weight_bits": "float"}})
    b = config.base

    def setting(what, v):
        return {f"{what}_format": v} if isinstance(v, str) else {f"{what}_bits": "float" if v is None else v}

    return QuantSpec.parse({"weight_bits": "float", "act_bits": "float", "weight_granularity": b.weight_granularity, "scale_type": b.scale_type,
                            "layers": {layer: {**setting("weight", w), **setting("act", a)}}})


def _layer_quant(w, a, granularity: str, scale_type: str) -> LayerQuant:
    (wb, wf), (ab, af) = bits_and_format(w), bits_and_format(a)
    return LayerQuant(wb, ab, granularity, scale_type, wf or INT, af or INT)


def compare_outputs(task, out: torch.Tensor, fp_out: torch.Tensor, fp_metric: float, split) -> dict:
    """Task metric and label-free errors of ``out`` against the float outputs."""
    if not torch.isfinite(out).all():
        return {"metric": math.nan, "metric_delta": math.nan, "sqnr_db": math.nan, "output_mse": math.nan, "kl": math.nan, "status": "nonfinite"}
    scored = task.missing_labels(split) is None  # a metric that needs labels the split lacks: NaN, status ok
    metric = task.score(out, split) if scored else math.nan
    cmp = output_agreement(out, fp_out, task.is_classifier)
    kl = math.nan
    if task.is_classifier:
        kl = float(F.kl_div(F.log_softmax(out, 1), F.log_softmax(fp_out, 1), reduction="batchmean", log_target=True))
    ok = not scored or _finite(metric)  # the metric itself may be NaN / inf (a user's metric function)
    return {"metric": metric, "metric_delta": metric - fp_metric, "sqnr_db": cmp["sqnr_db"], "output_mse": float(((out - fp_out) ** 2).mean()),
            "kl": kl, "status": "ok" if ok else "nonfinite"}


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class _LayerRun:
    """The outcome of one layer's cases: per case its output tensor, or the exception it raised."""

    def __init__(self, n: int):
        self.outs: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.errors: dict[int, Exception] = {}

    def result(self, i: int):
        return self.errors[i] if i in self.errors else torch.cat(self.outs[i]).float()


_CASE_ERRORS = (RuntimeError, ValueError, FloatingPointError)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MB"


def _too_small(budget_mb: float, need: float, what: str) -> SpecError:
    return SpecError(f"max_cache_mb={budget_mb:g} cannot hold one batch of cached activations ({what}); expected at least {_mb(need)}")


def freeze_weights(qlayer: nn.Module, base: nn.Module) -> nn.Module | None:
    """A plain copy of ``base`` computing what the weight-quantised Brevitas ``qlayer`` computes on
    a float input: ``fn(x, quantised weight, float bias)``, its quantised weight computed once
    instead of at every pass. None where ``qlayer`` quantises more than its weight (its input,
    bias or output), which a plain layer cannot repeat."""
    if any(getattr(qlayer, q).is_quant_enabled for q in ("input_quant", "bias_quant", "output_quant")):
        return None
    frozen = copy.deepcopy(base)
    with torch.no_grad():
        qw = qlayer.quant_weight()
        frozen.weight.copy_(qw.value if hasattr(qw, "value") else qw)
    return frozen.eval()


def weight_only_versions(base: nn.Module, lqs: list[LayerQuant]) -> list[nn.Module]:
    """``base`` at each weight-only setting of ``lqs``: one Brevitas layer is built and its weight
    quantiser re-set per setting (building one per setting costs ~10 ms each), frozen
    (:func:`freeze_weights`) where that is exact, else built on its own."""
    out, built, current = [], None, None
    for lq in lqs:
        if built is None:
            built = build_quant_layer(base, lq)
        else:
            apply_weight_settings(built, lq, current)
        current = lq
        frozen = freeze_weights(built, base)
        out.append(frozen if frozen is not None else build_quant_layer(base, lq).eval())
    return out


def naive_case(task, model: nn.Module, config, layer: str, w, a) -> torch.Tensor:
    """The reference: build, calibrate and run the whole model the case stands for."""
    qmodel = quantize_task(task, model, case_spec(config, layer, w, a), config.ptq)
    return predict(qmodel, task.data.eval.x)
