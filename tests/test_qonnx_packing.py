"""Packed QONNX: integer weights reach the QONNX file at their bit width (2-4 bits two a byte,
5-8 in int8, 9-16 in int16) in front of the same Quant nodes; qonnx executes the file exactly as
the float-weight export, and qonnx's cleanup gives back the float-initialiser form FINN and hls4ml
read, with the same quantised weights. The per-layer packing report names layers by their
weights, not by ONNX node names (ConvInteger layers included)."""

import numpy as np
import onnx
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.general.quant import quant
from qonnx.util.cleanup import cleanup_model
from torch import nn

import workbench as wb
from workbench.export.packing import pack_qonnx_weights, resolve_pack
from workbench.export.verify import onnx_storage, qonnx_storage

# digits-cnn layers: features.0 (144 weights), features.3 (4,608), features.7 (9,216), classifier (320)
MIXED = {"weight_bits": 4, "act_bits": 8, "layers": {"features.3": {"weight_bits": 3}, "features.7": {"weight_bits": 8},
                                                      "classifier": {"weight_bits": 16}}}


@pytest.fixture(scope="module")
def qonnx_files(digits, tmp_path_factory):
    task, model = digits
    out = tmp_path_factory.mktemp("qonnx")
    res = {}
    for name, spec in (("w8a8", wb.QuantSpec.uniform(8, 8)), ("w4a8", wb.QuantSpec.uniform(4, 8)), ("mixed", MIXED)):
        q = wb.quantize_task(task, model, spec, wb.PTQConfig(calib_samples=64))
        res[name] = (q, wb.export.export_qonnx(q, task.example_input(), out / f"{name}.qonnx.onnx"),
                     wb.export.export_qonnx(q, task.example_input(), out / f"{name}_float.qonnx.onnx", pack=False))
    return res


def _execute(path, x):
    model = ModelWrapper(str(path))
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    return np.concatenate([execute_onnx(model, {iname: x[i : i + 1]})[oname] for i in range(len(x))])


def _weight_quant_outputs(model: ModelWrapper) -> dict[str, np.ndarray]:
    """``{layer node: quantised weights}``: what each weight Quant node gives, computed as qonnx does."""
    consumer = {i: n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") for i in n.input[1:2]}
    out = {}
    for n in model.graph.node:
        w = model.get_initializer(n.input[0])
        if n.op_type != "Quant" or w is None or w.ndim < 2:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        out[consumer[n.output[0]]] = quant(w, *(model.get_initializer(i) for i in n.input[1:4]), attrs["signed"], attrs["narrow"],
                                           attrs["rounding_mode"].decode())
    return out


def test_integer_weights_at_their_bit_width_and_bit_identical_in_qonnx(digits, qonnx_files):
    task, _ = digits
    x = task.data.eval.x[:16].numpy()
    q, packed, plain = qonnx_files["mixed"]
    types = {i.name: i.data_type for i in onnx.load(str(packed)).graph.initializer}
    assert onnx.TensorProto.INT16 in types.values() and onnx.TensorProto.INT8 in types.values() and onnx.TensorProto.UINT8 in types.values()
    np.testing.assert_array_equal(_execute(packed, x), _execute(plain, x))
    res = wb.export.verify_qonnx(packed, q, task, n=16)
    assert res["qonnx_agreement"] == 1.0 and res["qonnx_max_abs_diff"] == 0.0
    # the report: each layer under its storage; bytes by what they hold
    assert res["qonnx_packing"] == {"int4": ["features.0", "features.3"], "int8": ["features.7"], "int16": ["classifier"]}
    assert res["qonnx_weight_bytes_packed"] == (144 + 1) // 2 + 4608 // 2 and res["qonnx_int8_bytes"] == 9216 and res["qonnx_int16_bytes"] == 2 * 320
    assert sum(res[k] for k in ("qonnx_weight_bytes_packed", "qonnx_int8_bytes", "qonnx_int16_bytes", "qonnx_float_bytes",
                                "qonnx_graph_bytes")) == res["qonnx_file_bytes"] == packed.stat().st_size
    assert qonnx_storage(plain, q)["qonnx_packing"] == {"float": list(q.workbench_plan.layers)}
    onnx.checker.check_model(onnx.load(str(packed)))


def test_cleanup_restores_the_float_initialiser_form_with_the_same_quantised_weights(qonnx_files):
    for name, (_, packed, plain) in qonnx_files.items():
        a, b = cleanup_model(ModelWrapper(str(plain))), cleanup_model(ModelWrapper(str(packed)))
        assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node], name
        assert not any(i.data_type != onnx.TensorProto.FLOAT for i in b.graph.initializer)  # every weight folded back to float
        wa, wb_ = _weight_quant_outputs(a), _weight_quant_outputs(b)
        assert sorted(wa) == sorted(wb_) == ["Conv_0", "Conv_1", "Conv_2", "Gemm_0"]
        for layer in wa:
            np.testing.assert_array_equal(wa[layer], wb_[layer])


