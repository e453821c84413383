"""Quantisation-aware training with distillation: recovery, exact resume, refused checkpoints."""

import pytest
import torch

import workbench as wb
from workbench.qat import CheckpointError, QATConfig, train_qat


def test_qat_with_distillation_recovers_half_the_w4a4_drop():
    task = wb.create_task("ic-resnet8").small(1024, 128, 256)
    model = wb.load_or_train_baseline(task, progress=False)
    fp = wb.evaluate(model, task)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 4))
    ptq = wb.evaluate(q, task)
    assert fp - ptq > 0.05  # W4A4 PTQ really drops
    q, history = train_qat(task, model, q, QATConfig(epochs=4, distill=True), progress=False)
    qat = wb.evaluate(q, task)
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
    with pytest.raises(wb.SpecError, match="qat.distill: distillation needs the float teacher model"):
        train_qat(task, None, fresh(), QATConfig(distill=True), progress=False)
    with pytest.raises(wb.SpecError, match="qat.alpha: expected a value in \\[0, 1\\]; got 1.5"):
        QATConfig(alpha=1.5)
    with pytest.raises(wb.SpecError, match="qat.epochs: expected an integer >= 1; got 0"):
        QATConfig(epochs=0)


def test_recovery_table_compares_every_method(digits):
    from workbench.recovery import recovery_table

    task, model = digits
    df = recovery_table(task, model, wb.QuantSpec.uniform(3, 4), qat=QATConfig(epochs=1, lr=3e-4), progress=False)
    assert list(df["method"]) == ["float", "ptq", "bias_correction", "cle", "act_equalization", "gpfq", "qat", "qat+distill"]
    assert df.loc[0, "delta"] == 0 and df[df.method == "ptq"]["recovered"].iloc[0] == 0
    assert (df["seconds"][1:] > 0).all() and df["metric"].between(0, 1).all()
    assert df[df.method.str.startswith("qat")]["metric"].min() >= df[df.method == "ptq"]["metric"].iloc[0]  # never worse than where it started
