"""Data of the built-in tasks: real sets that ship offline, and seeded synthetic stand-ins.

Real: scikit-learn's bundled 8x8 handwritten digits, and MNIST-1D generated locally by the
``mnist1d`` package. Synthetic (labelled so wherever shown): learnable sets of the MLPerf Tiny
input shapes, made from per-class smooth templates with random shifts, gains, distractors and
noise, so that a model must learn them and quantisation error shows in the metric.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .data import Split, TaskData, split_arrays


def digits_data(seed: int = 0) -> TaskData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    train, calib, eval_ = split_arrays(x, bunch.target.astype(np.int64), seed=seed)
    return TaskData(train, calib, eval_, source="scikit-learn load_digits (real, 1797 images)", num_classes=10)


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(seed: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42 + seed
    d = make_dataset(args)
    return d["x"].astype(np.float32), d["y"].astype(np.int64), d["x_test"].astype(np.float32), d["y_test"].astype(np.int64)


def mnist1d_data(seed: int = 0) -> TaskData:
    x, y, xt, yt = _mnist1d_arrays(seed)
    x, xt = torch.from_numpy(x[:, None].copy()), torch.from_numpy(xt[:, None].copy())
    y, yt = torch.from_numpy(y.copy()), torch.from_numpy(yt.copy())
    return TaskData(
        train=Split(x[:3500], y[:3500]),
        calib=Split(x[3500:], y[3500:]),
        eval=Split(xt, yt),
        source="mnist1d package, generated locally (real benchmark, 4000 train / 1000 test)",
        num_classes=10,
    )


def _smooth_fields(rng: np.random.Generator, n: int, shape: tuple[int, ...], coarse: int) -> torch.Tensor:
    """n random fields of ``shape`` (C, H, W), low-pass by upsampling a coarse grid."""
    c, h, w = shape
    low = torch.from_numpy(rng.standard_normal((n, c, max(2, h // coarse), max(2, w // coarse))).astype(np.float32))
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


def synthetic_images(
    shape: tuple[int, int, int], num_classes: int, n: int, seed: int, coarse: int = 4, noise: float = 0.6, distract: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """Class templates + random shift, gain, distractor field and white noise."""
    rng = np.random.default_rng(seed)
    templates = _smooth_fields(rng, num_classes, shape, coarse)
    templates = templates / templates.flatten(1).std(1).view(-1, 1, 1, 1)
    y = rng.integers(0, num_classes, n)
    x = templates[torch.from_numpy(y)]
    dh, dw = rng.integers(-2, 3, n), rng.integers(-2, 3, n)
    x = torch.stack([torch.roll(xi, (int(a), int(b)), dims=(1, 2)) for xi, a, b in zip(x, dh, dw)])
    gain = torch.from_numpy(rng.uniform(0.6, 1.4, (n, 1, 1, 1)).astype(np.float32))
    x = gain * x + distract * _smooth_fields(rng, n, shape, coarse)
    x = x + noise * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    return x.numpy(), y.astype(np.int64)


def synthetic_classification(name: str, shape, num_classes: int, n: int, seed: int, **kw) -> TaskData:
    x, y = synthetic_images(shape, num_classes, n, seed, **kw)
    train, calib, eval_ = split_arrays(x, y, seed=seed, fractions=(0.7, 0.1, 0.2))
    return TaskData(
        train, calib, eval_, source=f"synthetic {name} stand-in (seeded, {n} samples of shape {tuple(shape)})", synthetic=True, num_classes=num_classes
    )


def synthetic_machine_sounds(n_normal: int = 2400, n_anomalous: int = 300, dim: int = 640, seed: int = 0) -> TaskData:
    """Anomaly detection stand-in: 5 frames x 128 log-mel bins of a 'machine' with a few operating modes.

    Normal: mixtures of 6 smooth spectral profiles plus noise. Anomalous: the same with an extra
    narrow-band tone or a missing band. Train and calibration hold normal samples only; the
    evaluation split holds both (label 1 = anomalous), scored by reconstruction error.
    """
    rng = np.random.default_rng(seed)
    frames, bins = 5, dim // 5
    freq = np.linspace(0, 1, bins, dtype=np.float32)
    centers = rng.uniform(0.1, 0.9, 6)
    profiles = np.stack([np.exp(-((freq - c) ** 2) / (2 * rng.uniform(0.02, 0.08) ** 2)) for c in centers]).astype(np.float32)

    def normal(m):
        w = rng.dirichlet(np.ones(6) * 0.7, size=m).astype(np.float32)
        spec = w @ profiles  # (m, bins)
        drift = rng.uniform(0.9, 1.1, (m, frames, 1)).astype(np.float32)
        out = spec[:, None, :] * drift + 0.03 * rng.standard_normal((m, frames, bins)).astype(np.float32)
        return out.reshape(m, dim)

    x_train = normal(n_normal)
    n_eval_normal = max(n_anomalous, n_normal // 5)
    x_eval_normal = normal(n_eval_normal)
    x_anom = normal(n_anomalous).reshape(n_anomalous, frames, bins)
    for i in range(n_anomalous):
        c = rng.integers(4, bins - 4)
        if rng.random() < 0.5:
            x_anom[i, :, c - 2 : c + 2] += rng.uniform(0.25, 0.6)
        else:
            x_anom[i, :, c - 4 : c + 4] *= 0.3
    x_anom = x_anom.reshape(n_anomalous, dim)
    x_eval = np.concatenate([x_eval_normal, x_anom])
    y_eval = np.concatenate([np.zeros(n_eval_normal, np.int64), np.ones(n_anomalous, np.int64)])
    order = rng.permutation(len(x_eval))
    n_calib = n_normal // 8
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    return TaskData(
        train=Split(t(x_train[n_calib:])),
        calib=Split(t(x_train[:n_calib])),
        eval=Split(t(x_eval[order]), t(y_eval[order])),
        source=f"synthetic machine-sound stand-in (seeded, {n_normal} normal train, {len(x_eval)} eval of which {n_anomalous} anomalous)",
        synthetic=True,
    )
