"""Batched settings and bounded memory in the sensitivity engines: the same numbers as the full rebuild.

The cut engine (ResNet-8, traced) and the block engine (a 6-layer BERT fx cannot trace) are run
with settings stacked along the batch (eval data smaller than one pass) and under memory budgets
that force recomputation; every case's outputs must equal the naive loop's (build, calibrate and
run the whole quantised model) bit for bit.
"""

import warnings

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.infra.errors import SpecError
from workbench.export.pipeline import PTQConfig
from workbench.core.quantize import quantisable_layers
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity
from workbench.analysis.sensitivity_cases import naive_case
from workbench.analysis.sensitivity_cut import _Engine
from workbench.analysis.sensitivity_swap import _SwapEngine

METRICS = ["metric", "metric_delta", "sqnr_db", "output_mse", "kl"]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def resnet():
    task = wb.create_task("ic-resnet8").small(n_train=32, n_calib=48, n_eval=24)  # 24 eval images: under one pass
    return task, task.create_model().eval()


@pytest.fixture(scope="module")
def bert():
    task = wb.create_task("hf-bert").small(n_train=16, n_calib=64, n_eval=16)
    return task, task.create_model().eval()


def batch_sizes(module):
    seen = []
    module.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    return seen


def test_cut_engine_stacks_a_layers_settings_in_one_pass_exactly(resnet):
    task, model = resnet
    config = SensitivityConfig(weight_bits=(2, 4, 8), act_bits=(None, 6), ptq=PTQConfig(batch_size=16))
    cases = config.cases()
    eng = _Engine(task, model, config)
    assert eng.rows > len(task.data.eval.x)  # the eval data is smaller than one pass: settings are stacked
    layer = list(quantisable_layers(model))[4]
    last = [n for n in eng.runner.nodes if n.op == "call_module"][-1]
    seen = batch_sizes(eng.graph.get_submodule(last.target))
    eng.move_to(layer)
    outs = eng.run_layer(layer, cases)
    per_pass = eng.rows // 24
    assert per_pass >= 2 and max(seen) == min(per_pass, len(cases)) * 24  # settings stacked along the batch
    for (w, a), out in zip(cases, outs):
        assert torch.equal(out, naive_case(task, model, config, layer, w, a)), (w, a)


def test_cut_engine_beyond_its_memory_budget_recomputes_with_the_same_rows():
    task = wb.create_task("ic-resnet8").small(n_train=32, n_calib=96, n_eval=200)
    model = task.create_model().eval()
    config = SensitivityConfig(weight_bits=(2, 8), act_bits=(None, 8), ptq=PTQConfig(batch_size=32), max_cache_mb=None)
    eng = _Engine(task, model, config)
    layer = list(quantisable_layers(model))[2]
    everything, one_pass = eng.cache_bytes(layer)
    budget = 1.5 * one_pass / 2**20  # holds one pass and a half: the layer's data is taken a pass at a time
    assert one_pass < budget * 2**20 < everything
    bounded = config.model_copy(update={"max_cache_mb": budget})
    free = sensitivity(task, model, config, store=False, progress=False)
    small = sensitivity(task, model, bounded, store=False, progress=False)
    assert (small["engine"] == "cut").all()
    assert np.array_equal(small[METRICS].to_numpy(float), free[METRICS].to_numpy(float), equal_nan=True)
    eng = _Engine(task, model, bounded)
    assert not eng._fits(layer) and eng._per_group(layer) == 1
    with pytest.raises(SpecError, match=r"^max_cache_mb=0\.01 cannot hold one batch of cached activations \(one pass of \d+ samples at layer .*\); expected at least [\d.]+ MB$"):
        sensitivity(task, model, config.model_copy(update={"max_cache_mb": 0.01}), store=False, progress=False)


def test_block_engine_stacks_settings_and_equals_the_full_rebuild(bert):
    task, model = bert
    layers = ["model.bert.encoder.layer.1.attention.self.value", "model.bert.encoder.layer.3.output.dense", "model.classifier"]
    config = SensitivityConfig(weight_bits=(4, 8), act_bits=(None, 8), layers=layers, ptq=PTQConfig(batch_size=16))
    eng = quiet(_SwapEngine, task, model, config)
    assert eng.blocks and eng.stackable and eng.rows > len(task.data.eval.x)
    seen = batch_sizes(eng.model.get_submodule("model.classifier"))
    outs = eng.run_layer(layers[1], config.cases())
    assert len(task.data.eval.x) * 4 in seen  # the four settings stacked in one pass
    for (w, a), out in zip(config.cases(), outs):
        assert torch.equal(out, quiet(naive_case, task, model, config, layers[1], w, a)), (w, a)
    df = quiet(sensitivity, task, model, config, store=False, progress=False)
    naive = quiet(sensitivity, task, model, config, store=False, progress=False, engine="naive")
    assert set(df["engine"]) == {"block"}
    assert np.array_equal(df[METRICS].to_numpy(float), naive[METRICS].to_numpy(float), equal_nan=True)


def test_block_engine_memory_budget_keeps_fewer_blocks_falls_back_or_refuses(bert):
    task, model = bert
    layers = ["model.bert.encoder.layer.0.attention.self.query", "model.bert.encoder.layer.4.intermediate.dense", "model.classifier"]
    config = SensitivityConfig(weight_bits=(4,), act_bits=(None, 8), layers=layers, ptq=PTQConfig(batch_size=16), max_cache_mb=None)
    free = quiet(sensitivity, task, model, config, store=False, progress=False)
    eng = quiet(_SwapEngine, task, model, config.model_copy(update={"max_cache_mb": 2.5}))
    assert 0 < len(eng.blocks) < 6  # (16 eval + 64 calibration samples) x 16 KiB per block output: 1.25 MB a block
    two = quiet(sensitivity, task, model, config.model_copy(update={"max_cache_mb": 2.5}), store=False, progress=False)
    assert np.array_equal(two[METRICS].to_numpy(float), free[METRICS].to_numpy(float), equal_nan=True)
    with pytest.warns(UserWarning, match=r"swap engine: .*max_cache_mb=0\.5 holds no block's outputs \(1\.2 MB each\): every case runs the whole model"):
        none = sensitivity(task, model, config.model_copy(update={"max_cache_mb": 0.5}), store=False, progress=False)
    assert set(none["engine"]) == {"swap"}
    assert np.array_equal(none[METRICS].to_numpy(float), free[METRICS].to_numpy(float), equal_nan=True)
    with pytest.raises(SpecError, match=r"^max_cache_mb=0\.1 cannot hold one batch of cached activations .*expected at least 0\.2 MB$"):
        quiet(sensitivity, task, model, config.model_copy(update={"max_cache_mb": 0.1}), store=False, progress=False)
