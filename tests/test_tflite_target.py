"""The ``tflite-int8`` deployment target: an integer TFLite file carrying the workbench's per-layer
choices, run in ai-edge-litert and TFLite Micro against the Brevitas simulation (digits-cnn,
small data)."""

import os

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.targets import tflite
from workbench.export.exporters import DEPLOYMENT_COLUMNS, EXPORTERS

for _module in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro"):
    pytest.importorskip(_module, reason="the tflite-int8 target needs the [targets] extra")

TARGET = EXPORTERS["tflite-int8"]


@pytest.fixture(scope="module")
def small_digits():
    torch.manual_seed(0)
    task = wb.create_task("digits-cnn").small(n_train=512, n_calib=64, n_eval=128)
    model = wb.load_or_train_baseline(task, seed=0, epochs=30, progress=False)
    return task, model


def build(task, model, tmp_path, layers=None, name="model"):
    qmodel = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8, layers=layers or {}))
    path = TARGET.export(qmodel, task.example_input(), tmp_path / f"{name}{TARGET.suffix}", float_model=model, task=task)
    return qmodel, path


def test_registered_as_a_target():
    assert isinstance(TARGET, tflite.TFLiteInt8Target) and TARGET.name == "tflite-int8" and TARGET.suffix == ".int8.tflite"
    assert set(TARGET.requires) == {"litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro"}
    TARGET.available()
    assert "tflite-int8" in set(wb.export.list_exporters()["name"])


def test_w8a8_runs_in_litert_and_micro_and_agrees_with_the_simulation(small_digits, tmp_path):
    task, model = small_digits
    qmodel, path = build(task, model, tmp_path)
    assert path.is_file() and sorted(os.listdir(tmp_path)) == [path.name]  # the float intermediate lives elsewhere
    report = TARGET.last_report
    assert len(report["carried"]) >= 6 and not report["calibrated"], report  # the simulation's ranges, none re-calibrated
    assert report["float_ops"] == [] and list(report["layer_tensors"]) == list(tflite.quant_layers(qmodel))
    rows = TARGET.evaluate(path, qmodel, task, latency_runs=5, float_model=model)
    assert [r["runtime"] for r in rows] == ["ai-edge-litert", "tflite-micro"]
    with torch.no_grad():
        sim_metric = task.score(qmodel(task.data.eval.x), task.data.eval)
    for row in rows:
        assert set(row) == set(DEPLOYMENT_COLUMNS) and row["target"] == "tflite-int8" and row["artifact"] == path.name
        assert row["samples"] == len(task.data.eval.x)
        assert row["agreement"] >= 0.99, row
        assert row["max_lsb_diff"] <= 2, row  # carried scales: the integer outputs match to a code or two
        assert abs(row["metric"] - sim_metric) <= 0.02
        assert row["file_bytes"] == path.stat().st_size > 0
        assert row["peak_act_estimate_bytes"] > 0
        if row["runtime"] == "tflite-micro":  # the MCU's RAM: TFLite Micro's arena
            assert row["ram_bytes"] > 0 and "arena" in row["ram_source"]
            assert row["ram_vs_estimate"] == pytest.approx(row["ram_bytes"] / row["peak_act_estimate_bytes"])
        else:
            assert row["ram_bytes"] is None and row["ram_vs_estimate"] is None
        assert row["latency_ms_p50"] > 0 and row["latency_source"].startswith("measured on this CPU")
    # the arena found is the smallest that runs: 64 bytes less fails
    x = task.data.eval.x[:1].numpy()
    tflite.MicroRunner(path, rows[1]["ram_bytes"])(x)
    with pytest.raises(Exception):
        with tflite._stderr_to_null():
            tflite.MicroRunner(path, rows[1]["ram_bytes"] - 64)(x)


def test_carried_scales_are_the_simulations(small_digits, tmp_path):
    """Every layer's output scale in the file is the scale of the Brevitas quantiser it was matched to."""
    task, model = small_digits
    qmodel, path = build(task, model, tmp_path)
    report = TARGET.last_report
    quantisers = tflite.sim_quantisers(qmodel, task.data.calib.x[:2])
    runner = tflite.LiteRTRunner(path)
    scales = {d["name"]: d["quantization"][0] for d in runner.it.get_tensor_details()}
    checked = 0
    for tname, qname in report["carried"].items():
        if tname in scales and quantisers[qname]["bits"] == 8:
            assert scales[tname] == pytest.approx(quantisers[qname]["scale"], rel=1e-5), (tname, qname)
            checked += 1
    assert checked >= 5


