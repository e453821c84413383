"""Running a model over a split, and scoring it with the task's metric."""

from __future__ import annotations

import torch
from torch import nn

from .data import Split
from ..infra.errors import WorkbenchError


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Outputs of ``model`` on ``x`` in eval mode, as a plain float tensor."""
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                try:
                    out = model(x[i : i + batch_size])
                except WorkbenchError:
                    raise
                except Exception as exc:  # the model's own forward: one line naming it
                    from ..infra.usercode import forward_error

                    raise forward_error(model, exc, f"samples {i}-{min(i + batch_size, len(x)) - 1}") from None
                outs.append(out.value if hasattr(out, "value") else out)
    finally:
        model.train(was_training)
    return torch.cat(outs).float()


def evaluate(model: nn.Module, task, split: Split | None = None) -> float:
    """The task metric of ``model`` on ``split`` (the task's eval split by default)."""
    split = task.data.eval if split is None else split
    return task.score(predict(model, split.x), split)


def task_loss(task, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The task's training loss: cross-entropy for classifiers (against the outputs' own top-1
    when ``y`` is None), MSE against the flattened inputs for reconstruction, MSE against the
    float embeddings ``y`` for label-free embeddings (nothing without them)."""
    import torch.nn.functional as F

    if task.is_classifier:
        return F.cross_entropy(outputs, outputs.detach().argmax(1) if y is None else y)
    if task.kind == "embedding":  # label-free embeddings: MSE to the float embeddings when given; else distillation alone teaches
        return F.mse_loss(outputs, y) if y is not None else outputs.sum() * 0.0
    return F.mse_loss(outputs, x.flatten(1))
