"""The hls4ml deployment target: Brevitas -> QONNX -> hls4ml project, its C++ emulation compiled with
g++ and run on the eval split, per-layer precisions from the explored bits, per-layer outputs, and
one-line refusals of what hls4ml cannot take."""

import json
import tarfile

import numpy as np

import pytest
import torch
from torch import nn

import workbench as wb
from workbench.targets.hls import load_emulation, precisions

pytest.importorskip("hls4ml")
pytest.importorskip("qonnx")

# 8-bit power-of-two scales everywhere (what ap_fixed carries exactly), one layer at 4-bit weights
# with a per-tensor scale, and one layer reading 4-bit activations.
SPEC = wb.QuantSpec.uniform(8, 8, scale_type="po2").with_layers({"features.3": {"weight_bits": 4, "weight_granularity": "per_tensor"},
                                                                  "features.7": {"act_bits": 4}})


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    """The digits CNN under SPEC, exported once (hls4ml conversion + one g++ build, about 40 s)."""
    task, model = digits
    task = task.small(n_eval=128)
    torch.manual_seed(0)
    q = wb.quantize_task(task, model, SPEC, wb.PTQConfig(calib_samples=64))
    out = tmp_path_factory.mktemp("hls") / "out"
    target = wb.export.get_exporter("hls4ml")
    path = target.export(q, task.example_input(1), out / f"model{target.suffix}")
    return task, q, target, path


def test_artifact_is_the_hls4ml_project_and_nothing_else(exported):
    task, q, target, path = exported
    assert path.name == "model.hls4ml.tar.gz" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary or project folder beside it
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert "myproject/firmware/myproject.cpp" in names and "myproject/build_lib.sh" in names
    assert "myproject/firmware/parameters.h" in names and "myproject/workbench_hls.json" in names
    assert not any(n.endswith(".so") for n in names)  # the library is built from the sources where it runs


def test_emulation_agrees_bit_for_bit_with_the_simulation(exported):
    task, q, target, path = exported
    rows = target.evaluate(path, q, task)
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == set(wb.export.exporters.DEPLOYMENT_COLUMNS)
    assert row["runtime"] == "hls4ml C++ emulation (g++)" and row["target"] == "hls4ml"
    assert row["samples"] == len(task.data.eval.x) == 128
    assert row["agreement"] >= 0.99
    assert row["max_lsb_diff"] == 0.0  # power-of-two scales: every output code identical
    assert row["file_bytes"] == path.stat().st_size
    assert row["latency_ms_p50"] is None  # hls4ml estimates latency from synthesis reports only

    # the emulation is what the artifact holds: rebuilt from the file by g++ in a fresh cache entry
    from workbench.targets import hls

    hls._EMULATIONS.clear()
    emu = load_emulation(path)
    assert emu.compile_seconds is not None and emu.compile_seconds > 0
    x = task.data.eval.x[:16]
    out = emu.predict(x.permute(0, 2, 3, 1).numpy())
    sim = wb.tasks.predict(q, x).numpy()
    assert np.array_equal(out, sim)


def test_precisions_follow_the_explored_bits(exported):
    task, q, target, path = exported
    table = precisions(path).set_index("layer")
    assert list(table.index) == ["features.0", "features.3", "features.7", "classifier"]
    assert table.loc["features.3", "weight_bits"] == 4
    assert table.loc["features.3", "weight_precision"].startswith("fixed<4,")  # per-tensor 4-bit: a 4-bit type
    assert table.loc["features.0", "weight_bits"] == 8
    assert all(table["weight_exact"]) and all(table["bias_exact"])
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("myproject/workbench_hls.json"))
        defines = tar.extractfile("myproject/firmware/defines.h").read().decode()
    types = manifest["layer_types"]
    conv1 = next(v for k, v in types.items() if k.endswith("Conv_1"))
    assert conv1["weight_t"].startswith("fixed<4,")
    # the 4-bit activations that features.7 reads: an unsigned 4-bit type, not a blanket default
    assert any(v.get("result_t", "").startswith("ufixed<4,") for v in types.values())
    assert "ap_fixed<4," in defines and "ap_ufixed<4," in defines  # what the C++ is compiled with


