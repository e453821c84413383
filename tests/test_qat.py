"""Quantisation-aware training with distillation: recovery, exact resume, refused checkpoints."""

import pytest
import torch

import workbench as wb
from workbench.core.qat import CheckpointError, QATConfig, train_qat


def test_qat_with_distillation_recovers_half_the_w4a4_drop():
    task = wb.create_task("ic-resnet8").small(1024, 128, 256)
    model = wb.load_or_train_baseline(task, progress=False)
    fp = wb.tasks.evaluate.evaluate(model, task)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 4))
    ptq = wb.tasks.evaluate.evaluate(q, task)
    assert fp - ptq > 0.05  # W4A4 PTQ really drops
    q, history = train_qat(task, model, q, QATConfig(epochs=4, distill=True), progress=False)
    qat = wb.tasks.evaluate.evaluate(q, task)
    assert qat - ptq >= 0.5 * (fp - ptq), (fp, ptq, qat)
    assert list(history["epoch"]) == [0, 1, 2, 3] and history["lr"].is_monotonic_decreasing  # cosine schedule
    assert qat == pytest.approx(history["metric"].max())  # the best epoch is kept


@pytest.fixture()
def digits_w4(digits):
    task, model = digits
    return task, model, (lambda: wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 4)))


def test_a_killed_run_resumes_bit_for_bit(digits_w4, tmp_path):
    task, model, fresh = digits_w4
    config = QATConfig(epochs=4, lr=3e-4)
    straight, _ = train_qat(task, model, fresh(), config, checkpoint_dir=tmp_path / "a", progress=False)

    def kill(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_qat(task, model, fresh(), config, checkpoint_dir=tmp_path / "b", progress=False, on_epoch=kill)
    epochs = []
    resumed, history = train_qat(task, model, fresh(), config, checkpoint_dir=tmp_path / "b", progress=False, on_epoch=lambda r: epochs.append(r["epoch"]))
    assert epochs == [2, 3] and list(history["epoch"]) == [0, 1, 2, 3]
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoints_of_another_model_or_config_are_refused(digits_w4, tmp_path):
    task, model, fresh = digits_w4
    train_qat(task, model, fresh(), QATConfig(epochs=1), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="qat-last.safetensors was saved for another config"):
        train_qat(task, model, fresh(), QATConfig(epochs=2), checkpoint_dir=tmp_path, progress=False)
    other = wb.create_task("mnist1d-cnn").small(64, 32, 32)
    other_model = wb.load_or_train_baseline(other, epochs=1, progress=False)
    with pytest.raises(CheckpointError, match="qat-last.safetensors was saved for another model"):
        train_qat(other, other_model, wb.quantize_task(other, other_model, wb.QuantSpec.uniform(4, 4)), QATConfig(epochs=1),
                  checkpoint_dir=tmp_path, progress=False)
    (tmp_path / "qat-last.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a readable workbench QAT checkpoint"):
        train_qat(task, model, fresh(), QATConfig(epochs=1), checkpoint_dir=tmp_path, progress=False)


def test_qat_bad_input(digits_w4):
    task, model, fresh = digits_w4
    with pytest.raises(wb.infra.SpecError, match="qat.distill: distillation needs the float teacher model"):
        train_qat(task, None, fresh(), QATConfig(distill=True), progress=False)
    with pytest.raises(wb.infra.SpecError, match="qat.alpha: expected a value in \\[0, 1\\]; got 1.5"):
        QATConfig(alpha=1.5)
    with pytest.raises(wb.infra.SpecError, match="qat.epochs: expected an integer >= 1; got 0"):
        QATConfig(epochs=0)


def test_recovery_table_compares_every_method(digits):
    from workbench.analysis.recovery import recovery_table

    task, model = digits
    df = recovery_table(task, model, wb.QuantSpec.uniform(3, 4), qat=QATConfig(epochs=1, lr=3e-4), progress=False)
    assert list(df["method"]) == ["float", "ptq", "bias_correction", "cle", "act_equalization", "gptq", "gpfq", "adaround", "qat", "qat+distill"]
    assert df.loc[0, "delta"] == 0 and df[df.method == "ptq"]["recovered"].iloc[0] == 0
    assert (df["seconds"][1:] > 0).all() and df["metric"].between(0, 1).all()
    assert df[df.method.str.startswith("qat")]["metric"].min() >= df[df.method == "ptq"]["metric"].iloc[0]  # never worse than where it started


def test_recipe_with_qat_applies_byte_identically_and_the_cli_resumes(digits, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    recipe = {"recipe_version": 1, "name": "digits-qat", "task": {"name": "digits-cnn"}, "quantization": {"weight_bits": 4, "act_bits": 4},
              "qat": {"epochs": 2, "lr": 0.0003}, "export": {"formats": ["qcdq"]}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    exe = str(Path(sys.executable).parent / "workbench")
    run = lambda *a: subprocess.run([exe, *a], capture_output=True, text=True, env=dict(os.environ), timeout=600)  # noqa: E731
    a, b = run("qat", str(path), "--out", str(tmp_path / "a"), "--latency-runs", "10"), run("apply", str(path), "--out", str(tmp_path / "b"), "--latency-runs", "10")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-1500:] + b.stderr[-1500:]
    assert "epoch 1: loss" in a.stdout and (tmp_path / "a" / "checkpoints" / "qat-last.safetensors").exists()
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert [r["epoch"] for r in summary["qat"]["history"]] == [0, 1]
    again = run("qat", str(path), "--out", str(tmp_path / "a"), "--latency-runs", "10")  # finished: resumes past the last epoch
    assert again.returncode == 0 and (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    no_qat = tmp_path / "plain.yaml"
    no_qat.write_text(yaml.safe_dump({k: v for k, v in recipe.items() if k != "qat"}))
    bad = run("qat", str(no_qat), "--out", str(tmp_path / "c"))
    assert bad.returncode == 2 and "plain.yaml has no qat section" in bad.stderr
