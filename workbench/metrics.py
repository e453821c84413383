"""Task metrics (fractions in [0, 1]) and label-free comparisons of two models' outputs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Metric:
    """A named metric: ``fn(outputs, targets, inputs) -> float``; higher is better unless said."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], float]
    higher_is_better: bool = True

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor | None, inputs: torch.Tensor) -> float:
        return float(self.fn(outputs, targets, inputs))

    @classmethod
    def wrap(cls, fn: Callable | "Metric", name: str | None = None, higher_is_better: bool = True) -> "Metric":
        """Accept a user callable ``fn(outputs, targets)`` or ``fn(outputs, targets, inputs)``."""
        if isinstance(fn, Metric):
            return fn
        n_params = len(inspect.signature(fn).parameters)
        if n_params == 2:
            inner = lambda o, t, x, fn=fn: fn(o, t)
        else:
            inner = fn
        return cls(name or getattr(fn, "__name__", "metric"), inner, higher_is_better)


def top1_accuracy(outputs: torch.Tensor, targets: torch.Tensor, inputs=None) -> float:
    return float((outputs.argmax(1) == targets).float().mean())


def reconstruction_errors(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    return ((outputs - inputs.flatten(1)) ** 2).flatten(1).mean(1)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (label 1 = positive), ties counted half, via ranks."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reconstruction_auc(outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> float:
    """AUC of the per-sample reconstruction error as an anomaly score (targets: 1 = anomalous)."""
    return roc_auc(reconstruction_errors(outputs, inputs).numpy(), targets.numpy())


ACCURACY = Metric("top1_accuracy", top1_accuracy)
AUC = Metric("auc", reconstruction_auc)


def output_agreement(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, classification: bool) -> dict:
    """How closely two models' outputs agree: top-1 agreement (classifiers), errors and SQNR."""
    a = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float32)
    diff = a - b
    signal = float((b**2).mean())
    noise = float((diff**2).mean())
    out = {
        "max_abs_diff": float(diff.abs().max()) if diff.numel() else 0.0,
        "rel_output_error": float(diff.norm() / b.norm().clamp_min(1e-12)),
        "sqnr_db": float(10 * np.log10(signal / noise)) if noise > 0 else float("inf"),
        "agreement": float((a.argmax(1) == b.argmax(1)).float().mean()) if classification else None,
    }
    return out
