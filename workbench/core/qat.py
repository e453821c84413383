"""Quantisation-aware training: fine-tune a calibrated Brevitas model, optionally distilling from
the float teacher, with seeded data order, a cosine schedule, early stopping on the eval metric,
a safetensors checkpoint every epoch and exact resume.

- the trainable parameters are the weights and, where Brevitas learns them, the activation
  scales (calibrated per-tensor float scales become parameters);
- distillation: ``alpha * T^2 * KL(softmax(student / T) || softmax(teacher / T)) + (1 - alpha) * task
  loss`` for classifiers; for reconstruction, MSE to the teacher's outputs replaces the KL term;
- every epoch the model, the optimiser and scheduler state, the history and the best state so far
  (the calibrated model's when no epoch has beaten it yet) go to
  ``<checkpoint_dir>/qat-last.safetensors``, atomically, in one file; ``qat-best.safetensors`` holds
  the best weights for reading. ``resume=True`` continues from ``qat-last`` and gives the same
  weights, bit for bit, as a run that never stopped. A checkpoint of another model, configuration,
  task, data or teacher is refused (:class:`CheckpointError`); a damaged one (truncated, say) is
  moved aside as ``<name>.corrupt-<time>`` with a warning, and training starts anew;
- training runs with :func:`~workbench.infra.determinism.training_threads` torch threads, and every
  epoch draws its data order and any other random numbers (dropout) from generators seeded by
  ``(seed, epoch)`` alone; the caller's global RNG is left as it was.

Resuming exactly needs more than ``load_state_dict``: Brevitas rebuilds each quantiser's modules
when a state dict is loaded (``brevitas.config.REINIT_ON_STATE_DICT_LOAD``), so a learned
activation scale becomes a new ``Parameter`` object. The optimiser is therefore built only after
the checkpoint's weights are loaded, or it would keep updating the orphaned scales while the model
trains with frozen ones.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Callable, ClassVar

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..tasks.baseline import error_summary
from ..infra.fileio import move_aside
from ..infra.store import model_hash
from ..infra.determinism import fixed_threads
from ..infra.errors import CheckpointError, SpecError
from ..tasks.evaluate import evaluate, task_loss
from .options import Flag, OptionModel, integer, number

CHECKPOINT_FORMAT = 2  # 2: best state, scheduler and stale count in qat-last (1 kept best in qat-best only)
LAST, BEST = "qat-last.safetensors", "qat-best.safetensors"
# every file a run writes in its checkpoint folder (atomic temporaries, damaged ones moved aside): what an output
# folder's marker counts as the workbench's there; anything else in it is the user's
CHECKPOINT_FILES = tuple(p for name in (LAST, BEST) for p in (name, f".{name}.*.tmp", f"{name}.corrupt-*"))


class QATConfig(OptionModel):
    """Training parameters (the trained state lives in the model and the checkpoint); a recipe's
    ``qat:`` section, embedded as is."""

    section: ClassVar[str] = "qat"
    epochs: integer(1) = 5
    lr: number("a positive number", gt=0) = 1e-4
    batch_size: integer(2) = 64
    distill: Flag = True
    temperature: number("a positive number", gt=0) = 4.0
    alpha: number("a value in [0, 1]", ge=0, le=1) = 0.7  # share of the distillation term
    patience: integer(0) = 0  # stop after this many epochs without a better eval metric (0: never)
    seed: integer(0, 2**63 - 1, "an integer in 0..2**63-1") = 0


def _model_signature(model: nn.Module) -> str:
    """Names and shapes of the model's state: a checkpoint only fits a model with the same."""
    items = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 100003 + epoch) % 2**64  # the data order depends on (seed, epoch) alone


