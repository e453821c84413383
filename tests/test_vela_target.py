"""Arm Ethos-U targets compiled by Vela: one target per accelerator config, int8 TFLite files of
real workbench models compiled for ethos-u55-128 (every operator on the NPU), Vela's cycle, SRAM
and flash estimates, a real CPU fallback named with Vela's reason, recipe choices the NPU cannot
carry refused before any work, and a Vela failure as one line with nothing written."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("ethosu.vela")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

import workbench as wb  # noqa: E402
from workbench.targets import tflite as tflite_module  # noqa: E402
from workbench.export.exporters import DEPLOYMENT_COLUMNS  # noqa: E402
from workbench.core.spec import assignment_spec  # noqa: E402
from workbench.targets.vela import VelaResult, compile_vela, get_vela_target, vela_configs, vela_layers, vela_summary  # noqa: E402


def _int8_tflite(model: nn.Module, calib: torch.Tensor, folder) -> str:
    """The int8 TFLite file of a float model: litert_torch + ai_edge_quantizer's static W8A8 recipe."""
    import litert_torch
    from ai_edge_quantizer import quantizer, recipe

    float_path, int8_path = str(folder / "model.float.tflite"), str(folder / "model.int8.tflite")
    litert_torch.convert(model.eval(), (calib[:1],)).export(float_path)
    q = quantizer.Quantizer(float_path)
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    result = q.calibrate({"serving_default": [{"args_0": calib[i:i + 1].numpy()} for i in range(len(calib))]})
    q.quantize(result).export_model(int8_path, overwrite=True)
    return int8_path


@pytest.fixture(scope="module")
def kws(tmp_path_factory):
    task = wb.create_task("kws-dscnn").small()
    model = wb.load_or_train_baseline(task, seed=0, epochs=1, progress=False)
    qmodel = wb.quantize_model(model, {"weight_bits": 8, "act_bits": 8})
    wb.core.calibrate(qmodel, task.data.calib.x)
    return task, model, qmodel, _int8_tflite(model, task.data.calib.x[:32], tmp_path_factory.mktemp("kws-tflite"))


