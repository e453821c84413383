"""Task data: train / calibration / evaluation splits held as tensors, and their validation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..infra.errors import CalibrationError, DatasetError


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` (N, ...) float32 and optional integer targets ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.x, torch.Tensor):
            object.__setattr__(self, "x", torch.as_tensor(np.asarray(self.x)))
        if self.y is not None and not isinstance(self.y, torch.Tensor):
            object.__setattr__(self, "y", torch.as_tensor(np.asarray(self.y)))
        if self.x.ndim < 2:
            raise DatasetError(f"inputs must have a batch dimension and at least one feature dimension; got shape {tuple(self.x.shape)}")
        if self.y is not None and len(self.y) != len(self.x):
            raise DatasetError(f"{len(self.x)} inputs but {len(self.y)} labels; expected one label per input")

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> "Split":
        return Split(self.x[:n], None if self.y is None else self.y[:n])

    def batches(self, batch_size: int):
        for i in range(0, len(self.x), batch_size):
            yield self.x[i : i + batch_size], (None if self.y is None else self.y[i : i + batch_size])


@dataclass(frozen=True)
class TaskData:
    """The data of a task: what trains the float model, calibrates the quantisers, and evaluates."""

    train: Split
    calib: Split
    eval: Split
    source: str
    synthetic: bool = False
    num_classes: int | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        # NaN / inf anywhere is refused as in calibration data: evaluated on, it gives numbers that
        # mean nothing (a metric, an agreement, a max_abs_diff of nan)
        check_finite(self.calib.x, "calibration data")
        for label, split in (("eval", self.eval), ("train", self.train)):
            if split is not self.calib:
                check_finite(split.x, f"{label} data (inputs)", DatasetError)
            if split.y is not None:
                check_finite(split.y, f"{label} data (targets)", DatasetError)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.eval.x.shape[1:])

    def fingerprint(self) -> str:
        """sha256 over every split's bytes: identifies the data a result was computed on."""
        h = hashlib.sha256()
        for split in (self.train, self.calib, self.eval):
            h.update(split.x.contiguous().numpy().tobytes())
            if split.y is not None:
                h.update(split.y.contiguous().numpy().tobytes())
        return h.hexdigest()

    def subset(self, n_train: int | None = None, n_calib: int | None = None, n_eval: int | None = None) -> "TaskData":
        """A smaller view of the same data (first N of each split), for quick runs and tests."""
        return TaskData(
            train=self.train if n_train is None else self.train.head(n_train),
            calib=self.calib if n_calib is None else self.calib.head(n_calib),
            eval=self.eval if n_eval is None else self.eval.head(n_eval),
            source=self.source,
            synthetic=self.synthetic,
            num_classes=self.num_classes,
            meta=dict(self.meta),
        )


def check_finite(x: torch.Tensor, what: str, error: type = CalibrationError) -> None:
    """Refuse data holding NaN or inf with a one-line ``error`` naming ``what``: the one check of
    calibration data (:func:`check_calibration`) and of every split of a task (:class:`TaskData`)."""
    if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex()) and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise error(f"{what} holds {bad} NaN or inf values; expected finite numbers")


def check_calibration(x: torch.Tensor, what: str = "calibration data") -> None:
    """Refuse empty or non-finite calibration data with a clear one-line error."""
    if x is None or len(x) == 0:
        raise CalibrationError(f"{what} is empty; expected at least one sample")
    check_finite(x, what)


def validate_arrays(x: np.ndarray, y: np.ndarray | None, *, name: str, num_classes: int | None = None) -> None:
    """Check a loaded (x, y) pair: numeric finite inputs, integer labels in range, matching lengths."""
    if x.dtype.kind not in "fiu":
        raise DatasetError(f"{name}: inputs have dtype {x.dtype}; expected a numeric dtype")
    if x.ndim < 2 or len(x) == 0:
        raise DatasetError(f"{name}: inputs have shape {x.shape}; expected (N, ...) with N >= 1")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DatasetError(f"{name}: inputs hold NaN or inf values; expected finite numbers")
    if y is None:
        return
    if y.dtype.kind not in "iu":
        raise DatasetError(f"{name}: labels have dtype {y.dtype}; expected integer class indices")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{name}: labels have shape {y.shape} for {len(x)} inputs; expected ({len(x)},)")
    if len(y) and y.min() < 0:
        raise DatasetError(f"{name}: labels include {int(y.min())}; expected class indices >= 0")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise DatasetError(f"{name}: labels include {int(y.max())}; expected class indices below {num_classes}")


def split_arrays(x: np.ndarray, y: np.ndarray | None, *, seed: int, fractions=(0.6, 0.2, 0.2)):
    """Shuffle with a fixed seed and cut into train / calib / eval Splits.

    ``fractions`` are the train and calibration shares (a third value, the eval share, is what is
    left); every split must end up non-empty (:class:`~workbench.infra.errors.DatasetError` otherwise)."""
    fr = tuple(fractions)
    if len(fr) not in (2, 3) or not all(isinstance(f, (int, float)) and 0 < f < 1 for f in fr[:2]):
        raise DatasetError(f"fractions {fractions!r}; expected (train, calib[, eval]) shares in (0, 1), e.g. (0.6, 0.2, 0.2)")
    if fr[0] + fr[1] >= 1:
        raise DatasetError(f"fractions {fractions!r} leave nothing for the eval split; expected train + calib < 1")
    n = len(x)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fr[0] * n))
    n_calib = int(round(fr[1] * n))
    for label, size in (("train", n_train), ("calib", n_calib), ("eval", n - n_train - n_calib)):
        if size < 1:
            raise DatasetError(f"{n} samples split by {fractions!r} leave the {label} split empty; expected more samples or larger shares")
    parts = (order[:n_train], order[n_train : n_train + n_calib], order[n_train + n_calib :])
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    yt = None if y is None else torch.as_tensor(np.ascontiguousarray(y), dtype=torch.long)
    return tuple(Split(xt[p], None if yt is None else yt[p]) for p in parts)
