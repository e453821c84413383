"""Hugging Face directories loaded honestly (issue 15, item 3): no random head ever appears
unasked, the kind follows the config's architectures, sentence embeddings pool over the attention
mask as sentence-transformers' config says (through the task, the ONNX export and onnxruntime),
label-free embedding tasks are scored on cosine and the pairwise-similarity ranking (never an
argmax over dimensions), and bad directories or text are one-line errors or said warnings.
Real transformers models (tiny, built from configs, saved with ``save_pretrained``), real
onnxruntime sessions."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import workbench as wb
from workbench.tasks import hf
from workbench.infra.errors import MissingWeightsError
from workbench.tasks.evaluate import predict
from workbench.tasks.metrics import output_agreement, similarity_spearman
from workbench.export.pipeline import evaluate_quantized
from workbench.export.verify import run_onnx, session

WORDS = "the a cat dog sat ran on mat fast slow red blue".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
SENTENCES = [" ".join(WORDS[(i * 7 + j * 5) % len(WORDS)] for j in range(2 + i % 6)) for i in range(40)]


def _directory(path, cls_name="BertModel", vocab=VOCAB, sentence_transformers=None, max_positions=32):
    """A tiny BERT checkpoint and its tokenizer in ``path``; ``sentence_transformers``: None, or
    (pooling mode, normalize) to write ``modules.json`` and ``1_Pooling/config.json``."""
    tf = hf._transformers()
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3,
                        max_position_embeddings=max_positions)
    model = getattr(tf, cls_name)(cfg).eval()
    model.save_pretrained(str(path))
    tf.BertTokenizerFast(vocab=str(path / "vocab.txt")).save_pretrained(str(path))
    if sentence_transformers:
        mode, normalize = sentence_transformers
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (path / "modules.json").write_text(json.dumps(modules))
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": mode == "cls",
                                                                   "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": mode == "max"}))
    return path, model


def test_bare_encoder_never_gains_a_random_head(tmp_path):
    path, original = _directory(tmp_path / "bare")
    a, tokenizer = hf.load_hf_directory(path)
    b, _ = hf.load_hf_directory(path)
    x = hf.tokenize(tokenizer, SENTENCES[:6], max_length=10)
    assert isinstance(a, hf.OutputOf) and a.output_kind == "embedding" and not hasattr(a.model, "classifier")
    assert torch.equal(a(x), b(x))  # two loads, one model: nothing drawn at random
    with torch.no_grad():  # and it is the checkpoint's own encoder (the pooled output, mask respected)
        assert torch.allclose(a(x), original(input_ids=x[:, 0], attention_mask=x[:, 1]).pooler_output, atol=1e-6)
    with pytest.raises(MissingWeightsError) as info:
        hf.load_hf_directory(path, "sequence-classification")
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, wb.infra.TaskError)
    assert msg == ("bare: model.safetensors (BertModel) has no sequence-classification head (classifier.bias, classifier.weight); it would be "
                   "random; expected kind='encoder' for this checkpoint, or new_head=True to ask for an untrained head")
    with pytest.warns(UserWarning, match="a new, untrained sequence-classification head \\(classifier.bias, classifier.weight\\), as asked"):
        c, _ = hf.load_hf_directory(path, "sequence-classification", new_head=True)
    with pytest.warns(UserWarning, match="untrained"):
        d, _ = hf.load_hf_directory(path, "sequence-classification", new_head=True)
    assert c(x).shape == (6, 3) and torch.equal(c(x), d(x))  # asked for: seeded, so reproducible


def test_classification_checkpoint_loads_as_classification(tmp_path):
    path, original = _directory(tmp_path / "cls", "BertForSequenceClassification")
    model, tokenizer = hf.load_hf_directory(path)
    x = hf.tokenize(tokenizer, SENTENCES[:5], max_length=12)
    assert model.output_kind == "logits" and model(x).shape == (5, 3)
    with torch.no_grad():
        assert torch.allclose(model(x), original(input_ids=x[:, 0], attention_mask=x[:, 1]).logits, atol=1e-6)
    encoder, _ = hf.load_hf_directory(path, "encoder")  # its encoder alone: the head is left out, nothing missing
    assert encoder(x).shape == (5, 32)
    task = hf.label_free_task(model, x, x, name="cls")
    assert task.kind == "classification" and task.is_classifier


def _pooled(original, x, mode, normalize):
    with torch.no_grad():
        h = original(input_ids=x[:, 0], attention_mask=x[:, 1]).last_hidden_state
    m = x[:, 1].unsqueeze(-1).float()
    e = h[:, 0] if mode == "cls" else (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(e, dim=-1) if normalize else e


@pytest.mark.parametrize("mode,normalize", [("mean", True), ("cls", False)])
def test_sentence_embedding_reads_the_pooling_config(tmp_path, mode, normalize):
    path, original = _directory(tmp_path / "st", sentence_transformers=(mode, normalize))
    model, tokenizer = hf.load_hf_directory(path)  # a bare encoder with a pooling config: sentence-embedding by default
    assert isinstance(model, hf.SentenceEmbedding) and (model.pooling, model.normalize) == (mode, normalize)
    assert model.model.pooler is None  # unused: not quantised, not in sensitivity
    x = hf.tokenize(tokenizer, SENTENCES[:8], max_length=12)
    assert x.shape == (8, 2, 12) and x.dtype == torch.int64 and (x[:, 1].sum(1) < 12).any()  # padded, and the mask says where
    with torch.no_grad():
        assert torch.allclose(model(x), _pooled(original, x, mode, normalize), atol=1e-5)
        # the mask makes padding irrelevant: the same sentences padded to another length embed alike
        assert torch.allclose(model(hf.tokenize(tokenizer, SENTENCES[:8], max_length=20)), model(x), atol=1e-5)
        if mode == "mean":  # and without it, padding would change the embedding
            assert not torch.allclose(model(x[:, 0]), model(x), atol=1e-3)


def test_sentence_embedding_without_a_pooling_config_is_mean_pooling(tmp_path):
    path, original = _directory(tmp_path / "plain")
    model, tokenizer = hf.load_hf_directory(path, "sentence-embedding")
    x = hf.tokenize(tokenizer, SENTENCES[:4], max_length=12)
    assert (model.pooling, model.normalize) == ("mean", False)
    assert torch.allclose(model(x), _pooled(original, x, "mean", False), atol=1e-5)


def test_embedding_task_exports_with_the_mask_and_onnxruntime_agrees(tmp_path):
    path, _ = _directory(tmp_path / "st", sentence_transformers=("mean", True))
    model, tokenizer = hf.load_hf_directory(path)
    x = hf.tokenize(tokenizer, SENTENCES, max_length=12)
    task = hf.label_free_task(model, x[:16], x[16:], name="st")
    assert task.kind == "embedding" and not task.is_classifier and task.input_shape == (2, 12)
    assert wb.tasks.evaluate.evaluate(model, task) == pytest.approx(1.0)
    q = wb.quantize_task(task, model, {"weight_bits": 4, "act_bits": 8})
    quant = evaluate_quantized(task, model, q)
    assert 0.5 < quant["quant_metric"] < 1.0
    assert 0.5 < quant["quant_fp_agreement"] < 1.0  # the pairwise-similarity ranking, which 4-bit weights disturb a little
    res = wb.export_and_verify(task, q, tmp_path / "out", "st", qonnx=False, latency_runs=3)
    assert abs(res["onnx_metric"] - quant["quant_metric"]) < 1e-3 and res["int_kernels"].get("MatMulIntegerToFloat", 0) >= 1
    ort = torch.from_numpy(run_onnx(session(tmp_path / "out" / res["onnx_path"]), task.data.eval.x))  # one input: ids and mask
    cmp = output_agreement(ort, predict(q, task.data.eval.x), task.kind)
    assert cmp["agreement"] == cmp["similarity_spearman"] > 0.999 and cmp["mean_cosine"] > 0.9999


def test_embedding_agreement_is_never_an_argmax():
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(64, 16, generator=gen)
    rotated = ref @ torch.linalg.qr(torch.randn(16, 16, generator=gen))[0]  # same geometry, other dimensions
    same = output_agreement(rotated, ref, "embedding")
    assert same["similarity_spearman"] == pytest.approx(1.0) and same["agreement"] == pytest.approx(1.0)
    assert output_agreement(rotated, ref, True)["agreement"] < 0.5  # argmax over dimensions would call them different
    noisy = [similarity_spearman(ref + s * torch.randn(64, 16, generator=gen), ref) for s in (0.1, 0.5, 2.0)]
    assert 1.0 > noisy[0] > noisy[1] > noisy[2] > 0.0
    assert output_agreement(ref, ref, False)["agreement"] is None


def test_bad_directories_are_one_line_errors(tmp_path):
    # a checkpoint without the encoder weights its architecture needs
    path, _ = _directory(tmp_path / "cut", "BertForSequenceClassification")
    weights = load_file(str(path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "encoder.layer.0.output" not in k}, str(path / "model.safetensors"))
    for kwargs in ({}, {"new_head": True}):
        with pytest.raises(MissingWeightsError, match="^cut: model.safetensors \\(BertForSequenceClassification\\) lacks 4 weight\\(s\\) kind "
                           "'sequence-classification' needs \\(bert.encoder.layer.0.output.LayerNorm.bias, .*; expected a checkpoint holding them$"):
            hf.load_hf_directory(path, **kwargs)
    # a sentence-transformers encoder saved without its pooler, asked for the pooled output
    path, _ = _directory(tmp_path / "nopool", sentence_transformers=("mean", False))
    weights = load_file(str(path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("pooler.")}, str(path / "model.safetensors"))
    with pytest.raises(MissingWeightsError, match="lacks 2 weight\\(s\\) kind 'encoder' needs \\(pooler.dense.bias, pooler.dense.weight\\); "
                       "expected a checkpoint holding them; for a sentence-transformers encoder use kind='sentence-embedding'"):
        hf.load_hf_directory(path, "encoder")
    assert hf.load_hf_directory(path)[0].pooling == "mean"  # its own kind needs no pooler
    # a tokenizer with more tokens than the model's embedding has rows
    path, _ = _directory(tmp_path / "vocab", vocab=VOCAB + [f"extra{i}" for i in range(8)])
    with pytest.raises(wb.infra.TaskError, match="^vocab: the tokenizer has 25 tokens but the model's embedding has 17 rows; expected a tokenizer of "
                       "at most 17 tokens \\(the one saved with this model\\)$"):
        hf.load_hf_directory(path)
    # no default kind, an unknown kind, pooling the workbench does not compute
    path, _ = _directory(tmp_path / "mlm", "BertForMaskedLM")
    with pytest.raises(wb.infra.TaskError, match="^mlm: config.json names BertForMaskedLM; no default kind for it; expected kind= one of "
                       "sequence-classification, encoder, sentence-embedding$"):
        hf.load_hf_directory(path)
    assert hf.load_hf_directory(path, "sentence-embedding")[0].pooling == "mean"  # its encoder, asked for by kind
    with pytest.raises(wb.infra.TaskError, match="^kind 'regression'; expected one of sequence-classification, encoder, sentence-embedding$"):
        hf.load_hf_directory(path, "regression")
    path, _ = _directory(tmp_path / "maxpool", sentence_transformers=("max", False))
    with pytest.raises(wb.infra.TaskError, match="^1_Pooling/config.json asks for pooling max_tokens; expected exactly one of pooling_mode_mean_tokens"):
        hf.load_hf_directory(path)
    modules = json.loads((path / "modules.json").read_text()) + [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(wb.infra.TaskError, match="^maxpool/modules.json has module\\(s\\) Dense the workbench does not compute; expected Transformer, "
                       "Pooling and optionally Normalize$"):
        hf.load_hf_directory(path)


def test_long_lines_are_truncated_and_said(tmp_path):
    path, _ = _directory(tmp_path / "short", max_positions=16)
    model, tokenizer = hf.load_hf_directory(path)
    lines = ["the cat sat", "the dog ran on the mat " * 4, "a red cat " * 6]
    with pytest.warns(hf.TruncationWarning, match="^max_length 64 is over the model's position limit of 16 tokens; using 16$"):
        with pytest.warns(hf.TruncationWarning, match="^2 of 3 lines are longer than 16 tokens \\(longest 26\\) and were truncated$"):
            x = hf.tokenize(tokenizer, lines, max_length=64)
    assert x.shape == (3, 2, 16) and model(x).shape == (3, 32)  # within the position limit: it runs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say when nothing is cut
        assert hf.tokenize(tokenizer, lines[:1], max_length=8).shape == (1, 2, 8)
    assert hf.tokenize(tokenizer, lines[:1], max_length=8, attention_mask=False).shape == (1, 8)
    blind = hf._transformers().BertTokenizerFast(vocab_file=str(path / "vocab.txt"))  # transformers 5 ignores vocab_file: every word unknown
    with pytest.warns(hf.TruncationWarning, match="the tokenizer maps 3 of 3 tokens to its unknown token"):
        hf.tokenize(blind, lines[:1], max_length=8)


def test_a_classification_config_without_its_head_weights(tmp_path):
    path, _ = _directory(tmp_path / "headless", "BertForSequenceClassification")
    weights = load_file(str(path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, str(path / "model.safetensors"))
    with pytest.raises(MissingWeightsError, match="^headless: model.safetensors \\(BertForSequenceClassification\\) has no sequence-classification "
                       "head \\(classifier.bias, classifier.weight\\); it would be random; expected a checkpoint holding the head, or new_head=True"):
        hf.load_hf_directory(path)
    assert hf.load_hf_directory(path, "encoder")[0].output_kind == "embedding"  # its encoder is all there
