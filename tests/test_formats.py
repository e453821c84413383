"""Number formats as a registry (issue 14, item 1): FP8 layers in a spec, describe(), the metric,
QCDQ export verified in onnxruntime, exporters refusing what they cannot carry, sensitivity
columns, the bit-width table's choices, and the ``float`` exporter entry."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import workbench as wb
from workbench.core.formats import FORMATS, NumberFormat, get_format, register_format
from workbench.analysis.sensitivity import SensitivityConfig, parse_bits, sensitivity
from workbench.core.spec import QuantSpec
from workbench.export.verify import verify_qcdq

FP8_LAYER = {"layers": {"features.3": {"weight_format": "fp8_e4m3", "act_format": "fp8_e4m3"}}}
PTQ = wb.PTQConfig(calib_samples=256)


@pytest.fixture(scope="module")
def fp8(digits):
    task, model = digits
    return task, model, wb.quantize_task(task, model, FP8_LAYER, PTQ)


def test_list_formats_is_a_dataframe_of_the_registry():
    df = wb.core.list_formats()
    assert list(df["name"])[:3] == ["int", "fp8_e4m3", "fp8_e5m2"]
    assert {"name", "kind", "bits", "exponent_bits", "mantissa_bits", "exporters", "description"} <= set(df.columns)
    row = df.set_index("name")
    assert row.loc["int", "bits"] == "2, 3, 4, 5, 6, 7, 8, 16" and row.loc["int", "exporters"] == "all"
    assert (row.loc["fp8_e4m3", "exponent_bits"], row.loc["fp8_e4m3", "mantissa_bits"], row.loc["fp8_e4m3", "bits"]) == (4, 3, "8")
    assert row.loc["fp8_e5m2", "exporters"] == "qcdq" and get_format("fp8_e5m2").fixed_bits == 8


def test_cli_lists_the_formats():
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "formats"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "kind", "bits"] and any(line.split()[:2] == ["fp8_e4m3", "minifloat"] for line in lines)


def test_unknown_or_conflicting_format_is_one_line():
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.features\.3\.weight_format: unknown number format 'fp8_e4m4' \(did you mean 'fp8_e4m3'\?\); "
                                           r"known: int, fp8_e4m3, fp8_e5m2") as exc:
        QuantSpec.parse({"layers": {"features.3": {"weight_format": "fp8_e4m4"}}})
    assert "\n" not in str(exc.value)
    with pytest.raises(wb.infra.SpecError, match=r"^unknown number format 'bf16'; known: int, fp8_e4m3, fp8_e5m2$"):
        get_format("bf16")
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.features\.3: got weight_bits 4 beside weight_format 'fp8_e4m3', which stores 8 bits"):
        QuantSpec.parse({"layers": {"features.3": {"weight_format": "fp8_e4m3", "weight_bits": 4}}})
    with pytest.raises(wb.infra.SpecError, match=r"^got act_bits 'float' beside act_format 'fp8_e5m2'"):
        QuantSpec(act_format="fp8_e5m2", act_bits="float")


def test_inherited_format_conflicts_and_po2_are_refused_before_building(digits):
    _, model = digits
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.features\.3\.weight_bits is 4 but its weight_format 'fp8_e4m3' \(from the spec's defaults\) stores 8 bits"):
        wb.quantize_model(model, {"weight_format": "fp8_e4m3", "layers": {"features.3": {"weight_bits": 4}}})
    with pytest.raises(wb.infra.SpecError, match=r"^layers\.features\.0: scale_type 'po2' does not apply to weight_format 'fp8_e4m3'; it takes scale_type float$"):
        wb.quantize_model(model, {"weight_format": "fp8_e4m3", "scale_type": "po2"})
    q = wb.quantize_model(model, {"weight_format": "fp8_e4m3", "layers": {"features.3": {"weight_bits": 4, "weight_format": "int"}}})
    assert (q.workbench_plan.layers["features.3"].weight_format, q.workbench_plan.layers["features.0"].weight_format) == ("int", "fp8_e4m3")


def test_spec_round_trip_and_int_specs_unchanged():
    spec = QuantSpec.parse({"act_format": "fp8_e5m2", **FP8_LAYER})
    assert spec.act_bits == 8  # a fixed-width format's storage bits
    assert QuantSpec.parse(spec.to_dict()) == spec and QuantSpec.from_yaml(spec.to_yaml()) == spec
    assert spec.to_dict()["layers"] == FP8_LAYER["layers"] and spec.to_dict()["act_format"] == "fp8_e5m2"
    plain = QuantSpec.uniform(4, 8)
    assert "weight_format" not in plain.to_dict() and "act_format" not in plain.to_dict()  # old specs and recipes read back byte for byte


def test_fp8_layer_shows_in_describe_and_changes_the_outputs(digits, fp8):
    task, model, q = fp8
    table = wb.describe(q).set_index("layer")
    assert tuple(table.loc["features.3", ["weight_format", "act_format", "weight_bits", "act_bits"]]) == ("fp8_e4m3", "fp8_e4m3", 8, 8)
    assert tuple(table.loc["features.0", ["weight_format", "act_format"]]) == ("int", "int")
    int8 = wb.quantize_task(task, model, QuantSpec.uniform(8, 8), PTQ)
    ev_fp8, ev_int8 = wb.export.evaluate_quantized(task, model, q), wb.export.evaluate_quantized(task, model, int8)
    assert ev_fp8["quant_sqnr_db"] != ev_int8["quant_sqnr_db"]
    assert not torch.equal(ev_fp8["sim_outputs"], ev_int8["sim_outputs"])
    assert ev_fp8["quant_metric"] > 0.9  # a working model, not a broken one
    assert ev_fp8["weight_bytes_quant"] == ev_int8["weight_bytes_quant"]  # 8 bits a weight either way


def test_fp8_qcdq_export_runs_in_onnxruntime_and_matches_the_simulation(fp8, tmp_path):
    task, model, q = fp8
    res = wb.export_and_verify(task, q, tmp_path, formats=("qcdq", "float"), float_model=model, latency_runs=10)
    assert res["qcdq_verified"] is True and res["onnx_optimization_level"] == "disabled"
    # FP8 quantisation is bit-exact; the float Conv sums in another order than torch, which can move
    # the next int8 activation by one step (measured: 0.067 at most on logits of about 8)
    assert res["onnx_agreement"] == 1.0 and res["rel_output_error"] < 1e-2 and res["max_abs_diff"] < 0.1
    assert res["int_kernel_nodes"] == 0 and res["latency_ms_p50_quant"] > 0
    m = onnx.load(str(tmp_path / res["onnx_path"]))
    onnx.checker.check_model(m)
    assert m.opset_import[0].version == 19
    types = {i.data_type for i in m.graph.initializer} | {a.t.data_type for n in m.graph.node if n.op_type == "Constant" for a in n.attribute}
    assert TensorProto.FLOAT8E4M3FN in types  # FP8 quantisation in the file
    assert TensorProto.UINT8 in types  # integer layers keep integer weights (folded, re-encoded u8)
    assert not {i.name for i in m.graph.input} & {i.name for i in m.graph.initializer}
    # the float exporter entry: the float model, verified against torch
    assert res["float_verified"] is True and res["float_max_abs_diff"] < 1e-4 and res["float_agreement"] == 1.0
    assert (tmp_path / res["float_path"]).is_file() and res["float_path"] == "model.float.onnx"


def test_an_exporter_that_cannot_carry_a_format_refuses_before_any_file(fp8, tmp_path):
    task, model, q = fp8
    with pytest.raises(wb.infra.ExportError, match=r"^layers\.features\.3\.weight_format is 'fp8_e4m3'; the qonnx export cannot carry it \(exporters that can: qcdq\)$"):
        wb.export_and_verify(task, q, tmp_path, formats=("qcdq", "qonnx"))
    with pytest.raises(wb.infra.ExportError, match=r"^export format 'float' exports the float model: pass float_model="):
        wb.export_and_verify(task, q, tmp_path, formats=("qcdq", "float"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(wb.infra.ExportError, match=r"^layers\.features\.3\.weight_format is 'fp8_e4m3'; the qonnx export cannot carry it"):
        wb.run_job(task, {"fp8": FP8_LAYER}, tmp_path / "run", formats=("qcdq", "qonnx"), progress=False, float_model=model)
    assert os.listdir(tmp_path) == []  # refused before the run folder, a baseline or a quantised model


def test_a_file_no_runtime_runs_is_reported_unverified_in_one_line(fp8, tmp_path):
    task, _, q = fp8
    node = helper.make_node("FloatQuant", ["input"], ["output"], domain="qonnx.custom_op.general")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1, 8, 8])])
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("qonnx.custom_op.general", 1)]), path)
    res = verify_qcdq(path, q, task)
    assert res["qcdq_verified"] is False and res["onnx_metric"] is None and res["onnx_file_bytes"] > 0
    assert res["qcdq_unverified_reason"].startswith("onnxruntime cannot run it: ") and "\n" not in res["qcdq_unverified_reason"]


def test_run_job_with_an_fp8_layer_reuses_the_float_file(digits, tmp_path):
    task, model = digits
    summary = wb.run_job(task, {"fp8": FP8_LAYER}, tmp_path / "run", ptq=PTQ, formats=("qcdq", "float"), latency_runs=10, progress=False,
                         float_model=model)
    v = summary["variants"]["fp8"]
    assert summary["onnx_agreement"] == 1.0 and summary["max_abs_diff"] < 0.1 and v["qcdq_verified"] and v["float_path"] == "model_fp32.onnx"
    files = sorted(os.listdir(tmp_path / "run"))
    assert "model.onnx" in files and "model_fp32.onnx" in files and not any(f.endswith(".float.onnx") for f in files)


def test_sensitivity_takes_formats_as_cases(digits):
    task, model = digits
    assert parse_bits("4,8,fp8_e4m3") == (4, 8, "fp8_e4m3")
    with pytest.raises(wb.infra.SpecError, match=r"^weight_bits\[1\]: expected an integer in 2-8 or 16, a number format \(fp8_e4m3, fp8_e5m2\) or 'float'; got 'fp9'$"):
        parse_bits("4,fp9", "weight_bits")
    with pytest.raises(wb.infra.SpecError, match=r"^weight_bits\[0\]: format 'fp8_e4m3' takes scale_type float; the base spec's is 'po2'$"):
        SensitivityConfig(weight_bits=("fp8_e4m3",), base=QuantSpec(scale_type="po2"))
    config = SensitivityConfig(weight_bits=(8, "fp8_e5m2"), act_bits=(None, "fp8_e4m3"), layers=("features.3", "classifier"), ptq=PTQ)
    cut = sensitivity(task, model, config, store=False, progress=False)
    naive = sensitivity(task, model, config, store=False, progress=False, engine="naive")
    assert len(cut) == 2 * 4 and {"weight_format", "act_format"} <= set(cut.columns)
    rows = cut.set_index(["layer", "weight_format", "act_format"], drop=False)
    assert rows.loc[("features.3", "fp8_e5m2", "fp8_e4m3"), "weight_bits"] == 8
    assert set(cut["weight_format"]) == {"int", "fp8_e5m2"} and set(cut["act_format"].dropna()) == {"fp8_e4m3"}
    int8, e5m2 = (cut[(cut.layer == "features.3") & (cut.weight_format == f) & cut.act_format.isna()].iloc[0] for f in ("int", "fp8_e5m2"))
    assert int8["output_mse"] != e5m2["output_mse"]
    metrics = ["metric", "sqnr_db", "output_mse"]
    np.testing.assert_allclose(cut[metrics].to_numpy(float), naive[metrics].to_numpy(float), rtol=0, atol=1e-6)
    # The heatmap keeps a format's column apart from the integer column of the same bits.
    from workbench.runs.report import heatmap_matrix

    layers, labels, z = heatmap_matrix(cut, "output_mse")
    assert labels == ["W8", "W8Afp8_e4m3", "Wfp8_e5m2", "Wfp8_e5m2Afp8_e4m3"]
    assert z[layers.index("features.3")][labels.index("W8")] == int8["output_mse"]
    assert z[layers.index("features.3")][labels.index("Wfp8_e5m2")] == e5m2["output_mse"]


def test_bit_width_table_offers_formats(digits):
    from widgets.bitwidth_table import BitWidthTable, bit_choices

    task, model = digits
    assert ("fp8_e4m3", "fp8_e4m3") in bit_choices() and bit_choices()[-1] == ("float", "float")
    table = BitWidthTable(task, model)
    before = table.estimated_bytes
    table.set_bits("features.3", weight="fp8_e4m3")
    assert table.spec["layers"] == {"features.3": {"weight_format": "fp8_e4m3"}} and table.estimated_bytes == before
    assert QuantSpec.parse(table.spec).layers["features.3"].weight_format == "fp8_e4m3"


def test_register_format_adds_one_entry_every_reader_sees(digits):
    task, model = digits
    base = get_format("fp8_e4m3")
    fmt = NumberFormat(name="fp8_e4m3_pt", kind="minifloat", bits=(8,), exponent_bits=4, mantissa_bits=3, scale_types=("float",),
                       weight_quant=lambda bits, granularity, scale_type: base.weight_quant(bits, "per_tensor", scale_type),
                       act_quant=base.act_quant, exporters=("qcdq",), description="FP8 E4M3, one weight scale per tensor")
    register_format(fmt)
    try:
        assert "fp8_e4m3_pt" in set(wb.core.list_formats()["name"])
        q = wb.quantize_model(model, {"layers": {"classifier": {"weight_format": "fp8_e4m3_pt"}}})
        assert q.get_submodule("classifier").quant_weight().scale.numel() == 1
        with pytest.raises(wb.infra.SpecError, match="format name 'float'"):
            register_format(NumberFormat(name="float", kind="int", bits=(8,), weight_quant=None, act_quant=None))
    finally:
        FORMATS.pop("fp8_e4m3_pt", None)
