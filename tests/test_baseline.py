import pytest
import torch

import workbench as wb
from workbench.tasks import baseline


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


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_a_damaged_cache_file_is_moved_aside_and_the_baseline_trained_again(monkeypatch, tmp_path, damage):
    import re

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    task = wb.create_task("mnist1d-cnn").small(n_train=64, n_calib=16, n_eval=32)
    first = wb.load_or_train_baseline(task, epochs=1, progress=False)
    (path,) = (tmp_path / "baselines").glob("mnist1d-cnn-*.safetensors")
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"\x00" * 8 + b"x" * 100}[damage])
    with pytest.warns(baseline.CorruptFileWarning, match=re.escape(str(path)) + r" is damaged \(.*\); moved it aside to .*; training the baseline again"):
        again = wb.load_or_train_baseline(task, epochs=1, progress=False)
    for (k, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k  # retrained from the same seed: the same weights
    aside = [p.name for p in path.parent.iterdir() if p.name != path.name]
    assert len(aside) == 1 and re.fullmatch(re.escape(path.name) + r"\.corrupt-\d{8}-\d{6}", aside[0]), aside
    from safetensors.torch import load_file

    cached = load_file(str(path))  # the cache is whole again, and serves the next call without a warning
    assert cached.keys() == first.state_dict().keys() and all(torch.equal(cached[k], v) for k, v in first.state_dict().items())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", baseline.CorruptFileWarning)
        wb.load_or_train_baseline(task, epochs=1, progress=False)
