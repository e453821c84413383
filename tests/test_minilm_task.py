"""``hf-minilm-embed``: a MiniLM-size sentence encoder (6 layers, hidden 384, 12 heads, mean
pooling) on a text set and vocabulary that ship with the package (issue 15). Structure is checked
on a 2-layer variant; quantisation quality and integer kernels at full size."""

import hashlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.tasks import hf
from workbench.tasks import minilm
from workbench.export.qcdq import export_qcdq
from workbench.export.verify import verify_qcdq

ROOT = Path(__file__).resolve().parent.parent


def _sha(model) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _off_diagonal_cosines(emb: torch.Tensor) -> torch.Tensor:
    e = torch.nn.functional.normalize(emb.double(), dim=1)
    c = e @ e.T
    return c[~torch.eye(len(c), dtype=torch.bool)]


def test_registered_as_an_embedding_task_of_minilm_shape():
    assert "hf-minilm-embed" in wb.list_tasks()
    task = wb.create_task("hf-minilm-embed")
    assert task.kind == "embedding" and task.metric.name == "cosine" and task.pretrained and not task.synthetic
    assert task.input_shape == (2, 32) and task.input_dtype == torch.int64
    assert "vocabulary the shipped text's own" in task.description
    model = task.create_model()
    assert isinstance(model, hf.SentenceEmbedding) and model.pooling == "mean" and model.normalize
    cfg = model.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (6, 384, 12, 1536)
    assert model.model.pooler is None and cfg.vocab_size == len(minilm.build_vocab(minilm.sentences()))
    layers = wb.core.quantisable_layers(model)
    assert len(layers) == 36 and all(kind == "Linear" for kind, _ in layers.values())


def test_the_text_and_vocabulary_ship_and_tokenise_with_the_mask():
    lines = minilm.sentences()
    assert len(lines) >= 300 and len(set(lines)) == len(lines)
    calib, eval_ = minilm.split_sentences(lines)
    assert (calib, eval_) == minilm.split_sentences(minilm.sentences()) and not set(calib) & set(eval_)
    assert len(calib) + len(eval_) == len(lines) and abs(len(calib) - len(eval_)) <= 1
    # the shipped vocab.txt is what build_vocab makes of the shipped text, and the wheel carries both
    assert minilm.VOCAB.read_text(encoding="utf-8").splitlines() == minilm.build_vocab(lines)
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["workbench"]
    assert "tasks/texts/*.txt" in globs and minilm.TEXT.parent.name == "texts" and minilm.VOCAB.suffix == ".txt"
    tok = minilm.tokenizer()
    x = hf.tokenize(tok, eval_, max_length=32)
    assert x.shape == (len(eval_), 2, 32) and x.dtype == torch.int64
    ids, mask = x[:, 0], x[:, 1]
    assert (ids[:, 0] == tok.cls_token_id).all() and tok.unk_token_id not in ids
    lengths = mask.sum(1)
    assert (ids[torch.arange(len(ids)), lengths - 1] == tok.sep_token_id).all()  # the mask ends on [SEP]
    assert (ids[mask == 0] == tok.pad_token_id).all() and lengths.min() < lengths.max()
    # a word the text never uses still tokenises, by pieces, without [UNK]
    pieces = tok.tokenize("Zephyrs quizzed 2026 jugglers!")
    assert "[UNK]" not in pieces and "##y" in pieces and pieces[-1] == "!"


def test_weights_are_equal_across_builds_processes_and_thread_counts(tmp_path):
    minilm._built.cache_clear()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = minilm.minilm_encoder(layers=2)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    minilm._built.cache_clear()
    b = minilm.minilm_encoder(layers=2)
    assert _sha(a) == _sha(b) and _sha(minilm.minilm_encoder(layers=2, seed=1)) != _sha(a)
    child = ("import hashlib, torch; torch.set_num_threads(2); from workbench.tasks import minilm; m = minilm.minilm_encoder(layers=2); "
             "h = hashlib.sha256()\nfor k, v in m.state_dict().items(): h.update(k.encode()); "
             "h.update(v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())\nprint(h.hexdigest())")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "WORKBENCH_THREADS": "2", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == _sha(a)


def test_settled_encoder_gives_distinct_embeddings_and_working_layers():
    task = wb.create_task("hf-minilm-embed", layers=2)
    model = task.create_model()
    x = task.data.eval.x
    off = _off_diagonal_cosines(task.data.eval.y)
    assert off.mean() < 0.6 and off.std() > 0.05 and off.max() < 0.95  # transformers' own init: mean 0.94, std 0.01
    with torch.no_grad():
        out = model.model(input_ids=x[:, 0], attention_mask=x[:, 1], output_attentions=True, output_hidden_states=True)
    mask = x[:, 1].bool()
    n = mask.sum(1, keepdim=True).double()
    for att in out.attentions:  # attention neither uniform nor one-hot: entropy about half of uniform's
        p = att.double().clamp_min(1e-12)
        entropy = (-(p * p.log()).sum(-1).mean(1) / n.log())[mask]
        assert 0.3 < float(entropy.mean()) < 0.7
    for before, after in zip(out.hidden_states, out.hidden_states[1:]):  # each layer rewrites part of the stream
        change = ((after - before)[mask].norm(dim=-1) / before[mask].norm(dim=-1)).mean()
        assert 0.3 < float(change) < 0.8
    hidden = out.last_hidden_state[mask]
    assert 0.9 < float(hidden.std()) < 1.1 and float(hidden.abs().max()) < 10


def test_full_size_w8a8_keeps_cosine_and_every_linear_runs_as_an_integer_kernel(tmp_path):
    task = wb.create_task("hf-minilm-embed").small(32, 32, 64)
    model = wb.load_or_train_baseline(task, progress=False)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    assert wb.tasks.evaluate.evaluate(q, task) >= 0.99
    path = export_qcdq(q, task.example_input(), tmp_path / "minilm.onnx")
    res = verify_qcdq(path, q, task)
    assert res["qcdq_verified"] and res["onnx_metric"] >= 0.99 and res["onnx_agreement"] >= 0.99
    # why int8 runs faster than float here: all 36 Linear layers run as integer kernels; only the
    # 2 attention matmuls per layer (scores, weighted values: activations times activations) stay float
    assert res["int_kernels"] == {"MatMulIntegerToFloat": 36} and res["int_kernel_exceptions"] == {}
    assert res["ort_ops"].get("MatMul", 0) + res["ort_ops"].get("FusedMatMul", 0) == 2 * 6


def test_bad_sizes_are_one_line_task_errors():
    with pytest.warns(hf.TruncationWarning, match="max_length 600 is over the model's position limit of 512 tokens; using 512"):
        assert hf.tokenize(minilm.tokenizer(), ["a short line"], max_length=600).shape == (1, 2, 512)
    with pytest.raises(wb.infra.TaskError, match="^seq_len 2; expected an integer in 4-512"):
        wb.create_task("hf-minilm-embed", seq_len=2)
    with pytest.raises(wb.infra.TaskError, match="^hidden 384 with 5 heads; expected an even hidden size divisible by the number of heads$"):
        minilm.minilm_encoder(heads=5)
    with pytest.raises(wb.infra.TaskError, match="^layers 0; expected an integer >= 1$"):
        wb.create_task("hf-minilm-embed", layers=0)