def _distill_loss(task, student: torch.Tensor, teacher: torch.Tensor, config: QATConfig) -> torch.Tensor:
    if task.is_classifier:
        t = config.temperature
        return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True) * t * t
    return F.mse_loss(student, teacher)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save_last(path: Path, qmodel: nn.Module, opt: torch.optim.Optimizer, sched, best_state: dict | None, meta: dict) -> None:
    """One atomic file with everything a resumed run needs: weights, optimiser and scheduler state,
    history, early-stopping count, and the best state (left out when it is this epoch's weights)."""
    from safetensors.torch import save

    from ..infra.fileio import atomic_write_bytes

    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in qmodel.state_dict().items()}
    opt_state = opt.state_dict()
    for i, state in opt_state["state"].items():
        for k, v in state.items():
            tensors[f"optim.{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().clone()
    if best_state is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in best_state.items()})
    meta = {**meta, "format": CHECKPOINT_FORMAT, "scheduler": sched.state_dict(),
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]}
    atomic_write_bytes(path, save(tensors, metadata={"workbench_qat": json.dumps(meta, sort_keys=True)}))


def _save_best(path: Path, best_state: dict, meta: dict) -> None:
    from safetensors.torch import save

    from ..infra.fileio import atomic_write_bytes

    atomic_write_bytes(path, save({k: v.contiguous() for k, v in best_state.items()},
                                  metadata={"workbench_qat_best": json.dumps(meta, sort_keys=True)}))


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file (ours, damaged) rather than some other file put in its place: empty, all
    zeros (a crash before the data reached the disk) or starting with a safetensors header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) < 9 or not any(head) or head[8:9] == b"{"


def _read(path: Path, key: str, then: str, refuse_foreign: bool = True) -> tuple[dict, dict] | None:
    """``(metadata, tensors)`` of a workbench checkpoint; None when it was damaged (then moved
    aside, with a warning). Some other file in its place is a :class:`CheckpointError` (or, with
    ``refuse_foreign=False``, moved aside too)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(key)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # truncated, or not safetensors at all
        if refuse_foreign and not _looks_like_safetensors(path):
            raise CheckpointError(f"{path.name} is not a readable workbench QAT checkpoint ({type(exc).__name__}); "
                                  f"remove it, or pass another checkpoint folder") from None
        move_aside(path, error_summary(exc), then)
        return None
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        if refuse_foreign:
            raise CheckpointError(f"{path.name} is not a workbench QAT checkpoint (no {key} metadata)")
        return {}, tensors
    return meta, tensors


def _check(path: Path, meta: dict, expect: dict) -> None:
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path.name} was written by another workbench version (checkpoint format {meta.get('format', 1)!r}, "
                              f"expected {CHECKPOINT_FORMAT}); remove it to train anew")
    for key in ("model", "config", "task", "data", "teacher"):
        if meta.get(key) != expect[key]:
            raise CheckpointError(f"{path.name} was saved for another {key} ({meta.get(key)!r:.80}); this run's is {expect[key]!r:.80}; "
                                  f"remove it or pass another checkpoint_dir to train anew")


def _load_optimiser(path: Path, opt: torch.optim.Optimizer, sched, tensors: dict, meta: dict) -> None:
    state = opt.state_dict()
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state["state"].setdefault(int(i), {})[name] = v
    saved_groups = meta.get("param_groups") or []
    if len(saved_groups) != len(state["param_groups"]):
        raise CheckpointError(f"{path.name}: {len(saved_groups)} optimiser parameter groups; this run has {len(state['param_groups'])}")
    for group, saved in zip(state["param_groups"], saved_groups):
        for k, v in saved.items():
            group[k] = tuple(v) if isinstance(group.get(k), tuple) else v
    try:
        opt.load_state_dict(state)
        sched.load_state_dict(meta["scheduler"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path.name}: optimiser state does not fit this model ({error_summary(exc)})") from None


def train_qat(task, float_model: nn.Module | None, qmodel: nn.Module, config: QATConfig = QATConfig(), *,
              checkpoint_dir: str | Path | None = None, resume: bool = True, progress: bool = True,
              on_epoch: Callable[[dict], None] | None = None) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``qmodel`` (in place) and return it with one history row per epoch (loss, eval metric,
    learning rate). The best weights by the eval metric are kept: the best epoch's, or the
    calibrated model's when no epoch beats it. Runs with
    :func:`~workbench.infra.determinism.training_threads` torch threads and leaves the caller's thread
    count and global RNG as they were."""
    if not isinstance(config, QATConfig):
        raise SpecError(f"qat: expected a QATConfig; got {type(config).__name__}")
    if config.distill and float_model is None:
        raise SpecError("qat.distill: distillation needs the float teacher model; pass it, or set distill to false")
    with fixed_threads(), torch.random.fork_rng(devices=[]):
        return _train_qat(task, float_model, qmodel, config, checkpoint_dir, resume, progress, on_epoch)


