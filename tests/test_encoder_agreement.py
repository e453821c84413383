"""The Brevitas simulation and onnxruntime agree on transformer encoders (issue 15, item 3): relative
error ||ort - sim|| / ||sim|| <= 0.5% on a BERT classifier and a mean-pooled sentence encoder,
with onnxruntime's graph optimisations off and at its default level, while every Linear layer
still runs as an integer kernel (tests/test_int_kernels.py).

What the 2.7% was: we found no quantiser placed differently in export and simulation, no
rounding-mode or scale difference and no export rewrite that changes a value (the workbench's
file and Brevitas's raw QCDQ export give the same error). Compared quantiser by quantiser
(:func:`workbench.analysis.divergence.quantiser_divergence`), the integer codes onnxruntime computes equal
the simulation's at the first quantisers of the encoder (or for a few in a million), and elsewhere
differ by at most one step in a small fraction of places. The first codes to differ follow a LayerNorm or a GELU (the FFN
down-projection's input): torch and onnxruntime round the last bit of those float ops
differently, a value now and then lands on the other side of a rounding boundary, and each moved
code shifts the next layer's inputs by a whole step, so the fraction of moved codes grows with
depth (hf-bert, 6 layers, optimisations off: a few codes in a million at layer 0, 0.7% at layer 5).
The same cascade separates the float32 simulation from the same simulation run in float64 (0.8%
relative error on hf-bert, 6 layers; onnxruntime vs the float32 simulation: 0.35% with
optimisations off, 0.25% at the default level). It is part of the quantisation noise, so it
scales with it: the issue's trained encoder (W8A8 cosine 0.984 to float) has about 15x the
quantisation noise of these random-init ones, and its 2.7% is most likely this cascade. ``hf-minilm-embed`` at 6 layers,
whose settled weights give a larger quantisation noise (3.1% relative to float), shows it: onnxruntime
is 1.15% from the float32 simulation, while the same simulation in float64 is 2.0% from it; no
float32 runtime can beat that floor, so at full depth it is the bound tested there (not
reproducible here: no trained checkpoint offline). These tests therefore pin down what can be
pinned: the simulation's quantiser placement and rounding equal the export's (codes at most one
step apart at the first layer, and almost never apart there; two steps deeper), and the end-to-end figure; a file
whose layers read float where the simulation quantises (a placement bug) fails both.
"""

import numpy as np
import onnx
import pytest
import torch

import workbench as wb
from workbench.tasks import hf
from workbench.analysis.divergence import first_divergence, quantiser_divergence
from workbench.tasks.evaluate import predict
from workbench.export.qcdq import export_qcdq
from workbench.export.verify import run_onnx, session

LIMIT = 0.005


