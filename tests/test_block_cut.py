"""The block-cut engine (quantise-one on untraceable models): rows equal to the swap engine's."""

import dataclasses
import warnings

import pytest
import torch
from torch import nn

import workbench as wb
from workbench.tasks.data import Split
from workbench.export.pipeline import PTQConfig
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity
from workbench.analysis.sensitivity_swap import repeated_blocks

METRICS = ["metric", "metric_delta", "sqnr_db", "output_mse", "kl"]


@pytest.fixture(scope="module")
def bert():
    task = wb.create_task("hf-bert")
    d = task.data  # eval on train + calib + eval (3 x 128 samples): two predict chunks, the second one shorter
    task = task.with_data(dataclasses.replace(d, eval=Split(torch.cat([d.train.x, d.calib.x, d.eval.x]), torch.cat([d.eval.y] * 3))))  # any targets: both engines score the same
    assert len(task.data.eval.x) == 384 and len(task.data.calib.x) == 128
    return task, task.create_model().eval()


def test_repeated_blocks_are_the_encoder_layers(bert):
    name, blocks = repeated_blocks(bert[1])
    assert name.endswith("bert.encoder.layer") and len(blocks) == 6
    assert repeated_blocks(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))) is None  # mixed classes: no blocks


def test_block_engine_rows_equal_swap_engine_rows(bert):
    task, model = bert
    layers = ["model.bert.encoder.layer.0.attention.self.query", "model.bert.encoder.layer.2.intermediate.dense",
              "model.bert.encoder.layer.5.output.dense", "model.classifier"]
    config = SensitivityConfig(weight_bits=(4, 8), act_bits=(None, 8), layers=layers, ptq=PTQConfig(batch_size=48))  # 3 calibration chunks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        swap = sensitivity(task, model, config, store=False, engine="swap", progress=False)
        block = sensitivity(task, model, config, store=False, progress=False)
    assert set(swap["engine"]) == {"swap"}
    assert set(block["engine"]) == {"block"}  # block 0's query replays the embeddings
    assert list(block["layer"]) == list(swap["layer"]) and len(block) == 16
    assert (block[METRICS] - swap[METRICS]).abs().max().max() <= 1e-6
    assert block["sqnr_db"].notna().all()
