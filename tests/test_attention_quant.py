"""Attention matmuls quantised on request (``attention_bits``, issue 15 item 3): the inputs of
``Q · Kᵀ`` and ``probs · V`` get calibrated static per-tensor quantisers, the QCDQ export carries
them, onnxruntime runs both matmuls of every layer as integer kernels and agrees with the
simulation; the default (float matmuls) is exactly what it was."""


import numpy as np
import onnx
import pytest
import torch
import yaml
from torch import nn

import workbench as wb
from workbench.core.attention import (
    ATTRIBUTE,
    IMPLEMENTATION,
    AttentionQuant,
    attention_modules,
)
from workbench.analysis.divergence import quantiser_divergence
from workbench.tasks.evaluate import predict
from workbench.export.qcdq import export_qcdq
from workbench.core.quantize import validate_spec
from workbench.export.verify import (
    MAC_KERNEL_OPS,
    op_counts,
    optimized_graph,
    optimized_op_counts,
    quantised_layer_nodes,
    run_onnx,
    session,
    verify_qcdq,
)

LIMIT = 0.005  # onnxruntime vs simulation, relative error (as tests/test_encoder_agreement.py)


def _rel(out, ref) -> float:
    a, b = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _default_session_kernels(path) -> int:
    """Integer MAC kernels onnxruntime runs with default SessionOptions (what a user deploys)."""
    ops = op_counts(optimized_graph(path, level="default"))
    return sum(ops.get(k, 0) for k in MAC_KERNEL_OPS)


