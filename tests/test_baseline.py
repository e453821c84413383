import pytest
import torch

import workbench as wb
from workbench import baseline


def test_baseline_is_trained_once_then_loaded(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    task = wb.create_task("mnist1d-cnn").small(n_train=64, n_calib=16, n_eval=32)
    first = wb.load_or_train_baseline(task, epochs=1, progress=False)
    files = list((tmp_path / "baselines").glob("mnist1d-cnn-*.safetensors"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(baseline, "train_float", boom)
    second = wb.load_or_train_baseline(task, epochs=1, progress=False)
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(AssertionError, match="trained again"):
        wb.load_or_train_baseline(task, epochs=1, seed=1, progress=False)  # another seed is another baseline


def test_training_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    task = wb.create_task("digits-cnn").small(n_train=64, n_calib=16, n_eval=32)
    a = wb.load_or_train_baseline(task, epochs=1, progress=False, cache=False)
    b = wb.load_or_train_baseline(task, epochs=1, progress=False, cache=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_fingerprint_covers_data_and_schedule():
    task = wb.create_task("digits-cnn")
    fp = baseline.baseline_fingerprint(task, 0, 5)
    assert fp != baseline.baseline_fingerprint(task, 0, 6)
    assert fp != baseline.baseline_fingerprint(task.small(), 0, 5)
