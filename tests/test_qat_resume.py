"""QAT killed after any epoch and resumed gives the run that never stopped, bit for bit: every
tensor of the model, the whole checkpoint (optimiser, scheduler, history, best state) and the
exported QCDQ ONNX bytes, for several learning rates, with and without distillation. Damaged
checkpoint files are moved aside, named in a warning, and training goes on from what is left.

(Found while writing these: Brevitas rebuilds its quantisers' modules on ``load_state_dict``, so
an optimiser built before the checkpoint was loaded kept updating orphaned activation scales; and
when the calibrated model was still the best one at the kill, the resumed run forgot it.)
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open

import workbench as wb
from workbench.tasks.baseline import CorruptFileWarning
from workbench.core.qat import QATConfig, train_qat

EPOCHS = 4


class Killed(BaseException):
    """Stands for a kill: raised from on_epoch after the epoch's checkpoint is on disk, and not an
    Exception, so nothing on the way out can catch it."""


@pytest.fixture(scope="module")
def small(digits):
    """A small digits task at W4A4 (a few hundred ms per QAT run) and the runs that never stopped."""
    full, model = digits
    task = full.small(n_train=256, n_calib=64, n_eval=128)
    fresh = lambda: wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 4))  # noqa: E731
    return task, model, fresh, {}


def _snapshot(task, qmodel, history, folder: Path, onnx: bool = True) -> dict:
    """Everything a run leaves: its weights, its history, both checkpoint files and the ONNX bytes."""
    onnx = wb.export_qcdq(qmodel, task.example_input(), folder / "model.onnx") if onnx else None
    files = {}
    for name in ("qat-last.safetensors", "qat-best.safetensors"):
        with safe_open(str(folder / name), framework="pt") as f:
            files[name] = ({k: json.loads(v) for k, v in (f.metadata() or {}).items()}, {k: f.get_tensor(k) for k in f.keys()})
    return {"state": {k: v.clone() for k, v in qmodel.state_dict().items()}, "history": history, "files": files,
            "onnx_sha256": hashlib.sha256(onnx.read_bytes()).hexdigest() if onnx else None}


def _straight(small, tmp_path_factory, config: QATConfig) -> dict:
    task, model, fresh, cache = small
    key = json.dumps(config.to_dict(), sort_keys=True)
    if key not in cache:
        folder = tmp_path_factory.mktemp("straight")
        rng = torch.get_rng_state()
        q, history = train_qat(task, model if config.distill else None, fresh(), config, checkpoint_dir=folder, progress=False)
        assert torch.equal(torch.get_rng_state(), rng)  # the caller's global RNG is left alone
        cache[key] = _snapshot(task, q, history, folder)
    return cache[key]


def _assert_same(ref: dict, got: dict) -> None:
    assert ref["state"].keys() == got["state"].keys()
    for k, v in ref["state"].items():
        assert v.dtype == got["state"][k].dtype and torch.equal(v, got["state"][k]), k
    pd.testing.assert_frame_equal(ref["history"], got["history"], check_exact=True)
    for name, (meta, tensors) in ref["files"].items():
        got_meta, got_tensors = got["files"][name]
        assert meta == got_meta, name
        assert tensors.keys() == got_tensors.keys(), name
        for k, v in tensors.items():
            assert v.dtype == got_tensors[k].dtype and torch.equal(v, got_tensors[k]), f"{name}: {k}"
    if got["onnx_sha256"] is not None:
        assert ref["onnx_sha256"] == got["onnx_sha256"]


def _kill_after(epoch: int):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise Killed

    return on_epoch


def _run_killed(small, config: QATConfig, folder: Path, kill_at: int) -> None:
    task, model, fresh, _ = small
    with pytest.raises(Killed):
        train_qat(task, model if config.distill else None, fresh(), config, checkpoint_dir=folder, progress=False, on_epoch=_kill_after(kill_at))


def _resume(small, config: QATConfig, folder: Path, onnx: bool = True) -> tuple[dict, list[int]]:
    task, model, fresh, _ = small
    ran = []
    q, history = train_qat(task, model if config.distill else None, fresh(), config, checkpoint_dir=folder, progress=False,
                           on_epoch=lambda row: ran.append(row["epoch"]))
    return _snapshot(task, q, history, folder, onnx), ran


@pytest.mark.parametrize("distill", [True, False], ids=["distill", "plain"])
@pytest.mark.parametrize("lr", [1e-2, 1e-3, 3e-4])
def test_a_run_killed_after_any_epoch_resumes_bit_for_bit(small, tmp_path, tmp_path_factory, lr, distill):
    config = QATConfig(epochs=EPOCHS, lr=lr, distill=distill)
    ref = _straight(small, tmp_path_factory, config)
    for kill_at in (1, 2):
        folder = tmp_path / f"killed-after-{kill_at}"
        _run_killed(small, config, folder, kill_at)
        got, ran = _resume(small, config, folder)
        assert ran == list(range(kill_at + 1, EPOCHS))
        _assert_same(ref, got)
    again, ran = _resume(small, config, folder, onnx=False)  # a finished run resumed: nothing to train, the same result
    assert ran == []
    _assert_same(ref, again)


@pytest.mark.parametrize("damage", ["last-truncated", "last-empty", "best-truncated"])
def test_a_damaged_checkpoint_is_moved_aside_and_training_goes_on(small, tmp_path, tmp_path_factory, damage):
    config = QATConfig(epochs=EPOCHS, lr=1e-3, distill=True)
    ref = _straight(small, tmp_path_factory, config)
    _run_killed(small, config, tmp_path, 1)
    which = "qat-last.safetensors" if damage.startswith("last") else "qat-best.safetensors"
    path = tmp_path / which
    data = path.read_bytes()
    path.write_bytes(b"" if damage == "last-empty" else data[: len(data) // 2])
    then = ("training starts anew from the calibrated model" if which == "qat-last.safetensors"
            else "rewriting it from the best state in qat-last.safetensors")
    with pytest.warns(CorruptFileWarning, match=rf"{re.escape(str(path))} is damaged \(.+\); moved it aside to {re.escape(which)}\.corrupt-\d{{8}}-\d{{6}}; {then}"):
        got, ran = _resume(small, config, tmp_path)
    assert ran == (list(range(EPOCHS)) if which == "qat-last.safetensors" else [2, 3])
    _assert_same(ref, got)  # anew or from qat-last: the same run either way
    aside = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert len(aside) == 1 and aside[0].startswith(which) and (tmp_path / aside[0]).stat().st_size == len(data) // 2 * (damage != "last-empty")


def test_the_cli_resumes_a_sigkilled_run_to_the_same_onnx(digits, tmp_path):
    """A real SIGKILL of ``workbench qat RECIPE --out DIR`` after epoch 1's checkpoint, then the same
    command again: the same ONNX bytes as a run that never stopped."""
    import yaml

    recipe = {"recipe_version": 1, "name": "digits-qat-kill", "task": {"name": "digits-cnn"}, "quantization": {"weight_bits": 4, "act_bits": 4},
              "qat": {"epochs": 6, "lr": 0.001}, "export": {"formats": ["qcdq"]}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    exe = str(Path(sys.executable).parent / "workbench")
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_THREADS"}
    command = lambda out: [exe, "qat", str(path), "--out", str(out), "--latency-runs", "10"]  # noqa: E731

    out = tmp_path / "killed"
    last = out / "checkpoints" / "qat-last.safetensors"
    straight = subprocess.Popen(command(tmp_path / "straight"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while _checkpoint_epoch(last) < 1:
            assert proc.poll() is None, f"the run ended before epoch 1's checkpoint: {proc.stderr.read()[-1500:]}"
            assert time.monotonic() < deadline, "no checkpoint of epoch 1 within 240 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert straight.wait(timeout=300) == 0, straight.stderr.read()[-1500:]
    finally:
        for p in (proc, straight):
            p.kill()
            p.communicate()
    killed_at = _checkpoint_epoch(last)
    assert proc.returncode == -signal.SIGKILL and 1 <= killed_at < recipe["qat"]["epochs"] - 1  # killed mid-training
    assert not (out / "model.onnx").exists()

    resumed = subprocess.run(command(out), capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "straight", out))
    assert a["onnx_sha256"] == b["onnx_sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert a["qat"]["history"] == b["qat"]["history"] and len(b["qat"]["history"]) == recipe["qat"]["epochs"]


def _checkpoint_epoch(path: Path) -> int:
    """The epoch of the QAT checkpoint at ``path`` (-1 while there is none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["workbench_qat"])["epoch"]
    except Exception:  # not there yet (it is replaced atomically, never half-written)
        return -1


