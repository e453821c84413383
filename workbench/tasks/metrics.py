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
    needs_targets: bool = False  # scores outputs against the split's labels (y)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor | None, inputs: torch.Tensor) -> float:
        """The metric as one float; a function that raises or returns anything but one number is a
        one-line :class:`~workbench.infra.errors.UserCodeError` naming it."""
        from ..infra.usercode import call_metric

        fn = self.fn
        if getattr(fn, "_takes_two", None) is not None:  # a user's fn(outputs, targets): named as itself
            return call_metric(fn._takes_two, outputs, targets)
        return call_metric(fn, outputs, targets, inputs)

    @classmethod
    def wrap(cls, fn: Callable | "Metric", name: str | None = None, higher_is_better: bool = True) -> "Metric":
        """Accept a user callable ``fn(outputs, targets)`` or ``fn(outputs, targets, inputs)``."""
        from ..infra.errors import TaskError

        if isinstance(fn, Metric):
            return fn
        if not callable(fn):
            raise TaskError(f"metric {fn!r}; expected a function fn(outputs, targets) or fn(outputs, targets, inputs) returning a number")
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: called with all three
            sig = None
        if sig is not None and not any(_binds(sig, n) for n in (2, 3)):
            raise TaskError(f"metric {getattr(fn, '__qualname__', fn)!r} takes {sig}; expected fn(outputs, targets) or fn(outputs, targets, inputs)")
        if sig is not None and _binds(sig, 2) and not _binds(sig, 3):
            inner = lambda o, t, x, fn=fn: fn(o, t)
            inner._takes_two = fn
        else:
            inner = fn
        return cls(name or getattr(fn, "__name__", "metric"), inner, higher_is_better)


def _binds(sig: inspect.Signature, n: int) -> bool:
    try:
        sig.bind(*range(n))
        return True
    except TypeError:
        return False


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


ACCURACY = Metric("top1_accuracy", top1_accuracy, needs_targets=True)
AUC = Metric("auc", reconstruction_auc, needs_targets=True)


def mean_cosine(outputs: torch.Tensor, targets: torch.Tensor, inputs=None) -> float:
    """Mean cosine similarity of each output row to its target row (1.0 when they point alike)."""
    a, b = torch.as_tensor(outputs).flatten(1).double(), torch.as_tensor(targets).flatten(1).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())


SPEARMAN_ROWS = 1000  # half a million pairs at most: well under a second


def similarity_spearman(outputs: torch.Tensor, targets: torch.Tensor, inputs=None) -> float:
    """How well ``outputs`` keep the ranking of pairwise similarities of ``targets``: the Spearman
    correlation of the cosine similarities of every pair of rows (``N (N - 1) / 2`` pairs; the
    first :data:`SPEARMAN_ROWS` rows), 1.0 when every pair is ranked alike. What a retrieval or
    clustering use of an embedding needs."""
    from scipy.stats import rankdata

    def pairs(e):
        e = torch.nn.functional.normalize(torch.as_tensor(e)[:SPEARMAN_ROWS].flatten(1).double(), dim=1)
        i, j = torch.triu_indices(len(e), len(e), offset=1)
        return (e @ e.T)[i, j].numpy()

    a, b = pairs(outputs), pairs(targets)
    if len(a) < 2:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float(np.array_equal(a, b))


EMBEDDING_COSINE = Metric("cosine", mean_cosine)
EMBEDDING_SPEARMAN = Metric("similarity_spearman", similarity_spearman)


def output_agreement(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, classification: bool | str) -> dict:
    """How closely two models' outputs agree: errors and SQNR, and ``agreement`` by output kind
    (``classification`` is a task kind, or the old boolean: True for classification):

    - ``"classification"`` (True): top-1 agreement of the logits;
    - ``"embedding"``: the pairwise-similarity ranking kept (:func:`similarity_spearman`), never an
      argmax over embedding dimensions; ``mean_cosine`` and ``similarity_spearman`` are added;
    - ``"reconstruction"`` (False): None (the errors say it).
    """
    kind = ("classification" if classification else "reconstruction") if isinstance(classification, bool) else classification
    a = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float32)
    diff = a - b
    signal = float((b**2).mean())
    noise = float((diff**2).mean())
    out = {
        "max_abs_diff": float(diff.abs().max()) if diff.numel() else 0.0,
        "rel_output_error": float(diff.norm() / b.norm().clamp_min(1e-12)),
        "sqnr_db": float(10 * np.log10(signal / noise)) if noise > 0 else float("inf"),
        "agreement": float((a.argmax(1) == b.argmax(1)).float().mean()) if kind == "classification" else None,
    }
    if kind == "embedding":
        out["mean_cosine"] = mean_cosine(a, b)
        out["similarity_spearman"] = out["agreement"] = similarity_spearman(a, b)
    return out
