"""Exporters as a registry (issue 14, item 2): names, one-line errors before any work, and a
recipe's export.formats deciding which files are written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import workbench as wb
from workbench.export.exporters import EXPORTERS, Exporter, register_exporter, resolve_formats
from workbench.runs.job import apply_recipe

WORKBENCH = str(Path(sys.executable).parent / "workbench")

RECIPE = {
    "recipe_version": 1,
    "name": "small",
    "task": {"name": "digits-cnn", "seed": 0, "subset": [256, 128, 128], "epochs": 2},
    "quantization": {"weight_bits": 8, "act_bits": 8},
}


def test_list_exporters_names_qcdq_and_qonnx():
    df = wb.export.list_exporters()
    assert list(df["name"])[:2] == ["qcdq", "qonnx"]
    assert {"name", "suffix", "carries", "max_bits"} <= set(df.columns)
    row = df.set_index("name")
    assert row.loc["qcdq", "suffix"] == ".onnx" and row.loc["qonnx", "suffix"] == ".qonnx.onnx"
    assert row.loc["qcdq", "max_bits"] == 8
    assert isinstance(wb.export.get_exporter("qonnx"), wb.export.Exporter)


def test_resolve_formats_order_alias_and_errors():
    assert resolve_formats(None) == ("qcdq", "qonnx")
    assert resolve_formats(["qonnx", "qcdq", "qonnx"]) == ("qcdq", "qonnx")
    assert resolve_formats("qcdq") == ("qcdq",)
    assert resolve_formats(("qcdq", "qonnx"), qonnx=False) == ("qcdq",)
    assert resolve_formats(["qcdq"], qonnx=True) == ("qcdq", "qonnx")
    with pytest.raises(wb.infra.ExportError, match=r"^unknown export format 'qcdx' \(did you mean 'qcdq'\?\); known: qcdq, qonnx"):
        resolve_formats(["qcdq", "qcdx"])
    with pytest.raises(wb.infra.ExportError, match="'qcdq' is required"):
        resolve_formats(["qonnx"])


def test_register_exporter_refuses_a_taken_name_or_suffix():
    class Other(Exporter):
        name, suffix = "qcdq", ".other.onnx"

    with pytest.raises(wb.infra.ExportError, match="already registered"):
        register_exporter(Other)

    class SameSuffix(Exporter):
        name, suffix = "same_suffix", ".qonnx.onnx"

    with pytest.raises(wb.infra.ExportError, match="already used by exporter 'qonnx'"):
        register_exporter(SameSuffix)
    assert "same_suffix" not in EXPORTERS


@pytest.fixture(scope="module")
def small_q(digits):
    task, model = digits
    return task, wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8), wb.PTQConfig(calib_samples=64))


def test_unknown_format_is_one_line_error_before_any_file(tmp_path, small_q):
    task, q = small_q
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(wb.infra.ExportError) as err:
        wb.export_and_verify(task, q, out, formats=["qcdq", "tflite"], latency_runs=5)
    msg = str(err.value)
    assert "\n" not in msg and "'tflite'" in msg and "qcdq, qonnx" in msg
    assert list(out.iterdir()) == []
    with pytest.raises(wb.infra.ExportError, match="unknown export format 'tflite'"):
        wb.run_job(task, {"a": wb.QuantSpec.uniform(8, 8)}, tmp_path / "job", formats=["tflite"], progress=False, float_model=q)
    assert not (tmp_path / "job").exists()


def test_missing_float_onnx_is_an_export_error_naming_the_path(tmp_path, small_q):
    task, q = small_q
    missing = tmp_path / "nowhere" / "model_fp32.onnx"
    with pytest.raises(wb.infra.ExportError, match=r"float_onnx '.*nowhere/model_fp32\.onnx' does not exist") as err:
        wb.export_and_verify(task, q, tmp_path, float_onnx=missing, latency_runs=5)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "model.onnx").exists()


def test_qonnx_false_alias_keeps_the_old_keys(tmp_path, small_q):
    task, q = small_q
    res = wb.export_and_verify(task, q, tmp_path, qonnx=False, latency_runs=5)
    assert list(res)[-6:] == ["onnx_path", "onnx_sha256", "latency_ms_p50_quant", "latency_ms_p99_quant", "latency_ms_max_quant", "latency_jitter_quant"]
    assert res["onnx_path"] == "model.onnx" and not any(k.startswith("qonnx") for k in res)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("formats, qonnx_written", [(["qcdq"], False), (["qcdq", "qonnx"], True)])
def test_recipe_export_formats_decide_the_files(tmp_path, formats, qonnx_written):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "export": {"formats": formats}}))
    summary, _ = apply_recipe(path, tmp_path / "out", progress=False, latency_runs=10)
    out = tmp_path / "out"
    assert (out / "model.onnx").is_file()
    assert bool(list(out.glob("*.qonnx.onnx"))) == qonnx_written
    assert ("qonnx_path" in summary["variants"]["small"]) == qonnx_written
    if qonnx_written:
        assert summary["variants"]["small"]["qonnx_path"] == "model.qonnx.onnx"
        assert summary["variants"]["small"]["qonnx_agreement"] >= 0.9


def test_cli_quantize_format_qcdq_writes_no_qonnx(tmp_path, digits):
    res = subprocess.run([WORKBENCH, "quantize", "digits-cnn", "--format", "qcdq", "--out", "run"], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ}, timeout=300)
    assert res.returncode == 0, res.stderr[-1500:]
    out = tmp_path / "run"
    assert (out / "model.onnx").is_file() and not list(out.glob("*.qonnx.onnx"))
    bad = subprocess.run([WORKBENCH, "quantize", "digits-cnn", "--format", "tflite", "--out", "bad"], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ}, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "unknown export format 'tflite'" in bad.stderr and not (tmp_path / "bad").exists()