def test_per_layer_choices_float_a16_and_int4(small_digits, tmp_path):
    task, model = small_digits
    layers = {"classifier": {"weight_bits": "float", "act_bits": "float"}, "features.3": {"act_bits": 16}, "features.7": {"weight_bits": 4}}
    qmodel, path = build(task, model, tmp_path, layers)
    types = tflite.layer_types(path, list(tflite.quant_layers(qmodel)))
    assert types["classifier"] == {"op": "FULLY_CONNECTED", "input": "float32", "weight": "float32", "output": "float32"}
    assert types["features.3"]["input"] == "int16" and types["features.3"]["weight"] == "int8"
    assert types["features.7"] == {"op": "CONV_2D", "input": "int8", "weight": "int4", "output": "int8"}
    rows = TARGET.evaluate(path, qmodel, task, latency_runs=0, float_model=model)
    for row in rows:
        assert row["agreement"] >= 0.98, row


def test_three_bit_weights_go_in_an_int8_container_and_16_bit_weights_and_fp8_are_refused(small_digits, tmp_path):
    task, model = small_digits
    qmodel = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8, layers={"features.3": {"weight_bits": 3}}))
    table = TARGET.support(qmodel).set_index("layer")
    assert table["supported"].all() and "int8 container" in table.loc["features.3", "reason"]
    path = TARGET.export(qmodel, task.example_input(), tmp_path / "m3.int8.tflite", float_model=model, task=task)
    assert tflite.layer_types(path, ["features.3"])["features.3"]["weight"] == "int8"
    assert TARGET.last_report["int8_containers"] == {"features.3": 3}
    for row in TARGET.evaluate(path, qmodel, task, latency_runs=0, float_model=model):
        assert row["agreement"] >= 0.98, row  # the simulation's 3-bit codes, exactly
    qmodel = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8, layers={"features.3": {"weight_bits": 16}}))
    path = tmp_path / "m.int8.tflite"
    with pytest.raises(wb.infra.ExportError, match=r"^target 'tflite-int8' cannot take 1 layer\(s\): features\.3: 16-bit weights") as err:
        TARGET.export(qmodel, task.example_input(), path, float_model=model, task=task)
    assert "\n" not in str(err.value) and not path.exists()
    qmodel = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8, layers={"features.7": {"weight_format": "fp8_e4m3"}}))
    with pytest.raises(wb.infra.ExportError, match=r"features\.7: weight format fp8_e4m3"):
        TARGET.check(qmodel)
    qmodel = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8, layers={"classifier": {"act_mode": "dynamic"}}))
    with pytest.raises(wb.infra.ExportError, match=r"classifier: dynamic activation quantisation"):
        TARGET.check(qmodel)


def test_tensor_names_map_to_module_paths():
    name = ("workbench.tasks.models.M/torch.nn.modules.container.Sequential_features/torch.nn.modules.activation.ReLU_38;;"
            "workbench.tasks.models.M/torch.nn.modules.container.Sequential_features/torch.nn.modules.conv.Conv2d_36;1")
    assert tflite.tensor_module(name) == "features.38"
    assert tflite.tensor_module("m.M/transformers.x.MobileNetV2ConvLayer_conv_3x3/torch.nn.Conv2d_convolution;") == "conv_3x3.convolution"
    import re

    assert re.search(tflite._module_regex("features.36"), name) and not re.search(tflite._module_regex("features.3"), name)


def test_toolchain_failure_is_one_line_and_leaves_nothing(small_digits, tmp_path):
    task, model = small_digits
    qmodel = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8))
    path = tmp_path / "m.int8.tflite"
    with pytest.raises(wb.infra.ToolchainError, match=r"^litert_torch could not convert the model: ") as err:
        TARGET.export(qmodel, torch.zeros(1, 3, 5), path, float_model=model, task=task)  # an input the model cannot take
    assert "\n" not in str(err.value) and not path.exists() and not os.listdir(tmp_path)
    with pytest.raises(wb.infra.ExportError, match="float_model"):
        TARGET.export(qmodel, task.example_input(), path, task=task)


def test_layer_outputs_keyed_by_layer_names(small_digits, tmp_path):
    task, model = small_digits
    qmodel, path = build(task, model, tmp_path)
    x = task.data.eval.x[:3]
    outs = TARGET.layer_outputs(path, x, qmodel)
    assert list(outs) == list(tflite.quant_layers(qmodel)) == ["features.0", "features.3", "features.7", "classifier"]
    sim = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: sim.__setitem__(n, o.value if hasattr(o, "value") else o))
             for n, m in tflite.quant_layers(qmodel).items()]
    with torch.no_grad():
        qmodel(x)
    for h in hooks:
        h.remove()
    for name, v in outs.items():
        ref = sim[name].float().numpy()
        assert v.shape == ref.shape, name  # NCHW, as the simulation
        if name != "classifier":
            ref = np.maximum(ref, 0)  # the file fuses the following ReLU into the convolution
        assert np.corrcoef(v.ravel(), ref.ravel())[0, 1] > 0.99, name