def _configs(model):
    return {id(m.config): m.config._attn_implementation for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")}


@pytest.fixture(scope="module", params=["hf-minilm-embed", "hf-bert"])
def encoder(request):
    task = wb.create_task(request.param, layers=2).small(16, 16, 32)
    return task, wb.load_or_train_baseline(task, progress=False)


@pytest.fixture(scope="module")
def minilm():
    task = wb.create_task("hf-minilm-embed", layers=2).small(16, 16, 32)
    return task, wb.load_or_train_baseline(task, progress=False)


def test_spec_field_validates_and_round_trips(minilm):
    for bad in (1, 9, 16, "8", True, 4.0, [8]):
        with pytest.raises(wb.infra.SpecError, match=r"^attention_bits: expected an integer in 2-8 .*; got") as err:
            wb.QuantSpec.parse({"attention_bits": bad})
        assert "\n" not in str(err.value)
    with pytest.raises(wb.infra.SpecError, match=r"^attention_bits: expected an integer in 2-8"):
        wb.QuantSpec(attention_bits=12)
    old = {"weight_bits": 8, "act_bits": 8, "weight_granularity": "per_channel", "scale_type": "float", "layers": {}}
    spec = wb.QuantSpec.parse(old)
    assert spec.attention_bits is None and spec.to_dict() == old and "attention" not in spec.to_yaml()
    assert wb.QuantSpec.parse({"attention_bits": "float"}) == wb.QuantSpec() == wb.QuantSpec.parse({"attention_bits": None})
    asked = wb.QuantSpec.parse({**old, "attention_bits": 6})
    assert asked.to_dict() == {**old, "attention_bits": 6} and wb.QuantSpec.from_yaml(asked.to_yaml()) == asked
    assert asked.with_layers({"type:Linear": {"weight_bits": 4}}).attention_bits == 6  # kept through overrides (sensitivity, search)
    # a model without transformers attention: one line, before anything is built
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    for call in (lambda: validate_spec({"attention_bits": 8}, plain), lambda: wb.quantize_model(plain, {"attention_bits": 8})):
        with pytest.raises(wb.infra.SpecError, match=r"^attention_bits: Sequential has no transformers attention module") as err:
            call()
        assert "\n" not in str(err.value)
    _, model = minilm
    assert len(attention_modules(model)) == 2 and validate_spec({"attention_bits": 4}, model)


def test_default_adds_nothing_and_exports_as_before(minilm, tmp_path):
    """No quantiser, no switched implementation, and the same file whether attention_bits is left
    out or named float; the attention matmuls stay float MatMul in onnxruntime."""
    task, model = minilm
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    assert q.workbench_plan.attention == ()
    assert not any(isinstance(m, AttentionQuant) for m in q.modules()) and not any(ATTRIBUTE in k for k in q.state_dict())
    assert set(_configs(q).values()) == {"eager"}
    a = export_qcdq(q, task.example_input(), tmp_path / "default.onnx")
    q2 = wb.quantize_task(task, model, {"weight_bits": 8, "act_bits": 8, "attention_bits": "float"})
    b = export_qcdq(q2, task.example_input(), tmp_path / "named_float.onnx")
    assert a.read_bytes() == b.read_bytes()
    n_linear = len(q.workbench_plan.layers)
    assert len(quantised_layer_nodes(onnx.load(str(a)))) == n_linear
    ops = optimized_op_counts(a)
    assert sum(ops.get(k, 0) for k in MAC_KERNEL_OPS) == n_linear
    assert ops.get("MatMul", 0) + ops.get("FusedMatMul", 0) == 2 * 2  # two float matmuls a layer (Q·Kᵀ fused with its scaling)
    assert set(_configs(model).values()) == {"eager"}  # the float model is never touched


@pytest.mark.parametrize("bits", [8, 4])
def test_attention_matmuls_run_as_integer_kernels_and_agree(encoder, bits, tmp_path):
    task, model = encoder
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, attention_bits=bits))
    plan = q.workbench_plan
    assert len(plan.attention) == 2 and all(n.endswith("attention.self") for n in plan.attention)
    assert set(_configs(q).values()) == {IMPLEMENTATION} and set(_configs(model).values()) == {"eager"}
    # four calibrated quantisers a layer, in the model's state; probabilities unsigned
    aq = q.get_submodule(plan.attention[0])._modules[ATTRIBUTE]
    assert isinstance(aq, AttentionQuant)
    assert [bool(getattr(aq, n).act_quant.is_signed) for n in ("query", "key", "probs", "value")] == [True, True, False, True]
    assert all(int(getattr(aq, n).act_quant.bit_width()) == bits for n in ("query", "key", "probs", "value"))
    assert sum(f"{ATTRIBUTE}." in k for k in q.state_dict()) >= 8
    probs_scale = float(aq.probs.act_quant.scale().detach())
    assert 0 < probs_scale <= 1.0 / (2**bits - 1) + 1e-6  # calibrated on softmax outputs (at most 1)

    path = export_qcdq(q, task.example_input(), tmp_path / "att.onnx")
    expected = len(plan.layers) + 2 * len(plan.attention)
    assert len(quantised_layer_nodes(onnx.load(str(path)))) == expected
    res = verify_qcdq(path, q, task)
    assert res["int_kernel_exceptions"] == {}
    assert sum(res["int_kernels"].get(k, 0) for k in MAC_KERNEL_OPS) == expected, res["int_kernels"]
    assert res["ort_ops"].get("MatMul", 0) + res["ort_ops"].get("FusedMatMul", 0) == 0  # no float matmul left
    assert _default_session_kernels(path) == expected
    x = task.data.eval.x
    sim = predict(q, x)
    for level in ("disabled", "default"):
        assert _rel(run_onnx(session(path, level=level), x), sim) <= LIMIT, level
    fp = predict(model, x)
    metric = task.score(sim, task.data.eval)
    assert metric >= (0.99 if bits == 8 else 0.95), metric
    if bits == 8:  # 8-bit attention costs little beside W8A8 alone
        w8a8 = task.score(predict(wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8)), x), task.data.eval)
        assert metric >= w8a8 - 0.002, (metric, w8a8)
    assert not torch.equal(sim, fp)