class Divide(nn.Module):
    """Two convolutions divided element-wise: TFLite DIV, which the Ethos-U55 does not have."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc((torch.relu(self.a(x)) / (torch.relu(self.b(x)) + 1.0)).flatten(1))


def test_one_target_per_vela_accelerator_config():
    from ethosu.vela.architecture_features import Accelerator

    assert vela_configs() == tuple(Accelerator.member_list())
    assert {"ethos-u55-128", "ethos-u55-32", "ethos-u65-512", "ethos-u85-2048"} <= set(vela_configs())
    table = wb.export.list_exporters().set_index("name")
    for config in vela_configs():
        target = wb.export.get_exporter(config)
        assert target is get_vela_target(config) and target.suffix == f".{config}.tflite" and target.runtime == f"vela ({config})"
        assert table.loc[config, "suffix"] == target.suffix


def test_unknown_config_is_one_line_listing_the_known_ones(tmp_path):
    known = ", ".join(vela_configs())
    with pytest.raises(wb.infra.ExportError, match=r"^unknown Ethos-U accelerator config 'ethos-u55-999' \(did you mean 'ethos-u55-\d+'\?\); "
                                           rf"known: {known}$") as exc:
        get_vela_target("ethos-u55-999")
    assert "\n" not in str(exc.value)
    with pytest.raises(wb.infra.ExportError, match=r"^unknown Ethos-U accelerator config 'ethos-u77'.*known: ethos-u55-32, "):
        compile_vela(tmp_path / "absent.tflite", "ethos-u77")
    with pytest.raises(wb.infra.ExportError, match=r"^unknown export format 'ethos-u55-999'.*ethos-u55-128"):
        wb.export.get_exporter("ethos-u55-999")
    with pytest.raises(wb.infra.ExportError, match=r"^unknown Vela system configuration 'Ethos_U55_High_End_Embeded' "
                                           r"\(did you mean 'Ethos_U55_High_End_Embedded'\?\); known: Ethos_U55_Deep_Embedded, "):
        compile_vela(tmp_path / "absent.tflite", system_config="Ethos_U55_High_End_Embeded")


def test_kws_dscnn_int8_runs_wholly_on_the_ethos_u55_128(kws, tmp_path):
    task, model, qmodel, tflite = kws
    target = get_vela_target("ethos-u55-128")
    out = tmp_path / "out"
    path = target.export(qmodel, task.example_input(), out / f"model{target.suffix}", tflite_path=tflite)
    assert os.listdir(out) == ["model.ethos-u55-128.tflite"]  # the compiled file and nothing else
    assert path.read_bytes()[4:8] == b"TFL3"

    [row] = target.evaluate(path, qmodel, task)
    assert set(DEPLOYMENT_COLUMNS) <= set(row) and row["target"] == "ethos-u55-128" and row["runtime"] == "vela (ethos-u55-128)"
    assert row["npu_ops"] > 0 and row["cpu_ops"] == 0 and row["unsupported"] == ""  # every operator on the NPU
    assert row["cycles"] > 0 and row["ram_bytes"] > 0 and row["flash_bytes"] > 0 and row["file_bytes"] == path.stat().st_size
    assert row["latency_ms_p50"] == row["latency_ms_p99"] == row["latency_ms_max"] and row["jitter"] == 1.0
    # the inference time is the cycle count at the system configuration's clock (500 MHz by Vela's default)
    assert row["latency_ms_p50"] == pytest.approx(row["cycles"] / 500e6 * 1e3, rel=1e-4)
    assert row["latency_source"] == "estimated by Vela at 500 MHz (Ethos_U55_High_End_Embedded)"
    assert row["ram_source"] == "Vela SRAM estimate (Shared_Sram)" and "Off-chip Flash" in row["flash_source"]
    assert row["metric"] is None and row["agreement"] is None  # nothing here runs the NPU
    assert row["peak_act_estimate_bytes"] > 0 and row["ram_vs_estimate"] == pytest.approx(row["ram_bytes"] / row["peak_act_estimate_bytes"])

    layers = vela_layers(path)
    assert len(layers) == row["npu_ops"] + row["cpu_ops"] and set(layers["placed"]) == {"npu"}
    assert layers["cycles"].sum() > 0 and layers["macs"].sum() > 0
    convs = layers[layers["original_op"].isin(["Conv2D", "DepthwiseConv2D"]) & (layers["macs"] > 0)]
    assert len(convs) == 9  # the stem and the four depthwise-separable blocks' eight convolutions
    summary = vela_summary(path)
    assert summary["npu_fraction"] == 1.0 and summary["cycles"] == row["cycles"] and summary["sram_bytes"] == row["ram_bytes"]
    assert summary["macs"] > 0 and summary["clock_mhz"] == 500 and "DEPTHWISE_CONV_2D" in summary["input_op_types"]

    # with the tflite-int8 rows, metric and agreement come from them, and the row says so
    tflite_rows = [{"target": "tflite-int8", "runtime": "ai_edge_litert", "metric": 0.5, "agreement": 0.98, "samples": 128}]
    [row2] = target.evaluate(path, qmodel, task, tflite_rows=tflite_rows)
    assert (row2["metric"], row2["agreement"], row2["samples"]) == (0.5, 0.98, 128)
    assert row2["notes"].startswith("metric and agreement of tflite-int8") and row2["runtime"] == "vela (ethos-u55-128)" and row2["cycles"] == row["cycles"]

    # a bigger NPU takes fewer cycles on the same file; verify() flattens the row under the target's name
    big = get_vela_target("ethos-u55-256")
    big_path = big.export(qmodel, task.example_input(), out / f"model{big.suffix}", tflite_path=tflite)
    assert big.evaluate(big_path, qmodel, task)[0]["cycles"] < row["cycles"]
    verified = target.verify(path, qmodel, task)
    assert verified["ethos-u55-128@vela (ethos-u55-128)"]["npu_ops"] == row["npu_ops"]
    assert verified["ethos-u55-128_verified"] is False and "runs only on an ethos-u55-128 NPU" in verified["ethos-u55-128_unverified_reason"]
    with pytest.raises(wb.infra.ExportError, match=r"was compiled for ethos-u55-256, not ethos-u55-128"):
        target.evaluate(big_path, qmodel, task)

    # another system configuration of Vela's .ini: a 200 MHz clock, so the same work takes longer
    deep = target.export(qmodel, task.example_input(), out / "deep.ethos-u55-128.tflite", tflite_path=tflite,
                         system_config="Ethos_U55_Deep_Embedded", memory_mode="Shared_Sram")
    [slow] = target.evaluate(deep, qmodel, task)
    assert slow["latency_source"] == "estimated by Vela at 200 MHz (Ethos_U55_Deep_Embedded)"
    assert slow["latency_ms_p50"] == pytest.approx(slow["cycles"] / 200e6 * 1e3, rel=1e-4) and slow["latency_ms_p50"] > row["latency_ms_p50"]
    with pytest.raises(wb.infra.ExportError, match=r"^target 'ethos-u55-128' compiles an int8 TFLite file: pass tflite_path="):
        target.export(qmodel, task.example_input(), out / "none.ethos-u55-128.tflite")
    assert sorted(os.listdir(out)) == ["deep.ethos-u55-128.tflite", "model.ethos-u55-128.tflite", "model.ethos-u55-256.tflite"]


def test_ic_resnet8_from_the_float_model_on_the_npu(tmp_path):
    """Without tflite_path the target builds the int8 TFLite file from the float model itself."""
    task = wb.create_task("ic-resnet8").small()
    model = wb.load_or_train_baseline(task, seed=0, epochs=1, progress=False)
    qmodel = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))  # calibrated: the tflite-int8 export carries its scales
    target = get_vela_target("ethos-u55-128")
    path = target.export(qmodel, task.example_input(), tmp_path / "resnet.ethos-u55-128.tflite", float_model=model, calib=task.data.calib.x[:32])
    assert os.listdir(tmp_path) == ["resnet.ethos-u55-128.tflite"]
    [row] = target.evaluate(path, qmodel, task)
    assert row["cpu_ops"] == 0 and row["npu_ops"] > 0 and row["cycles"] > 0 and row["ram_bytes"] > 0 and row["flash_bytes"] > 0
    assert "ADD" in vela_summary(path)["input_op_types"]  # the residual additions run on the NPU too


def test_a_cpu_fallback_is_named_with_vela_s_reason(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    tflite = _int8_tflite(Divide(), x, tmp_path)
    result = compile_vela(tflite, "ethos-u55-128")
    assert isinstance(result, VelaResult) and result.cpu_ops == 1 and result.npu_ops > 0
    assert [f["op"] for f in result.fallbacks] == ["DIV"] and result.fallbacks[0]["reason"] == "Unsupported opType"
    assert result.unsupported == "DIV 'Divide': Unsupported opType"  # the op, the layer's short name, Vela's reason
    cpu = vela_layers(result).query("placed == 'cpu'")
    assert list(cpu["original_op"]) == ["Div"] and list(cpu["reason"]) == ["Unsupported opType"]
    assert vela_summary(result)["npu_fraction"] == pytest.approx(result.npu_ops / (result.npu_ops + 1))
    # the Ethos-U85 has a DIV: the same file runs wholly on its NPU
    assert compile_vela(tflite, "ethos-u85-256").cpu_ops == 0
    assert os.listdir(tmp_path) == ["model.float.tflite", "model.int8.tflite"]  # compile_vela without out_path writes nothing


def test_recipes_vela_cannot_carry_are_refused_naming_the_layer(kws, tmp_path):
    task, model, _, tflite = kws
    target = get_vela_target("ethos-u55-128")
    w16 = wb.quantize_model(model, {"weight_bits": 8, "act_bits": 8, "layers": {"blocks.3": {"weight_bits": 16}}})
    with pytest.raises(wb.infra.ExportError, match=r"^target 'ethos-u55-128' cannot take 1 layer\(s\): blocks\.3: weight_bits 16: Vela needs int8 weight tensors") as exc:
        target.export(w16, task.example_input(), tmp_path / "w16.ethos-u55-128.tflite", tflite_path=tflite)
    assert "\n" not in str(exc.value)
    # 2..7-bit weights are taken: their codes go in int8 containers
    low = wb.quantize_model(model, {"weight_bits": 8, "act_bits": 8, "layers": {"blocks.3": {"weight_bits": 4}, "blocks.6": {"weight_bits": 2}}})
    table = target.support(low).set_index("layer")
    assert table["supported"].all() and table.loc["blocks.3", "reason"] == "4-bit weight codes in an int8 container"
    assert table.loc["blocks.6", "reason"] == "2-bit weight codes in an int8 container"
    target.check(low)
    a6 = wb.quantize_model(model, {"weight_bits": 4, "act_bits": 8, "layers": {"blocks.9": {"act_bits": 6}}})
    with pytest.raises(wb.infra.ExportError, match=r"^target 'ethos-u55-128' cannot take 1 layer\(s\): blocks\.9: act_bits 6: Ethos-U NPUs take int8 or int16"):
        target.check(a6)
    fp8 = wb.quantize_model(model, {"weight_bits": 8, "act_bits": 8, "layers": {"blocks.6": {"weight_format": "fp8_e4m3"}}})
    with pytest.raises(wb.infra.ExportError, match=r"^target 'ethos-u55-128' cannot take 1 layer\(s\): blocks\.6: weight_format 'fp8_e4m3': .*no FP8 type"):
        target.check(fp8)
    with pytest.raises(wb.infra.ExportError, match=r"^layer blocks\.6: weight format fp8_e4m3 cannot be stored in an int8 container"):
        tflite_module.container_layers(wb.core.calibrate(fp8, task.data.calib.x[:8]) or fp8)
    a4 = wb.quantize_model(model, {"weight_bits": 8, "act_bits": 8, "layers": {"classifier": {"act_bits": 4}}})
    table = target.support(a4).set_index("layer")
    assert not table.loc["classifier", "supported"] and table.loc["classifier", "reason"].startswith("act_bits 4: ")
    assert table.loc["classifier", "op"] == "QuantLinear" and table.drop("classifier")["supported"].all()
    a16 = wb.quantize_model(model, {"weight_bits": 8, "act_bits": 16})
    target.check(a16)  # int16 activations with int8 weights: the NPU's 16x8 mode
    assert os.listdir(tmp_path) == []


def test_int4_tflite_weights_are_refused_before_vela_which_dies_on_them(tmp_path):
    """Vela 5.2 is killed by a floating point exception on a TFLite file with INT4 weights: the
    file is refused before Vela runs, and the raw crash, had it run, reads as one line."""
    from ai_edge_quantizer import quantizer, recipe_manager
    from ai_edge_quantizer.qtyping import TFLOperationName
    from ai_edge_quantizer.recipe import AlgorithmName

    import litert_torch
    from workbench.targets.vela import _vela_failure

    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    float_path, int4_path = tmp_path / "m.float.tflite", tmp_path / "m.w4.tflite"
    litert_torch.convert(model.eval(), (x[:1],)).export(str(float_path))
    manager = recipe_manager.RecipeManager()
    manager.add_static_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=4,
                              algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT)
    q = quantizer.Quantizer(str(float_path))
    q.load_quantization_recipe(manager.get_quantization_recipe())
    q.quantize(q.calibrate({"serving_default": [{"args_0": x[i:i + 1].numpy()} for i in range(8)]})).export_model(str(int4_path))
    out = tmp_path / "out"
    with pytest.raises(wb.infra.ExportError, match=r"^'m\.w4\.tflite' holds INT4 tensors .*Vela needs int8 weight tensors.*weight_container='int8'"):
        compile_vela(int4_path, "ethos-u55-128", out / "m.ethos-u55-128.tflite")
    assert not out.exists()
    proc = subprocess.run([sys.executable, "-m", "ethosu.vela", str(int4_path), "--accelerator-config", "ethos-u55-128", "--output-dir",
                           str(tmp_path / "raw")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    message = str(_vela_failure(proc, int4_path, "ethos-u55-128"))
    assert message.startswith("Vela 5.2") and "m.w4.tflite" in message and "\n" not in message
    if proc.returncode < 0:
        assert "killed by SIG" in message


def test_a_vela_failure_is_one_line_with_its_message_and_nothing_written(kws, tmp_path):
    task, _, qmodel, tflite = kws
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(open(tflite, "rb").read()[:20000])  # a TFLite header, a cut-off body
    out = tmp_path / "out"
    target = get_vela_target("ethos-u55-128")
    # Vela's C++ core reads past the cut-off buffer: seen both as a RuntimeError and as a segfault
    with pytest.raises(wb.infra.ToolchainError, match=r"^Vela 5\.\S+ failed on 'broken\.tflite' for ethos-u55-128: (exited with status 1|killed by SIGSEGV): "
                                               r"Failed to load TfLite model\. Buffer contents inconsistent with generated schema\.") as exc:
        target.export(qmodel, task.example_input(), out / "model.ethos-u55-128.tflite", tflite_path=broken)
    assert "\n" not in str(exc.value)
    assert not out.exists() or os.listdir(out) == []
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(wb.infra.ToolchainError, match=r"is not a TFLite file \(no 'TFL3' identifier\)"):
        compile_vela(junk, "ethos-u55-128", out / "junk.ethos-u55-128.tflite")
    with pytest.raises(wb.infra.ExportError, match=r"^no Vela report for .*pass tflite_path="):
        target.evaluate(tmp_path / "never-compiled.ethos-u55-128.tflite", qmodel, task)


def _weights(path, layer_tensor: str):
    """``(int codes, scales, quantised dimension, bias values, bias scales)`` of the op writing ``layer_tensor``."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    model = fb.read_model(path)
    graph = model.subgraphs[0]
    op = next(o for o in graph.operators if fb.get_tensor_name(graph.tensors[o.outputs[0]]) == layer_tensor)
    w, b = graph.tensors[op.inputs[1]], graph.tensors[op.inputs[2]]
    return (fb.get_tensor_data(w, model.buffers), np.asarray(w.quantization.scale), w.quantization.quantizedDimension,
            fb.get_tensor_data(b, model.buffers), np.asarray(b.quantization.scale), graph.tensors[op.inputs[0]].quantization.scale[0])