def test_file_bytes_follow_the_bits(digits, qonnx_files):
    """digits-cnn (14,288 weights): the float-weight export is larger than the float ONNX; packed,
    W8A8 holds its weights in 14,288 bytes, W4A8 in 7,144."""
    sizes = {name: (packed.stat().st_size, plain.stat().st_size) for name, (_, packed, plain) in qonnx_files.items()}
    assert sizes["w8a8"][0] < 0.4 * sizes["w8a8"][1]
    assert sizes["w4a8"][0] < 0.75 * sizes["w8a8"][0]
    s4 = qonnx_storage(qonnx_files["w4a8"][1], qonnx_files["w4a8"][0])
    s8 = qonnx_storage(qonnx_files["w8a8"][1], qonnx_files["w8a8"][0])
    assert (s4["qonnx_weight_bytes_packed"], s4["qonnx_int8_bytes"]) == (7144, 0) and (s8["qonnx_weight_bytes_packed"], s8["qonnx_int8_bytes"]) == (0, 14288)


def test_ic_resnet8_w4a8_qonnx_is_at_most_0_65_of_w8a8(tmp_path):
    """On ic-resnet8 (77,360 weights) W4A8 is 0.64x W8A8 (62.1 kB vs 97.3 kB; 315 kB as float ONNX):
    about 20 kB of each file is graph, shapes, annotations, scales and biases, which do not shrink
    with the bits, so 0.6 is out of reach here."""
    task = wb.create_task("ic-resnet8").small(256, 64, 128)
    model = wb.load_or_train_baseline(task, progress=False)
    files = {}
    for name, bits in (("w8a8", 8), ("w4a8", 4)):
        q = wb.quantize_task(task, model, wb.QuantSpec.uniform(bits, 8), wb.PTQConfig(calib_samples=32))
        files[name] = (q, wb.export.export_qonnx(q, task.example_input(), tmp_path / f"{name}.qonnx.onnx"))
    ratio = files["w4a8"][1].stat().st_size / files["w8a8"][1].stat().st_size
    assert ratio <= 0.65, ratio
    q, path = files["w4a8"]
    res = wb.export.verify_qonnx(path, q, task, n=4)
    assert res["qonnx_agreement"] == 1.0 and res["qonnx_packing"] == {"int4": list(q.workbench_plan.layers)}


def test_pack_none_writes_the_float_weight_export_and_bad_values_are_one_line(digits, qonnx_files, tmp_path):
    task, _ = digits
    q, _, plain = qonnx_files["w4a8"]
    assert wb.export.export_qonnx(q, task.example_input(), tmp_path / "none.qonnx.onnx", pack="none").read_bytes() == plain.read_bytes()
    model = onnx.load(str(plain))
    assert pack_qonnx_weights(model, False) == {"int4": 0, "int8": 0, "int16": 0}
    assert resolve_pack(True) == resolve_pack("int4") == "int4" and resolve_pack(False) == "none"
    for bad in ("int2", 4, None):
        with pytest.raises(wb.infra.ExportError, match=r"^pack .*expected one of True, False, 'int4', 'none'$") as err:
            wb.export.export_qonnx(q, task.example_input(), tmp_path / "bad.qonnx.onnx", pack=bad)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "bad.qonnx.onnx").exists()


class _Residual(nn.Module):
    """A convolution whose output a residual Add reads in float: exported as ConvInteger."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential()
        self.body.add_module("conv", nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.body.conv(x) + x)
        return self.head(x.mean((2, 3)))


def test_packing_report_names_convinteger_layers_by_their_weights(tmp_path):
    """Brevitas names the ONNX nodes ``/conv/...`` (the last part of ``body.conv``) and the export
    writes ConvInteger nodes of its own: the report still says how each layer's weights are stored."""
    from workbench.core.ptq import calibrate

    torch.manual_seed(0)
    model, x = _Residual().eval(), torch.randn(16, 3, 8, 8)
    q = wb.quantize_model(model, wb.QuantSpec.uniform(4, 8), force_layerwise=True, example_input=x[:2])
    calibrate(q, x)
    path = wb.export_qcdq(q, x, tmp_path / "res.onnx")
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    stored = {}  # weight shape -> how the file stores it, read off the ConvInteger nodes
    for n in graph.node:
        if n.op_type == "ConvInteger":
            w = n.input[1]
            while w not in inits:
                w = producer[w].input[0]
            stored[tuple(inits[w].dims)] = "int4" if inits[w].data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) else "int8"
    assert set(stored) == {(8, 3, 3, 3), (8, 8, 3, 3)}  # both convolutions run as ConvInteger
    packing = onnx_storage(path, q)["packing"]
    expected = {}
    for layer, kind in (("stem", stored[(8, 3, 3, 3)]), ("body.conv", stored[(8, 8, 3, 3)]), ("head", "int4")):
        expected.setdefault(kind, []).append(layer)
    assert {k: sorted(v) for k, v in packing.items()} == {k: sorted(v) for k, v in expected.items()}


# ------------------------------------------------------------------ the pack option: API, CLI, recipes


