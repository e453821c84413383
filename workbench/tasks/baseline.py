"""The float baseline: trained with fixed seeds, cached as safetensors under a fingerprint.

The fingerprint covers the task, seed, training schedule, the data's bytes, the model's source
code, the workbench version and the training thread count, so a second run loads the cached
weights instead of training, and any change that could alter them trains anew. Training runs
under :func:`~workbench.infra.determinism.fixed_threads`, so the caller's ``torch.get_num_threads()``
or ``OMP_NUM_THREADS`` never changes the weights. A damaged cache file is moved aside (named in a
warning) and the baseline is trained again.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..infra.determinism import fixed_threads, training_threads
from .evaluate import evaluate, task_loss
from ..infra.store import model_hash
from ..infra.errors import OutputPathError
from ..infra.fileio import CorruptFileWarning, atomic_write_bytes, move_aside  # noqa: F401 (re-exported)
from ..infra.outdir import cache_dir  # noqa: F401 (re-exported: the one reader of WORKBENCH_CACHE)


def error_summary(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def baseline_fingerprint(task, seed: int, epochs: int, initial: str | None = None) -> str:
    """The cache key of a trained baseline; ``initial`` is the :func:`~workbench.infra.store.model_hash` of the model
    training starts from (a user's model handed to ``make_task`` has its own starting weights)."""
    key = {
        "task": task.name,
        "seed": seed,
        "epochs": epochs,
        "lr": task.learning_rate,
        "batch_size": task.batch_size,
        "data": task.data.fingerprint(),
        "model_code": task.code_fingerprint(),
        "workbench": __version__,
        "torch": torch.__version__,
        "threads": training_threads(),  # reductions split over another thread count sum in another order
        **({"initial": initial} if initial is not None else {}),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def train_float(model: nn.Module, task, seed: int, epochs: int, progress: bool = True, lr: float | None = None,
                after_step: Callable[[nn.Module], None] | None = None, desc: str | None = None) -> nn.Module:
    """Adam with a cosine schedule; cross-entropy for classifiers, MSE for reconstruction.

    ``lr`` defaults to the task's learning rate; ``after_step(model)`` runs after every optimiser
    step (fine-tuning a masked model re-applies its masks there). Runs with
    :func:`~workbench.infra.determinism.training_threads` torch threads, whatever the caller's count."""
    with fixed_threads():
        return _train_float(model, task, seed, epochs, progress, lr, after_step, desc)


def _train_float(model, task, seed, epochs, progress, lr, after_step, desc):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train = task.data.train
    opt = torch.optim.Adam(model.parameters(), lr=task.learning_rate if lr is None else lr)
    steps_per_epoch = math.ceil(len(train) / task.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    model.train()
    bar = tqdm(range(epochs), desc=desc or f"train {task.name}", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for i in range(0, len(train), task.batch_size):
            idx = order[i : i + task.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            x = train.x[idx]
            opt.zero_grad(set_to_none=True)
            loss = task_loss(task, model(x), x, train.y[idx] if task.is_classifier else None)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(model)
            total += float(loss.detach()) * len(idx)
        bar.set_postfix(loss=f"{total / len(train):.4f}")
    model.eval()
    return model


def load_or_train_baseline(task, seed: int | None = None, epochs: int | None = None, progress: bool = True, cache: bool = True) -> nn.Module:
    """The task's trained float model, from the cache when its fingerprint matches. A model that
    cannot run two calibration samples (its own ``forward`` failing, weights off the CPU) is a
    one-line error before any training."""
    from .model_inputs import LayerInputs

    if task.pretrained:
        model = task.create_model().eval()
        LayerInputs.check(model, task.data.calib.x)
        return model
    seed = task.seed if seed is None else seed
    torch.manual_seed(seed)  # the initial weights are part of what the seed fixes
    model = task.create_model()
    LayerInputs.check(model, task.data.calib.x)  # eval mode, no state changed
    epochs = task.train_epochs if epochs is None else epochs
    path = cache_dir() / "baselines" / f"{task.name}-{baseline_fingerprint(task, seed, epochs, model_hash(model))}.safetensors"
    if cache and path.exists():
        try:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        except Exception as exc:  # truncated, overwritten or half-copied: the cache is ours, so train again
            move_aside(path, error_summary(exc), "training the baseline again")
            torch.manual_seed(seed)  # a fresh model: the failed load may have filled part of this one
            model = task.create_model()
    model = train_float(model, task, seed, epochs, progress)
    if cache:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        from safetensors.torch import save

        try:
            atomic_write_bytes(path, save(state, metadata={"task": task.name, "seed": str(seed), "epochs": str(epochs)}))
        except OutputPathError as exc:  # a cache that cannot be written costs time, not the result
            import warnings

            warnings.warn(f"the trained baseline was not cached ({exc}); it is trained again next time", RuntimeWarning, stacklevel=2)
    return model


def baseline_metric(task, model: nn.Module) -> float:
    return evaluate(model, task)
