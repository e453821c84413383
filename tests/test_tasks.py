import numpy as np
import pytest
import torch
from torch import nn

import workbench as wb

MLPERF_PARAMS = {"kws-dscnn": 22_604, "vww-mobilenet": 210_850, "ic-resnet8": 77_706, "ad-autoencoder": 265_864}
MLPERF_MACS = {"kws-dscnn": 2.66e6, "vww-mobilenet": 7.49e6, "ic-resnet8": 12.5e6, "ad-autoencoder": 0.264e6}


def test_registry_lists_every_task_with_its_facts():
    table = wb.tasks.tasks_table().set_index("task")
    assert set(table.index) == {"digits-cnn", "mnist1d-cnn", "kws-dscnn", "vww-mobilenet", "ic-resnet8", "ad-autoencoder",
                                "hf-resnet18", "hf-mobilenetv2", "hf-bert", "hf-minilm-embed"}
    for name, params in MLPERF_PARAMS.items():
        assert table.loc[name, "params"] == params
        assert table.loc[name, "macs"] == pytest.approx(MLPERF_MACS[name], rel=0.01)
        assert table.loc[name, "data"] == "synthetic" and "synthetic" in table.loc[name, "data_source"]
    assert table.loc["digits-cnn", "data"] == "real" and table.loc["ad-autoencoder", "metric"] == "auc"
    minilm = table.loc["hf-minilm-embed"]  # ids and attention mask of 32 tokens; the shipped text, not synthetic
    assert (minilm["input_shape"], minilm["metric"], minilm["data"]) == ("2x32", "cosine", "real") and minilm["macs"] > 300e6


def test_unknown_task_suggests_names():
    with pytest.raises(wb.infra.TaskError, match="unknown task 'digit-cnn'.*did you mean digits-cnn"):
        wb.create_task("digit-cnn")


@pytest.mark.parametrize("name", [n for n in wb.list_tasks() if not n.startswith("hf-")])  # tests/test_hf.py covers the others
def test_every_task_quantises_exports_and_verifies(name, tmp_path):
    task = wb.create_task(name).small(n_train=128, n_calib=32, n_eval=48)
    model = wb.load_or_train_baseline(task, epochs=2, progress=False)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    table = wb.describe(q)
    assert (table["weight_bits"] == 8).all() and (table["act_bits"] == 8).all()
    res = wb.export_and_verify(task, q, tmp_path, name, latency_runs=10, qonnx_samples=4)
    assert res["int_kernel_nodes"] > 0
    assert res["int_kernels"].get("QLinearConv", 0) + res["int_kernels"].get("QGemm", 0) == len(table)  # every layer fused
    if task.is_classifier:
        assert res["onnx_agreement"] >= 0.9 and res["qonnx_agreement"] >= 0.75
    else:
        assert res["rel_output_error"] < 0.05
    assert res["latency_ms_p50_quant"] > 0 and (tmp_path / f"{name}.onnx").exists() and (tmp_path / f"{name}.qonnx.onnx").exists()


def test_bring_your_own_model_and_metric(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 3)).eval()
    x = torch.randn(64, 2, 16)
    with torch.no_grad():
        y = model(x).argmax(1)

    def accuracy(outputs, targets):
        return float((outputs.argmax(1) == targets).float().mean())

    task = wb.make_task(model, x[:32], (x[32:], y[32:]), accuracy, name="mine")
    baseline = wb.load_or_train_baseline(task)
    assert wb.tasks.evaluate.evaluate(baseline, task) == 1.0
    q = wb.quantize_task(task, baseline, {"layers": {"3": {"weight_bits": 4}}})
    assert wb.describe(q).set_index("layer").loc["3", "weight_bits"] == 4
    res = wb.export_and_verify(task, q, tmp_path, latency_runs=10, qonnx=False)
    assert res["onnx_agreement"] >= 0.9 and res["int_kernel_nodes"] == 2


def test_make_task_rejects_non_modules():
    with pytest.raises(wb.infra.TaskError, match="expected a torch.nn.Module"):
        wb.make_task(lambda x: x, torch.zeros(2, 3), (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)), lambda o, t: 0.0)


def test_task_on_user_data_via_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    xs, ys = wb.tasks.load_npz(tmp_path / "d.npz")
    from workbench.tasks.data import split_arrays

    train, calib, eval_ = split_arrays(xs, ys, seed=0)
    task = wb.create_task("digits-cnn").with_data(wb.tasks.TaskData(train, calib, eval_, source="my npz"))
    assert task.data_source == "my npz" and len(task.data.eval) == 8


def test_scoring_a_classifier_without_labels_is_a_task_error():
    from workbench.tasks.data import Split, TaskData

    task = wb.create_task("ic-resnet8").small(64, 32, 32)
    d = task.data
    unlabelled = task.with_data(TaskData(Split(d.train.x), Split(d.calib.x), Split(d.eval.x), d.source, d.synthetic, d.num_classes))
    model = task.create_model()
    with pytest.raises(wb.infra.TaskError, match="no labels.*top1_accuracy"):
        wb.tasks.evaluate.evaluate(model, unlabelled)
