"""How a sweep's cases are batched into forward passes, and what their cached activations cost.

On a CPU a forward pass is fastest when its largest activation stays in cache: measured on this
project's 2-core machine, ResNet-8 runs 512 images about twice as fast in batches of 64 as in
batches of 256 (its largest activation is 64 KiB per image), and a 6-layer BERT with hidden 128
about a third faster in batches of 64. So the sensitivity engines size their passes by bytes
(:data:`PASS_BYTES` for the largest activation of a pass), not by a fixed batch size; where the
eval data is smaller than one pass, the several settings of one layer are stacked along the batch
in one pass (:class:`Stacked`), so a small sweep makes fewer, larger passes.

Both are exact only where every sample's outputs are independent of the batch it runs in, which
:func:`batch_independent` checks on the float model before an engine relies on it (the engines
fall back to ``predict``'s batches otherwise).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..tasks.evaluate import predict

PASS_BYTES = 4 << 20  # the largest activation of one pass: ~4 MiB keeps it in a CPU's L2/L3 cache
MAX_PASS_ROWS = 1024
PREDICT_BATCH = 256  # the batch size of ``predict`` (the naive loop's passes)


def tensors_in(value) -> list[torch.Tensor]:
    """The tensors in a module's output (a tensor, a tuple / list / dict of them, a ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if hasattr(value, "value") and isinstance(getattr(value, "value"), torch.Tensor):  # a Brevitas QuantTensor
        return [value.value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_in(v)]
    return []


def largest_activation_bytes(model: nn.Module, x1: torch.Tensor) -> int:
    """The largest tensor (bytes) that any module of ``model`` returns for the one-sample batch ``x1``."""
    largest = [int(x1.element_size() * x1.numel())]

    def hook(_m, _args, out):
        for t in tensors_in(out):
            largest[0] = max(largest[0], int(t.element_size() * t.numel()))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        predict(model, x1, batch_size=1)
    finally:
        for h in handles:
            h.remove()
    return largest[0]


def pass_rows(model: nn.Module, x: torch.Tensor, pass_bytes: int = PASS_BYTES) -> int:
    """Samples per pass: as many as keep the largest activation of a pass within ``pass_bytes``."""
    per_sample = largest_activation_bytes(model, x[:1])
    return max(1, min(MAX_PASS_ROWS, pass_bytes // max(per_sample, 1)))


def batch_independent(model: nn.Module, x: torch.Tensor, rows: int) -> bool:
    """Whether ``model`` gives every sample of ``x`` bit for bit the same outputs in passes of
    ``rows`` samples (and of every smaller count down to the last pass's) as in ``predict``'s."""
    if rows == PREDICT_BATCH:
        return True
    return torch.equal(predict(model, x, batch_size=rows), predict(model, x, batch_size=PREDICT_BATCH))


def checked_pass_rows(model: nn.Module, x: torch.Tensor) -> int:
    """:func:`pass_rows` where :func:`batch_independent` holds; else ``predict``'s batch, with a warning."""
    rows = pass_rows(model, x)
    if batch_independent(model, x, rows):
        return rows
    warnings.warn(f"this model's outputs depend on the batch size on this machine; the engine runs passes of {PREDICT_BATCH} samples as predict does",
                  stacklevel=4)
    return PREDICT_BATCH


def sample_chunks(n: int, rows: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the passes over ``n`` samples, ``rows`` at a time."""
    return [(i, min(i + rows, n)) for i in range(0, n, rows)]


def setting_groups(n_settings: int, n_samples: int, rows: int) -> list[list[int]]:
    """The settings run together in one pass: ``rows // n_samples`` of them where the data is
    smaller than a pass (stacked along the batch), else one at a time."""
    per_pass = max(1, rows // max(n_samples, 1)) if n_samples < rows else 1
    return [list(range(i, min(i + per_pass, n_settings))) for i in range(0, n_settings, per_pass)]


def tile(value, times: int):
    """``value`` (a tensor, or a tuple / list / dict of them) repeated ``times`` along the batch."""
    if times == 1:
        return value
    if isinstance(value, torch.Tensor):
        return torch.cat([value] * times) if value.dim() > 0 else value
    if isinstance(value, dict):
        return type(value)({k: tile(v, times) for k, v in value.items()})
    if isinstance(value, (tuple, list)):
        return type(value)(tile(v, times) for v in value)
    return value


def batch_major(value, n: int) -> bool:
    """Whether every tensor in ``value`` has the batch (``n`` samples) as its first dimension."""
    return all(t.dim() > 0 and t.shape[0] == n for t in tensors_in(value))


class Stacked(nn.Module):
    """Several versions of one layer over one stacked batch: rows ``[i*n, (i+1)*n)`` go through
    ``modules[i]``; the outputs are concatenated in the same order."""

    def __init__(self, modules: list[nn.Module], n: int):
        super().__init__()
        self.versions = nn.ModuleList(modules)
        self.n = n

    def __getattr__(self, name: str):
        """What the model reads of the layer itself (a convolution's ``stride``, ``weight``, ...)
        is the first version's: the versions differ only in how they quantise."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "versions":
                raise
            return getattr(self.versions[0], name)

    def forward(self, x, *args, **kwargs):
        outs = []
        for i, mod in enumerate(self.versions):
            out = mod(x[i * self.n : (i + 1) * self.n], *args, **kwargs)
            outs.append(out.value if hasattr(out, "value") and not isinstance(out, torch.Tensor) else out)
        return torch.cat(outs)


def split_rows(out: torch.Tensor, n: int, count: int) -> list[torch.Tensor]:
    """The outputs of a stacked pass, one tensor of ``n`` rows per setting."""
    return [out[i * n : (i + 1) * n] for i in range(count)]
