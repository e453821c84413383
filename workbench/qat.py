"""Quantisation-aware training: fine-tune a calibrated Brevitas model, optionally distilling from
the float teacher, with seeded data order, a cosine schedule, early stopping on the eval metric,
a safetensors checkpoint every epoch and exact resume.

- the trainable parameters are the weights and, where Brevitas learns them, the activation
  scales (calibrated per-tensor float scales become parameters);
- distillation: ``alpha * T^2 * KL(softmax(student / T) || softmax(teacher / T)) + (1 - alpha) * task
  loss`` for classifiers; for reconstruction, MSE to the teacher's outputs replaces the KL term;
- every epoch the model, optimiser state and history go to ``<checkpoint_dir>/qat-last.safetensors``
  (atomically); ``resume=True`` continues from it and gives the same weights, bit for bit, as a
  run that never stopped. A checkpoint of another model or configuration is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .errors import CheckpointError, SpecError
from .evaluate import evaluate, task_loss


@dataclass(frozen=True)
class QATConfig:
    """Training parameters (the trained state lives in the model and the checkpoint)."""

    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 64
    distill: bool = True
    temperature: float = 4.0
    alpha: float = 0.7  # share of the distillation term
    patience: int = 0  # stop after this many epochs without a better eval metric (0: never)
    seed: int = 0

    def __post_init__(self):
        for name, ok, expected in (("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1"),
                                   ("lr", self.lr > 0, "a positive number"), ("batch_size", self.batch_size >= 2, "an integer >= 2"),
                                   ("temperature", self.temperature > 0, "a positive number"), ("alpha", 0 <= self.alpha <= 1, "a value in [0, 1]"),
                                   ("patience", self.patience >= 0, "an integer >= 0")):
            if not ok:
                raise SpecError(f"qat.{name}: expected {expected}; got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _model_signature(model: nn.Module) -> str:
    """Names and shapes of the model's state: a checkpoint only fits a model with the same."""
    items = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def _distill_loss(task, student: torch.Tensor, teacher: torch.Tensor, config: QATConfig) -> torch.Tensor:
    if task.is_classifier:
        t = config.temperature
        return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True) * t * t
    return F.mse_loss(student, teacher)


def _save(path: Path, qmodel: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    from safetensors.torch import save

    from .fileio import atomic_write_bytes

    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in qmodel.state_dict().items()}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"optim.{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().clone()
    atomic_write_bytes(path, save(tensors, metadata={"workbench_qat": json.dumps(meta, sort_keys=True)}))


def _load(path: Path, qmodel: nn.Module, opt: torch.optim.Optimizer, expect: dict) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("workbench_qat", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"{path.name} is not a readable workbench QAT checkpoint ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path.name} is not a workbench QAT checkpoint (no workbench_qat metadata)")
    for key in ("model", "config", "task"):
        if meta.get(key) != expect[key]:
            raise CheckpointError(f"{path.name} was saved for another {key} ({meta.get(key)!r}); this run's is {expect[key]!r}")
    qmodel.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state = opt.state_dict()
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state["state"].setdefault(int(i), {})[name] = v
    opt.load_state_dict(state)
    return meta


def train_qat(task, float_model: nn.Module | None, qmodel: nn.Module, config: QATConfig = QATConfig(), *,
              checkpoint_dir: str | Path | None = None, resume: bool = True, progress: bool = True,
              on_epoch: Callable[[dict], None] | None = None) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``qmodel`` (in place) and return it with one history row per epoch (loss, eval metric,
    learning rate). The best weights by the eval metric are kept: the best epoch's, or the
    calibrated model's when no epoch beats it."""
    if config.distill and float_model is None:
        raise SpecError("qat.distill: distillation needs the float teacher model; pass it, or set distill to false")
    teacher = None if float_model is None else copy.deepcopy(float_model).eval()
    train = task.data.train
    steps_per_epoch = max(1, sum(1 for i in range(0, len(train), config.batch_size) if len(train) - i >= 2))
    params = [p for p in qmodel.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    expect = {"model": _model_signature(qmodel), "config": json.dumps(config.to_dict(), sort_keys=True), "task": task.name}
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / "qat-last.safetensors"
    history: list[dict] = []
    best = (-math.inf, None)
    start = 0
    if path is not None and resume and path.exists():
        meta = _load(path, qmodel, opt, expect)
        history, start = meta["history"], meta["epoch"] + 1
        with warnings.catch_warnings():  # fast-forwarding the schedule, with no optimiser step in between
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start * steps_per_epoch):
                sched.step()
        best_state = Path(checkpoint_dir) / "qat-best.safetensors"
        if best_state.exists():
            from safetensors.torch import load_file

            best = (meta["best_metric"], load_file(str(best_state)))
    if not history:  # the calibrated (PTQ) model is the first candidate: training must beat it to count
        best = (evaluate(qmodel.eval(), task), {k: v.detach().clone() for k, v in qmodel.state_dict().items()})
    bar = tqdm(range(start, config.epochs), desc=f"qat {task.name}", disable=not progress)
    stale = 0 if not history else sum(1 for _ in _since_best(history))
    for epoch in bar:
        if config.patience and stale >= config.patience:
            break
        qmodel.train()
        gen = torch.Generator().manual_seed(config.seed * 100003 + epoch)  # the data order depends on the epoch alone
        order = torch.randperm(len(train), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(train), config.batch_size):
            idx = order[i : i + config.batch_size]
            if len(idx) < 2:
                continue
            x = train.x[idx]
            y = None if train.y is None else train.y[idx]
            out = qmodel(x)
            out = out.value if hasattr(out, "value") else out
            loss = task_loss(task, out, x, y)
            if config.distill:
                with torch.no_grad():
                    t_out = teacher(x)
                loss = config.alpha * _distill_loss(task, out, t_out, config) + (1 - config.alpha) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        qmodel.eval()
        metric = evaluate(qmodel, task)
        row = {"epoch": epoch, "loss": total / max(1, seen), "metric": metric, "lr": opt.param_groups[0]["lr"]}
        history.append(row)
        if metric > best[0]:
            best = (metric, {k: v.detach().clone() for k, v in qmodel.state_dict().items()})
            stale = 0
            if path is not None:
                from safetensors.torch import save

                from .fileio import atomic_write_bytes

                atomic_write_bytes(path.parent / "qat-best.safetensors", save({k: v.contiguous() for k, v in best[1].items()}))
        else:
            stale += 1
        if path is not None:
            _save(path, qmodel, opt, {**expect, "epoch": epoch, "history": history, "best_metric": best[0]})
        bar.set_postfix(loss=f"{row['loss']:.4f}", metric=f"{metric:.4f}")
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    if best[1] is not None:
        qmodel.load_state_dict(best[1])
    qmodel.eval()
    return qmodel, pd.DataFrame(history, columns=["epoch", "loss", "metric", "lr"])


def _since_best(history: list[dict]):
    """Epochs after the best one, for early stopping on resume."""
    best = max(range(len(history)), key=lambda i: history[i]["metric"])
    return history[best + 1 :]
