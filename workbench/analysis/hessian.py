"""Hessian traces per layer (Hutchinson's estimator, as in HAWQ): the ``hessian_trace`` column of a
sensitivity sweep (:mod:`workbench.analysis.sensitivity`, ``hessian: true``)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..tasks.evaluate import task_loss


def hessian_traces(task, model: nn.Module, layers: list[str], n_samples: int = 128, n_iter: int = 16, seed: int = 0) -> dict[str, float]:
    """Mean Hessian trace per weight of each layer (Hutchinson's estimator, as in HAWQ): E[v^T H v] / n.

    The loss is the task's training loss (cross-entropy, or MSE for reconstruction) on the first
    ``n_samples`` calibration samples (labels from the float model's predictions when none exist).
    """
    model = copy.deepcopy(model).eval()
    x = task.data.calib.x[:n_samples]
    y = None if task.data.calib.y is None else task.data.calib.y[:n_samples]
    loss = task_loss(task, model(x), x, y)
    params = [model.get_submodule(n).weight for n in layers]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    sums = [0.0] * len(params)
    for _ in range(n_iter):
        vs = [torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1 for p in params]
        hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        for i, (hv, v) in enumerate(zip(hvs, vs)):
            sums[i] += float((hv * v).sum())
    return {n: s / n_iter / p.numel() for n, s, p in zip(layers, sums, params)}