def _train_qat(task, float_model, qmodel, config, checkpoint_dir, resume, progress, on_epoch):
    teacher = copy.deepcopy(float_model).eval() if config.distill else None
    train = task.data.train
    steps_per_epoch = max(1, sum(1 for i in range(0, len(train), config.batch_size) if len(train) - i >= 2))
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    # what a checkpoint must have been saved for (another teacher or other data train other weights)
    expect = {} if folder is None else {"model": _model_signature(qmodel), "config": json.dumps(config.to_dict(), sort_keys=True),
                                        "task": task.name, "data": task.data.fingerprint()[:16], "teacher": None if teacher is None else model_hash(teacher)[:16]}
    path = None if folder is None else folder / LAST
    checkpoint = None
    if path is not None and resume and path.exists():
        checkpoint = _read(path, "workbench_qat", "training starts anew from the calibrated model")
        if checkpoint is not None:
            _check(path, checkpoint[0], expect)
            meta, tensors = checkpoint
            # Brevitas rebuilds its quantisers here (new scale Parameters): load before building the optimiser
            qmodel.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    params = [p for p in qmodel.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    if checkpoint is not None:
        _load_optimiser(path, opt, sched, tensors, meta)
        history, start, stale = meta["history"], meta["epoch"] + 1, meta["stale"]
        best_epoch = meta["best_epoch"]
        best_state = _state(qmodel) if best_epoch == meta["epoch"] else {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
        best = (meta["best_metric"], best_state)
        if folder is not None:
            _refresh_best_file(folder / BEST, best, best_epoch, expect)
    else:
        history, start, stale, best_epoch = [], 0, 0, -1
        # the calibrated (PTQ) model is the first candidate: training must beat it to count
        best = (evaluate(qmodel.eval(), task), _state(qmodel))
        if folder is not None:
            _save_best(folder / BEST, best[1], {**expect, "epoch": best_epoch, "metric": best[0]})
    bar = tqdm(range(start, config.epochs), desc=f"qat {task.name}", disable=not progress)
    for epoch in bar:
        if config.patience and stale >= config.patience:
            break
        qmodel.train()
        seed = _epoch_seed(config.seed, epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        torch.manual_seed(seed ^ 0x5DEECE66D)  # dropout and any other global-RNG draw: by (seed, epoch) alone too
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
                    t_out = t_out.value if hasattr(t_out, "value") else t_out
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
        improved = metric > best[0]
        if improved:
            best, best_epoch, stale = (metric, _state(qmodel)), epoch, 0
        else:
            stale += 1
        if path is not None:
            meta = {**expect, "epoch": epoch, "history": history, "best_metric": best[0], "best_epoch": best_epoch, "stale": stale}
            _save_last(path, qmodel, opt, sched, None if best_epoch == epoch else best[1], meta)
            if improved:  # after qat-last, which alone is read on resume (and rewrites this one if a kill fell in between)
                _save_best(folder / BEST, best[1], {**expect, "epoch": best_epoch, "metric": best[0]})
        bar.set_postfix(loss=f"{row['loss']:.4f}", metric=f"{metric:.4f}")
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    qmodel.load_state_dict(best[1])
    qmodel.eval()
    return qmodel, pd.DataFrame(history, columns=["epoch", "loss", "metric", "lr"])


def _refresh_best_file(path: Path, best: tuple, best_epoch: int, expect: dict) -> None:
    """Make ``qat-best.safetensors`` hold the best state ``qat-last`` recorded: rewritten when it is
    missing, damaged (moved aside first) or from another epoch (a kill between the two writes)."""
    current = None
    if path.exists():
        read = _read(path, "workbench_qat_best", "rewriting it from the best state in qat-last.safetensors", refuse_foreign=False)
        current = None if read is None else read[0]
    if current is None or current.get("epoch") != best_epoch or any(current.get(k) != v for k, v in expect.items()):
        _save_best(path, best[1], {**expect, "epoch": best_epoch, "metric": best[0]})
