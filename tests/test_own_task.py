"""Bring your own model and data: make_task trains when given training data, splits are checked."""

import numpy as np
import pytest
import torch
from torch import nn

import workbench as wb
from workbench.tasks.data import split_arrays


def _digits_arrays():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32)[:, None], bunch.target.astype(np.int64)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _accuracy(out, y):
    return float((out.argmax(1) == y).float().mean())


def test_make_task_with_train_data_trains_a_real_baseline_and_caches_it():
    x, y = _digits_arrays()
    train, calib, eval_ = split_arrays(x, y, seed=0)
    untrained = _net(0)
    task = wb.make_task(untrained, calib.x, (eval_.x, eval_.y), _accuracy, name="my-mlp", train=(train.x, train.y), epochs=10)
    assert not task.pretrained
    before = wb.tasks.evaluate.evaluate(untrained, task)
    model = wb.load_or_train_baseline(task, progress=False)
    after = wb.tasks.evaluate.evaluate(model, task)
    assert before < 0.3 and after > 0.85, (before, after)  # chance is 0.1: it really trained
    again = wb.load_or_train_baseline(task, progress=False)  # from the cache, the same weights
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # another starting model of the same class is another baseline, never the cached one
    other = wb.make_task(_net(1), calib.x, (eval_.x, eval_.y), _accuracy, name="my-mlp", train=(train.x, train.y), epochs=10)
    trained_other = wb.load_or_train_baseline(other, progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained_other.state_dict().values()))
    # pretrained=True: the model is used as given, the train split serves QAT / fine-tuning
    given = wb.make_task(untrained, calib.x, (eval_.x, eval_.y), _accuracy, train=(train.x, train.y), pretrained=True)
    assert given.pretrained and wb.tasks.evaluate.evaluate(wb.load_or_train_baseline(given), given) == before


@pytest.mark.parametrize("kwargs,message", [
    ({"pretrained": False}, "pretrained=False needs train=(x, y)"),
    ({"train": (torch.randn(8, 1, 8, 8),)}, "train has inputs but no labels"),
    ({"train": (torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)), "epochs": 0}, "epochs 0; expected an integer >= 1"),
    ({"train": (torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)), "learning_rate": -1.0}, "learning_rate -1.0"),
])
def test_make_task_refuses_what_cannot_train(kwargs, message):
    with pytest.raises(wb.infra.TaskError, match=message.replace("(", r"\(").replace(")", r"\)")):
        wb.make_task(_net(0), torch.randn(8, 1, 8, 8), (torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)), _accuracy, **kwargs)


@pytest.mark.parametrize("n,fractions,message", [
    (100, (0.8, 0.2), "leave nothing for the eval split"),
    (100, (0.8, 0.3, 0.2), "leave nothing for the eval split"),
    (100, (1.2, 0.1), "expected (train, calib[, eval]) shares in (0, 1)"),
    (100, (0.6,), "expected (train, calib[, eval]) shares"),
    (3, (0.6, 0.1, 0.3), "leave the calib split empty"),
])
def test_split_arrays_never_makes_an_empty_split(n, fractions, message):
    with pytest.raises(wb.infra.DatasetError) as info:
        split_arrays(np.zeros((n, 4), np.float32), np.zeros(n, np.int64), seed=0, fractions=fractions)
    assert message in str(info.value) and "\n" not in str(info.value)