def test_qat_seed_is_validated_and_the_largest_seed_trains(small, tmp_path):
    for bad in (-1, 2**63, 1.5, True, "0", None):
        with pytest.raises(wb.infra.SpecError, match=r"^qat\.seed: expected an integer in 0\.\.2\*\*63-1; got "):
            QATConfig(seed=bad)
    for name, bad in (("lr", "0.001"), ("lr", float("nan")), ("epochs", 2.0), ("distill", "yes"), ("patience", -1)):
        with pytest.raises(wb.infra.SpecError, match=rf"^qat\.{name}: expected "):
            QATConfig(**{name: bad})
    task, model, fresh, _ = small
    config = QATConfig(epochs=1, seed=2**63 - 1)
    a, _ = train_qat(task, model, fresh(), config, progress=False)
    b, _ = train_qat(task, model, fresh(), config, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_model_with_dropout_resumes_bit_for_bit_whatever_the_callers_rng(digits, tmp_path):
    """Dropout draws from torch's global RNG: each epoch seeds it from (seed, epoch), so neither the
    caller's RNG state nor a kill changes the masks it draws."""
    from torch import nn

    full, _ = digits
    data = full.small(n_train=256, n_calib=64, n_eval=128).data
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    accuracy = lambda out, y: float((out.argmax(1) == y).float().mean())  # noqa: E731
    task = wb.make_task(net, data.calib.x, (data.eval.x, data.eval.y), accuracy, name="dropout-mlp", train=(data.train.x, data.train.y))
    fresh = lambda: wb.quantize_task(task, net, wb.QuantSpec.uniform(4, 4))  # noqa: E731
    config = QATConfig(epochs=3, lr=1e-3, distill=False)
    torch.manual_seed(123)
    straight, history = train_qat(task, None, fresh(), config, checkpoint_dir=tmp_path / "a", progress=False)
    torch.manual_seed(456)
    with pytest.raises(Killed):
        train_qat(task, None, fresh(), config, checkpoint_dir=tmp_path / "b", progress=False, on_epoch=_kill_after(1))
    torch.manual_seed(789)
    resumed, again = train_qat(task, None, fresh(), config, checkpoint_dir=tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(history, again, check_exact=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    with safe_open(str(tmp_path / "a" / "qat-last.safetensors"), framework="pt") as a, safe_open(str(tmp_path / "b" / "qat-last.safetensors"), framework="pt") as b:
        assert a.keys() == b.keys() and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_a_checkpoint_of_another_teacher_or_other_data_is_refused(small, tmp_path):
    task, model, fresh, _ = small
    config = QATConfig(epochs=2, lr=1e-3)
    _run_killed(small, config, tmp_path, 0)
    other = __import__("copy").deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(wb.infra.CheckpointError, match=r"^qat-last\.safetensors was saved for another teacher "):
        train_qat(task, other, fresh(), config, checkpoint_dir=tmp_path, progress=False)
    fewer = task.small(n_train=200, n_calib=64, n_eval=128)
    with pytest.raises(wb.infra.CheckpointError, match=r"^qat-last\.safetensors was saved for another data "):
        train_qat(fewer, model, wb.quantize_task(fewer, model, wb.QuantSpec.uniform(4, 4)), config, checkpoint_dir=tmp_path, progress=False)