def test_attention_quantisers_place_and_round_as_exported(minilm):
    """The attention quantisers' integer codes in onnxruntime are the simulation's: at the first
    layer (inputs through few float ops) the same, or a step apart in a few places in ten
    thousand; deeper, codes moved by the float-rounding cascade (see tests/test_encoder_agreement.py)
    stay rare (the softmax can turn a one-step move of Q or K into a few steps of a probability)."""
    task, model = minilm
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, attention_bits=8))
    rows = quantiser_divergence(q, task.data.eval.x[:16], "disabled")
    att = [r for r in rows if f".{ATTRIBUTE}." in r["quantiser"]]
    assert [r["quantiser"].split(".")[-2] for r in att] == ["query", "key", "probs", "value"] * len(q.workbench_plan.attention)
    first = [r for r in att if ".layer.0." in r["quantiser"]]
    assert len(first) == 4 and all(r["max_code_diff"] <= 1 and r["mismatch"] <= 1e-4 for r in first), first
    assert all(r["mismatch"] < 0.01 and r["max_code_diff"] <= 4 for r in att), att


def test_qonnx_carries_the_attention_quantisers(tmp_path):
    from workbench.export.qonnx import export_qonnx
    from workbench.export.verify import verify_qonnx

    task = wb.create_task("hf-bert", layers=2).small(16, 16, 8)
    model = wb.load_or_train_baseline(task, progress=False)
    plain = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, attention_bits=8))
    res = verify_qonnx(export_qonnx(q, task.example_input(), tmp_path / "att.onnx"), q, task, n=4)
    base = verify_qonnx(export_qonnx(plain, task.example_input(), tmp_path / "plain.onnx"), plain, task, n=4)
    assert res["qonnx_quant_nodes"] == base["qonnx_quant_nodes"] + 4 * 2
    assert res["qonnx_agreement"] == 1.0 and res["qonnx_max_abs_diff"] < 1e-5


def test_describe_and_leave_one_float_sensitivity_run_with_attention(minilm):
    task, model = minilm
    spec = wb.QuantSpec.uniform(8, 8, attention_bits=8)
    q = wb.quantize_task(task, model, spec)
    table = wb.describe(q)
    assert int(table["weight_bits"].notna().sum()) == len(q.workbench_plan.layers)
    layer = "model.encoder.layer.1.output.dense"
    df = wb.sensitivity(task, model, wb.SensitivityConfig(mode="leave-one-float", base=spec, layers=[layer]), store=False, progress=False)
    assert list(df["layer"]) == [layer] and np.isfinite(df["metric"]).all()


def test_recipe_with_attention_bits_applies(tmp_path):
    """A recipe asking for attention_bits rebuilds, exports and verifies with the attention
    matmuls as integer kernels; the spec it records keeps the field."""
    recipe = {"recipe_version": 1, "name": "bert-att8", "task": {"name": "hf-bert", "subset": [16, 16, 32]},
              "quantization": {"weight_bits": 8, "act_bits": 8, "attention_bits": 8}, "export": {"formats": ["qcdq"]},
              "expected": {"onnx_agreement": {"min": 0.9}}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    from workbench.runs.recipe import load_recipe, recipe_diff

    loaded, _ = load_recipe(path)
    assert loaded.quantization.attention_bits == 8
    plain = loaded.model_copy(update={"quantization": wb.QuantSpec.uniform(8, 8)})
    assert recipe_diff(plain, loaded) == ["quantization.attention_bits: None -> 8"]
    summary, failed = wb.apply_recipe(path, tmp_path / "out", progress=False, latency_runs=3)
    assert failed == []
    variant = summary["variants"]["bert-att8"]
    assert variant["spec"]["attention_bits"] == 8
    assert variant["int_kernel_exceptions"] == {}
    assert sum(variant["int_kernels"].get(k, 0) for k in MAC_KERNEL_OPS) == 38 + 2 * 6  # 6 layers: 38 Linear, 12 attention matmuls