def _rel(out, ref) -> float:
    a, b = torch.as_tensor(np.asarray(out), dtype=torch.float64), torch.as_tensor(np.asarray(ref), dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def _mean_pooled_encoder():
    """A 2-layer MiniLM-width encoder (hidden 384, 12 heads) with mean pooling over the attention
    mask, on token ids with padding of varied length (the mask travels in the one input)."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=1000, hidden_size=384, num_hidden_layers=2, num_attention_heads=12, intermediate_size=1536,
                                  max_position_embeddings=64, attn_implementation="eager", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = hf.SentenceEmbedding(transformers.BertModel(cfg, add_pooling_layer=False), "mean").eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 1000, (48, 32), generator=gen)
    mask = torch.ones_like(ids)
    for i in range(len(ids)):
        mask[i, 6 + (i * 7) % 26:] = 0
    x = torch.stack([ids * mask, mask], 1)
    return hf.label_free_task(model, x[:16], x[16:], name="mean-pooled-encoder"), model


@pytest.fixture(scope="module", params=["hf-bert", "hf-minilm-embed", "mean-pooled"])
def encoder(request, tmp_path_factory):
    if request.param in ("hf-bert", "hf-minilm-embed"):
        task = wb.create_task(request.param, layers=2).small(16, 16, 32)
        model = wb.load_or_train_baseline(task, progress=False)
    else:
        task, model = _mean_pooled_encoder()
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    path = export_qcdq(q, task.example_input(), tmp_path_factory.mktemp("agree") / f"{request.param}.onnx")
    return request.param, task, q, path


@pytest.mark.parametrize("level", ["disabled", "default"])
def test_simulation_and_onnxruntime_agree_within_half_a_percent(encoder, level):
    name, task, q, path = encoder
    x = task.data.eval.x
    sim = predict(q, x)
    out = run_onnx(session(path, level=level), x)
    assert _rel(out, sim) <= LIMIT, f"{name} at {level}: {_rel(out, sim):.4f}"


def test_quantisers_place_and_round_as_exported(encoder):
    """Codes never more than one step apart, and almost never apart where the inputs have passed
    through few float ops (the first layer's Q, K and V read the embeddings' LayerNorm: a few codes
    in a million may differ there, by one step, where torch and onnxruntime round that LayerNorm's
    last bit differently)."""
    name, task, q, _ = encoder
    rows = quantiser_divergence(q, task.data.eval.x[:16], "disabled")
    assert len(rows) == len(q.workbench_plan.layers)  # every Linear's input quantiser is compared
    # one step at the first layer; deeper, a moved input code can move an output code by a second
    # step (hf-minilm-embed: 2 steps in 1.3% of layer 1's FFN down-projection inputs)
    steps = lambda r: 1 if ".layer.0." in r["quantiser"] else 2
    assert all(r["max_code_diff"] <= steps(r) for r in rows), [r for r in rows if r["max_code_diff"] > steps(r)]
    assert all(r["mismatch"] < 0.05 for r in rows), [r for r in rows if r["mismatch"] >= 0.05]
    layer0_qkv = [r for r in rows if ".layer.0.attention.self." in r["quantiser"]]
    assert len(layer0_qkv) == 3 and all(r["mismatch"] <= 1e-4 for r in layer0_qkv), layer0_qkv
    first = first_divergence(rows)
    assert first is None or first["max_code_diff"] == 1


@pytest.mark.parametrize("encoder", ["hf-bert"], indirect=True)
def test_a_file_without_the_simulations_activation_quantisers_is_caught(encoder, tmp_path):
    """A file whose layers read float where the simulation quantises (a placement difference)
    fails both checks on hf-bert: its end-to-end error is over twice the limit. (On the
    mean-pooled encoder all activation quantisation together moves the output by less than 0.5%,
    so there only the code comparison above can tell.)"""
    name, task, q, path = encoder
    model = onnx.load(str(path))
    graph = model.graph
    consts = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    bypassed = 0
    for node in graph.node:
        for j, i in enumerate(node.input):
            dq = producer.get(i)
            if node.op_type in ("MatMul", "Gemm") and j == 0 and dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] not in consts:
                t = dq.input[0]
                while t in producer and producer[t].op_type in ("Clip", "QuantizeLinear"):
                    t = producer[t].input[0]
                node.input[j] = t
                bypassed += 1
    assert bypassed >= 10
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    x = task.data.eval.x
    assert _rel(run_onnx(session(broken, level="disabled"), x), predict(q, x)) > 2 * LIMIT


def test_minilm_at_full_depth_is_within_the_float32_floor():
    """``hf-minilm-embed`` (6 layers, settled weights): onnxruntime is nearer the float32
    simulation than float64 arithmetic on the same quantised model is (the rounding floor; measured
    1.15% against 2.0%), and far below the quantisation noise itself."""
    import copy

    task = wb.create_task("hf-minilm-embed").small(16, 16, 16)
    model = wb.load_or_train_baseline(task, progress=False)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    x = task.data.eval.x
    sim = predict(q, x)
    with torch.no_grad():
        s64 = copy.deepcopy(q).double()(x)
    s64 = s64.value if hasattr(s64, "value") else s64
    import tempfile, pathlib

    with tempfile.TemporaryDirectory() as d:
        path = export_qcdq(q, task.example_input(), pathlib.Path(d) / "minilm.onnx")
        err = _rel(run_onnx(session(path, level="default"), x), sim)
    floor, noise = _rel(s64, sim), _rel(sim, predict(model, x))
    assert err <= floor, (err, floor)
    assert err <= noise / 2, (err, noise)