def test_layer_outputs_are_keyed_by_layer_names(exported):
    task, q, target, path = exported
    x = task.data.eval.x[:4]
    outs = target.layer_outputs(path, x)
    assert list(outs) == ["features.0", "features.3", "features.7", "classifier"]
    seen = {}
    hooks = [q.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (o.value if hasattr(o, "value") else o).detach()))
             for n in outs]
    try:
        sim_out = wb.tasks.predict(q, x)
    finally:
        for h in hooks:
            h.remove()
    for name, arr in outs.items():
        assert arr.shape == tuple(seen[name].shape), name  # NCHW, as the simulation
    for name in ("features.0", "features.3", "features.7"):  # convolution sums before activation: float32 rounding apart
        np.testing.assert_allclose(outs[name], seen[name].numpy(), atol=1e-4, err_msg=name)
    # hls4ml fuses the output quantiser into the last Dense: its result is the quantised output itself
    np.testing.assert_array_equal(outs["classifier"], sim_out.numpy())


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class WithGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.GELU()
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.conv(x)), 1))


def _quantised(model, shape):
    torch.manual_seed(0)
    x = torch.randn(32, *shape)
    q = wb.quantize_model(model.eval(), wb.QuantSpec.uniform(8, 8, scale_type="po2"), example_input=x[:2])
    return wb.core.calibrate(q, x), x


def test_grouped_convolution_is_refused_by_layer_before_any_file(tmp_path):
    q, x = _quantised(Grouped(), (4, 8, 8))
    target = wb.export.get_exporter("hls4ml")
    table = target.support(q).set_index("layer")
    assert not table.loc["conv", "supported"] and "grouped convolution (groups=2)" in table.loc["conv", "reason"]
    assert table.loc["fc", "supported"]
    with pytest.raises(wb.infra.ExportError) as err:
        target.export(q, x[:1], tmp_path / "m.hls4ml.tar.gz")
    msg = str(err.value)
    assert "\n" not in msg and "conv: grouped convolution" in msg
    assert list(tmp_path.iterdir()) == []


def test_an_op_without_an_hls4ml_handler_is_named_by_node(tmp_path):
    q, x = _quantised(WithGelu(), (1, 8, 8))
    target = wb.export.get_exporter("hls4ml")
    with pytest.raises(wb.infra.ExportError) as err:
        target.export(q, x[:1], tmp_path / "m.hls4ml.tar.gz")
    msg = str(err.value)
    assert "\n" not in msg and "has no hls4ml ONNX handler" in msg and "Gelu" in msg
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_artifact_is_one_line(tmp_path, exported):
    task, q, target, path = exported
    bad = tmp_path / "bad.hls4ml.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(wb.infra.ExportError, match="not a readable .tar.gz") as err:
        target.evaluate(bad, q, task, n=4)
    assert "\n" not in str(err.value)


def test_a_crash_inside_hls4ml_is_one_line_with_its_node(digits, tmp_path):
    """Float (non power-of-two) scales: hls4ml 1.3's ApplyAlpha rescaling fails inside hls4ml."""
    task, model = digits
    q = wb.quantize_task(task.small(), model, wb.QuantSpec.uniform(8, 8), wb.PTQConfig(calib_samples=64))
    target = wb.export.get_exporter("hls4ml")
    out = tmp_path / "out"
    out.mkdir()
    # the target refuses float scales before any work, naming the layer ...
    with pytest.raises(wb.infra.ExportError, match=r"target 'hls4ml' cannot take .*features\.0: float scales.*scale_type: po2"):
        target.export(q, task.example_input(1), out / "m.hls4ml.tar.gz")
    assert list(out.iterdir()) == []
    # ... because hls4ml itself fails on them: its crash is one line with the node
    from workbench.targets.hls import build_project

    (tmp_path / "work").mkdir()
    with pytest.raises(wb.infra.ToolchainError) as err:
        build_project(q, task.example_input(1), tmp_path / "work" / "project")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("hls4ml failed to convert the QONNX export: ")
    assert "(ApplyAlpha)" in msg and "scale_type 'po2'" in msg