def test_int8_containers_hold_the_simulation_s_low_bit_codes_and_agree_with_it(kws, tmp_path):
    """A mixed 8/4/3-bit kws-dscnn with int8 weight containers: every weight tensor int8, the 4- and
    3-bit layers' tensors exactly the simulation's codes and scales, the bias at input x weight
    scale, and ai-edge-litert's outputs those of the simulation."""
    from workbench.core.spec import assignment_spec

    task, model, _, _ = kws
    assignment = {"blocks.0": 4, "blocks.3": 3, "classifier": 4}  # depthwise, pointwise and fully connected
    path = wb.targets.tflite_for_assignment(task, model, assignment, tmp_path / "mixed.int8.tflite")
    assert path == tmp_path / "mixed.int8.tflite" and os.listdir(tmp_path) == ["mixed.int8.tflite"]
    qmodel = wb.quantize_task(task, model, assignment_spec(assignment, 8))  # what the helper quantised (deterministic)
    layers = list(tflite_module.quant_layers(qmodel))
    types = tflite_module.layer_types(path, layers)
    assert {t["weight"] for t in types.values()} == {"int8"} and types["blocks.0"]["op"] == "DEPTHWISE_CONV_2D"
    tensors = tflite_module.layer_tensor_map(path, layers)
    for layer, bits in assignment.items():
        codes, scales, axis, bias, bias_scales, in_scale = _weights(path, tensors[layer])
        with torch.no_grad():
            qw = qmodel.get_submodule(layer).quant_weight()
        sim_codes, sim_scales = qw.int().numpy(), qw.scale.flatten().numpy()
        top = 2 ** (bits - 1) - 1
        assert codes.dtype == np.int8 and codes.min() >= -top and codes.max() <= top and len(np.unique(codes)) <= 2 * top + 1
        np.testing.assert_array_equal(scales.astype(np.float32), sim_scales.astype(np.float32))
        layout = {"blocks.0": (1, 2, 3, 0), "blocks.3": (0, 2, 3, 1)}.get(layer)  # torch OIHW -> TFLite depthwise 1HWC / conv OHWI
        np.testing.assert_array_equal(codes, sim_codes.transpose(layout) if layout else sim_codes)
        assert axis == (3 if layer == "blocks.0" else 0)
        np.testing.assert_allclose(bias_scales, np.float32(in_scale) * scales.astype(np.float32), rtol=1e-6)
        sim_bias = qmodel.get_submodule(layer).bias.detach().numpy()
        assert np.abs(bias * bias_scales - sim_bias).max() <= bias_scales.max() / 2 + 1e-9
    x = task.data.eval.x[:64]
    runner = tflite_module.LiteRTRunner(path)
    outs = np.stack([runner(x[i:i + 1].numpy()).reshape(-1) for i in range(len(x))])
    with torch.no_grad():
        sim = qmodel(x).float().numpy()
    assert (outs.argmax(1) == sim.argmax(1)).mean() == 1.0
    assert np.abs(outs - sim).max() / runner.out["quantization"][0] <= 2  # a code or two at the output
    with pytest.raises(wb.infra.ExportError, match=r"^weight_container 'int4' is not known; expected one of 'native', 'int8'$"):
        wb.targets.tflite_for_assignment(task, model, assignment, tmp_path / "bad.tflite", weight_container="int4")
    assert os.listdir(tmp_path) == ["mixed.int8.tflite"]


