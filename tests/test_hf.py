"""Real architectures through the whole workbench: ResNet-18, MobileNetV2 and a BERT-style encoder
from Hugging Face transformers (built from configs, random init, no download), on small inputs."""

import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.tasks import hf
from workbench.search.config import SearchConfig
from workbench.search.front import best_within
from workbench.search.precision import search
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

SMALL = {"hf-resnet18": (16, 16, 32), "hf-mobilenetv2": (16, 16, 32), "hf-bert": (32, 32, 48)}


@pytest.fixture(scope="module", params=list(SMALL))
def arch(request):
    task = wb.create_task(request.param).small(*SMALL[request.param])
    return task, wb.load_or_train_baseline(task, progress=False)


def test_architecture_end_to_end(arch, tmp_path):
    task, model = arch
    assert wb.tasks.evaluate.evaluate(model, task) == pytest.approx(1.0)  # label-free: the float model agrees with itself
    layers = wb.core.quantisable_layers(model)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    table = wb.describe(q).set_index("layer")
    assert (table.loc[list(layers), "weight_bits"] == 8).all()
    kept_float = table.drop(index=list(layers))  # what Brevitas cannot quantise here (BERT's embeddings) stays float, listed
    assert kept_float["weight_bits"].isna().all() and len(kept_float) == (3 if task.name == "hf-bert" else 0)
    metric = wb.tasks.evaluate.evaluate(q, task)
    assert 0.5 < metric < 1.0  # quantisation costs something, measured without labels
    res = wb.export_and_verify(task, q, tmp_path, task.name, qonnx=False, latency_runs=5)
    assert res["onnx_agreement"] >= 0.9 and abs(res["onnx_metric"] - metric) < 0.05
    assert res["int_kernels"].get("QGemm", 0) >= 1 and res["latency_ms_p50_quant"] > 0
    # per-layer sensitivity (label-free metric and SQNR), on the swap engine: these models do not fx-trace
    some = tuple(list(layers)[:3]) + (list(layers)[-1],)
    sens = sensitivity(task, model, SensitivityConfig(weight_bits=(2, 8), layers=some), store=False, progress=False)
    assert "block" in set(sens["engine"]) and set(sens["engine"]) <= {"block", "swap"} and len(sens) == 8  # untraceable: the block engine
    two, eight = sens[sens.weight_bits == 2], sens[sens.weight_bits == 8]
    assert (eight["sqnr_db"].to_numpy() > two["sqnr_db"].to_numpy()).all()


def test_bert_every_linear_layer_and_mixed_precision():
    task = wb.create_task("hf-bert", layers=2).small(16, 16, 32)
    model = wb.load_or_train_baseline(task, progress=False)
    layers = wb.core.quantisable_layers(model)
    assert len(layers) == 6 * 2 + 2 and all(kind == "Linear" for kind, _ in layers.values())
    sens = sensitivity(task, model, SensitivityConfig(weight_bits=(4, 8)), store=False, progress=False)
    assert len(sens) == 2 * len(layers) and sens["status"].eq("ok").all()
    points = search(task, model, sens, SearchConfig(target="mcu", budget_kind="weight_kib", n_budgets=2, n_random=0, latency_runs=0), progress=False,
                    extra_budgets=(300.0,))
    # int8 everywhere (about 400 KiB) is over the mcu's 256 KiB of flash: no point passes it, and it binds a 300 KiB budget
    assert {"ilp", "uniform-4"} <= set(points["kind"]) and "uniform-8" not in set(points["kind"])
    assert (points["flash_kib"] <= 256).all() and "flash_kib" in set(points["bound_by"])
    chosen = best_within(points, 300.0)
    assert chosen["bound_by"] == "flash_kib"
    bits = json.loads(chosen["bits"])
    assert set(bits) == set(layers) and set(bits.values()) <= {4, 8} and 4 in bits.values()


def test_swap_engine_equals_full_rebuild():
    task = wb.create_task("hf-bert", layers=1).small(16, 16, 24)
    model = wb.load_or_train_baseline(task, progress=False)
    config = SensitivityConfig(weight_bits=(3, 8), act_bits=(None, 6), layers=tuple(list(wb.core.quantisable_layers(model))[1:4]))
    swap = sensitivity(task, model, config, store=False, progress=False)
    naive = sensitivity(task, model, config, store=False, progress=False, engine="naive")
    cols = ["metric", "sqnr_db", "output_mse", "kl"]
    assert set(swap["engine"]) == {"swap"} and set(naive["engine"]) == {"naive"}
    assert np.nanmax(np.abs(swap[cols].to_numpy(float) - naive[cols].to_numpy(float))) <= 1e-6