def test_run_job_pack_reaches_both_exporters_and_the_summary(digits, tmp_path):
    task, model = digits
    sizes = {}
    for pack in ("int4", "none"):
        s = wb.run_job(task, {"w4a8": wb.QuantSpec.uniform(4, 8)}, tmp_path / pack, float_model=model, progress=False, latency_runs=5,
                       weight_encoding="u8", pack=pack, ptq=wb.PTQConfig(calib_samples=64))
        layers = ["features.0", "features.3", "features.7", "classifier"]
        assert s["pack"] == pack and s["variants"]["w4a8"]["pack"] == pack
        assert s["packing"] == {"int4" if pack == "int4" else "int8": layers}
        assert s["qonnx_packing"] == {"int4" if pack == "int4" else "float": layers}
        assert s["qonnx_file_bytes"] == (tmp_path / pack / "model.qonnx.onnx").stat().st_size and s["variants"]["w4a8"]["qonnx_agreement"] == 1.0
        sizes[pack] = (s["onnx_file_bytes"], s["qonnx_file_bytes"])
    assert sizes["int4"][0] < 0.75 * sizes["none"][0] and sizes["int4"][1] < 0.35 * sizes["none"][1]
    with pytest.raises(wb.infra.ExportError, match=r"^pack 'int2'"):
        wb.run_job(task, {"w4a8": wb.QuantSpec.uniform(4, 8)}, tmp_path / "bad", float_model=model, progress=False, pack="int2")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("command", ["quantize", "demo"])
def test_the_cli_rejects_a_bad_pack_in_one_line_before_any_folder(tmp_path, command):
    from typer.testing import CliRunner

    from workbench.cli import app

    args = [command, *(["digits-cnn"] if command == "quantize" else []), "--pack", "int2", "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["error: pack 'int2': weights of at most 4 bits are stored two a byte or not at all; "
                                               "expected one of True, False, 'int4', 'none'"]
    assert not (tmp_path / "out").exists()


def test_recipe_pack_round_trips_and_old_recipes_are_unchanged():
    import yaml

    from workbench.runs.recipe import RecipeError, parse_recipe

    old = parse_recipe({"task": {"name": "digits-cnn"}, "export": {"formats": ["qcdq"], "weight_encoding": "u8"}})
    assert old.export.pack is None and "pack" not in old.to_yaml()
    assert parse_recipe(yaml.safe_load(old.to_yaml())).to_yaml() == old.to_yaml()
    for value in ("none", "int4", False):
        r = parse_recipe({"task": {"name": "digits-cnn"}, "export": {"pack": value}})
        assert f"pack: {str(value).lower()}\n" in r.to_yaml() and parse_recipe(yaml.safe_load(r.to_yaml())) == r
    with pytest.raises(RecipeError, match=r"^export\.pack: expected int4 \(weights of at most 4 bits two a byte\), none, true or false; got 'int2'$"):
        parse_recipe({"task": {"name": "digits-cnn"}, "export": {"pack": "int2"}})


def test_promote_copies_the_target_encoding_and_apply_uses_it(digits, tmp_path):
    """A point explored for a target whose profile says ``weight_encoding: s8`` is rebuilt by
    ``apply`` with s8 weights (and the recipe's ``pack``), not the recipe default u8."""
    import json

    from workbench.runs.recipe import promote

    task, _ = digits
    target = tmp_path / "vnni-box.yaml"
    target.write_text("name: vnni-box\nweight_bits: [4, 8]\nact_bits: [8]\nweight_encoding: s8\n")
    row = {"bits": json.dumps({"features.0": 8, "features.3": 4, "features.7": 4, "classifier": 8}), "measured_metric": 0.9}
    assert promote(task, row).export.weight_encoding == "u8"  # no target: the recipe default
    from workbench.export.qcdq import resolve_weight_encoding

    # that profile says auto: the recipe holds what auto is on this host (u8 or s8), never auto itself
    assert promote(task, row, target="cpu-int8-ort").export.weight_encoding == resolve_weight_encoding("auto") != "auto"
    assert promote(task, row, target=str(target), weight_encoding="u8").export.weight_encoding == "u8"  # asked for
    recipe = promote(task, row, target=str(target), name="vnni", formats=("qcdq", "qonnx"), pack="none", tolerance=1.0)
    assert recipe.export.weight_encoding == "s8" and recipe.export.pack == "none"
    path = tmp_path / "vnni.yaml"
    path.write_text(recipe.to_yaml())
    summary, failed = wb.apply_recipe(path, tmp_path / "out", progress=False, latency_runs=5, target_file=target)  # the profile's file, given
    assert summary["weight_encoding"] == "s8" and summary["pack"] == "none"
    types = {i.data_type for i in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.initializer}
    assert onnx.TensorProto.INT8 in types and onnx.TensorProto.UINT4 not in types and onnx.TensorProto.INT4 not in types  # s8, unpacked
    assert summary["qonnx_packing"] == {"float": ["features.0", "features.3", "features.7", "classifier"]}