def test_vela_compiles_4_bit_containers_into_less_flash_than_8_bit(kws, tmp_path):
    task, model, _, _ = kws
    target = get_vela_target("ethos-u55-128")
    layers = list(tflite_module.quant_layers(wb.quantize_model(model, {"weight_bits": 8, "act_bits": 8})))
    w8 = wb.targets.tflite_for_assignment(task, model, {n: 8 for n in layers}, tmp_path / "w8.int8.tflite")
    r8 = compile_vela(w8, "ethos-u55-128")
    q4 = wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 8))
    # the target builds the int8-container file itself (the tflite-int8 file would hold INT4 tensors)
    out = target.export(q4, task.example_input(), tmp_path / "out" / "w4.ethos-u55-128.tflite", float_model=model, task=task)
    assert os.listdir(tmp_path / "out") == ["w4.ethos-u55-128.tflite"]
    [row] = target.evaluate(out, q4, task)
    assert row["cpu_ops"] == 0 and row["unsupported"] == ""
    assert row["flash_bytes"] < 0.8 * r8.flash_bytes, (row["flash_bytes"], r8.flash_bytes)
    assert 0 < row["cycles"] <= r8.cycles * 1.05


def test_a_point_searched_on_vela_deploys_with_the_cycles_the_search_measured(kws, tmp_path):
    """What the search measured for a mixed 8/4/3-bit point (cost_tables.measure_point) is what
    the deployed Ethos-U artifact of the same quantised model reports: the same cycles and flash."""
    task, model, _, _ = kws
    layers = list(tflite_module.quant_layers(wb.quantize_model(model, {"weight_bits": 8, "act_bits": 8})))
    assignment = {n: (3 if i % 3 == 0 else 4 if i % 3 == 1 else 8) for i, n in enumerate(layers)}
    measured = wb.search.measure_point(task, model, assignment, "ethos-u55-128")
    q = wb.quantize_task(task, model, assignment_spec(assignment, 8))
    tflite_target = wb.export.get_exporter("tflite-int8")
    assert tflite_target.support(q)["supported"].all()  # 3-bit codes in int8 containers, 4-bit as INT4
    target = get_vela_target("ethos-u55-128")
    out = target.export(q, task.example_input(), tmp_path / "m.ethos-u55-128.tflite", float_model=model, task=task)
    [row] = target.evaluate(out, q, task)
    assert row["cpu_ops"] == 0 and row["cycles"] == measured["cycles"]
    assert row["flash_bytes"] / 1024 == pytest.approx(measured["flash_kib"])