def _tiny_bert_directory(path):
    tf = hf._transformers()
    path.mkdir(parents=True)
    words = "the a cat dog sat ran on mat fast slow red blue".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = tf.BertTokenizerFast(vocab=str(path / "vocab.txt"))  # transformers 5 ignores vocab_file=
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3)
    tf.BertForSequenceClassification(cfg).save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


def test_local_directory_text_lines_and_label_free_task(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = _tiny_bert_directory(tmp_path / "tiny-bert")
    (tmp_path / "calib.txt").write_text("the cat sat on the mat\n\nthe dog ran fast\na red cat\n" * 4)
    (tmp_path / "eval.txt").write_text("a blue dog sat\nthe slow cat ran on a mat\n" * 6)
    model, tokenizer = hf.load_hf_directory(model_dir)
    calib = hf.tokenize(tokenizer, hf.read_text_lines(tmp_path / "calib.txt"), max_length=12)
    eval_x = hf.tokenize(tokenizer, hf.read_text_lines(tmp_path / "eval.txt"), max_length=12)
    assert calib.shape == (12, 2, 12) and calib.dtype == torch.int64 and int(calib[0, 0, 0]) == tokenizer.cls_token_id and tokenizer.unk_token_id not in calib[:, 0]
    task = hf.label_free_task(model, calib, eval_x, name="tiny-bert")
    assert task.metric.name == "cosine" and wb.tasks.evaluate.evaluate(model, task) == pytest.approx(1.0)
    q = wb.quantize_task(task, model, {"weight_bits": 4, "act_bits": 8})
    assert 0.0 < wb.tasks.evaluate.evaluate(q, task) < 1.0
    res = wb.export_and_verify(task, q, tmp_path / "out", "tiny", qonnx=False, latency_runs=5)
    assert res["onnx_agreement"] == 1.0
    encoder, _ = hf.load_hf_directory(model_dir, task="encoder")
    assert encoder(eval_x[:2]).shape == (2, 32)


def test_directory_and_text_errors(tmp_path):
    d = _tiny_bert_directory(tmp_path / "m")
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(wb.infra.DatasetError, match="m: no model.safetensors \\(pytorch_model.bin would be unpickled, which the workbench never does"):
        hf.load_hf_directory(d)
    (d / "pytorch_model.bin").unlink()
    with pytest.raises(wb.infra.DatasetError, match="no model.safetensors \\(no weights\\); expected config.json, model.safetensors and a tokenizer"):
        hf.load_hf_directory(d)
    e = _tiny_bert_directory(tmp_path / "e")
    for f in ("vocab.txt", "tokenizer.json"):
        (e / f).unlink(missing_ok=True)
    with pytest.raises(wb.infra.DatasetError, match="e: no tokenizer \\(found "):
        hf.load_hf_directory(e)
    (e / "config.json").unlink()
    with pytest.raises(wb.infra.DatasetError, match="e: no config.json"):
        hf.load_hf_directory(e)
    with pytest.raises(wb.infra.DatasetError, match="does not exist"):
        hf.load_hf_directory(tmp_path / "nowhere")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(wb.infra.DatasetError, match="empty.txt holds no sentence; expected UTF-8 text, one sentence per line"):
        hf.read_text_lines(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(wb.infra.DatasetError, match="bin.txt is not UTF-8 text"):
        hf.read_text_lines(tmp_path / "bin.txt")


def test_inputs_the_model_rejects_and_models_without_quantisable_layers():
    model = hf.bert_encoder(layers=1)
    images = torch.randn(4, 3, 8, 8)
    with pytest.raises(wb.infra.TaskError, match="the model rejects inputs of shape \\(3, 8, 8\\) and type float32"):
        hf.label_free_task(model, images, images, name="bert-on-images")

    class NoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, x):
            return self.emb(x).sum(1)

    ids = torch.randint(0, 10, (8, 5))
    task = hf.label_free_task(NoLayers(), ids, ids, name="no-layers")
    with pytest.raises(wb.infra.UnsupportedLayerError, match="model has no Conv1d, Conv2d or Linear layer to quantise \\(layers found: Embedding\\)"):
        wb.quantize_task(task, task.create_model(), {"weight_bits": 8})
