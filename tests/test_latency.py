"""Honest, target-aware latency: float and quantised files timed in one process, interleaved, at
onnxruntime's default optimisation level; the int8 weight encoding chosen per target / host CPU
and recorded. No wall-clock value is asserted, only that results exist and how they were taken."""

import json

import onnx
import onnxruntime as ort
import pytest

import workbench as wb
from workbench.core.cost import load_target
from workbench.export.qcdq import cpu_vnni, resolve_weight_encoding
from workbench.export.verify import latency_level, paired_latency, session

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n\nprocessor\t: 1\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n"
AVX512_VNNI = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n"
AVX_VNNI = "processor\t: 0\nflags\t\t: fpu avx2 avx_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n"


def test_the_vnni_probe_reads_cpuinfo_text():
    assert cpu_vnni(AVX2, "x86_64") is False
    assert cpu_vnni(AVX512_VNNI, "x86_64") is True
    assert cpu_vnni(AVX_VNNI, "x86_64") is True
    assert cpu_vnni(AVX2 + AVX512_VNNI, "x86_64") is False  # a core without VNNI: not safe everywhere
    assert cpu_vnni(ARM, "aarch64") is True  # ARM's U8S8 kernels do not saturate
    assert cpu_vnni("", "x86_64") is None  # unknown


@pytest.mark.parametrize("vnni, expected", [(True, "s8"), (False, "u8"), (None, "u8")])
def test_auto_is_s8_exactly_when_the_probe_says_vnni(vnni, expected):
    assert resolve_weight_encoding("auto", vnni=vnni) == expected
    assert resolve_weight_encoding("u8", vnni=True) == "u8"  # an explicit choice is kept on every machine
    assert resolve_weight_encoding("s8", vnni=False) == "s8"


def test_a_bad_weight_encoding_is_a_one_line_export_error_before_any_file(digits, tmp_path):
    task, model = digits
    with pytest.raises(wb.infra.ExportError, match=r"weight_encoding 'int8'; expected one of u8, s8, auto") as err:
        wb.export_and_verify(task, model, tmp_path, formats=["qcdq"], weight_encoding="int8", latency_runs=5)
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []
    with pytest.raises(wb.infra.ExportError, match="weight_encoding 'S8'"):
        wb.run_job(task, {"w8": wb.QuantSpec.uniform(8, 8)}, tmp_path / "job", float_model=model, weight_encoding="S8", progress=False)
    assert not (tmp_path / "job").exists()
    bad = tmp_path / "t.yaml"
    bad.write_text("name: t\nweight_bits: [8]\nact_bits: [8]\nweight_encoding: int8\n")
    with pytest.raises(wb.infra.SpecError, match="weight_encoding") as err:
        load_target(bad)
    assert "\n" not in str(err.value)
    assert load_target("cpu-int8-ort").weight_encoding == "auto"


@pytest.fixture(scope="module")
def files(digits, tmp_path_factory):
    task, model = digits
    out = tmp_path_factory.mktemp("lat")
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8), wb.PTQConfig(calib_samples=64))
    fp = wb.export.export_float(model, task.example_input(), out / "fp.onnx")
    return task, q, fp, out


def test_paired_latency_interleaves_both_files_at_the_default_level(files):
    task, q, fp, out = files
    quant = wb.export_qcdq(q, task.example_input(), out / "q.onnx")
    res = paired_latency({"quant": quant, "fp": fp}, task.example_input(), runs=6, warmup=1)
    for name in ("quant", "fp"):
        assert 0 < res[name]["p50"] <= res[name]["p99"]
        assert res[name]["level"] == "default" == latency_level(quant if name == "quant" else fp)
    # each round runs both files, and the first file of a round alternates
    rounds = [res["order"][i : i + 2] for i in range(0, 12, 2)]
    assert len(res["order"]) == 12 and all(sorted(r) == ["fp", "quant"] for r in rounds)
    assert [r[0] for r in rounds] == ["quant", "fp"] * 3
    assert res["method"] == "interleaved, batch 1, 1 thread, 6 runs, levels: quant default, fp default"
    # "default" leaves onnxruntime's own level, ORT_ENABLE_ALL (not the EXTENDED verification uses)
    assert session(quant, level="default").get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session(quant).get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED


def test_float8_files_are_timed_with_optimisations_off(digits, files):
    task, model = digits
    _, _, fp, out = files
    q8 = wb.quantize_task(task, model, {"weight_format": "fp8_e4m3", "act_format": "fp8_e4m3"}, wb.PTQConfig(calib_samples=32))
    path = wb.export_qcdq(q8, task.example_input(), out / "fp8.onnx")
    res = paired_latency({"quant": path, "fp": fp}, task.example_input(), runs=2, warmup=0)
    assert (res["quant"]["level"], res["fp"]["level"]) == ("disabled", "default")


def _has_int8(path) -> bool:
    return any(i.data_type == onnx.TensorProto.INT8 for i in onnx.load(str(path)).graph.initializer)


def test_export_and_verify_records_the_encoding_and_how_latency_was_taken(files, tmp_path):
    task, q, fp, _ = files
    res = wb.export_and_verify(task, q, tmp_path / "auto", formats=["qcdq"], float_onnx=fp, latency_runs=5)
    assert res["cpu_vnni"] == cpu_vnni()
    assert res["weight_encoding"] == ("s8" if cpu_vnni() else "u8")
    assert _has_int8(tmp_path / "auto" / "model.onnx") == (res["weight_encoding"] == "s8")
    assert res["latency_method"] == "interleaved, batch 1, 1 thread, 5 runs, levels: quant default, fp default"
    assert all(res[k] > 0 for k in ("latency_ms_p50_quant", "latency_ms_p99_quant", "latency_ms_p50_fp", "latency_ms_p99_fp"))
    for enc in ("u8", "s8"):  # an explicit choice is what the file holds, whatever this CPU
        res = wb.export_and_verify(task, q, tmp_path / enc, formats=["qcdq"], weight_encoding=enc, latency_runs=5)
        assert res["weight_encoding"] == enc and _has_int8(tmp_path / enc / "model.onnx") == (enc == "s8")
        assert res["latency_method"].endswith("levels: quant default") and "latency_ms_p50_fp" not in res


def test_summary_json_records_the_target_profiles_encoding(digits, tmp_path):
    task, model = digits
    target = tmp_path / "avx2-box.yaml"
    target.write_text("name: avx2-box\nweight_bits: [8]\nact_bits: [8]\nweight_encoding: u8\n")
    wb.run_job(task, {"w8": wb.QuantSpec.uniform(8, 8)}, tmp_path / "job", float_model=model, formats=["qcdq"], latency_runs=5,
               progress=False, target=str(target))
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["weight_encoding"] == "u8" and summary["cpu_vnni"] == cpu_vnni()
    assert summary["latency_method"].startswith("interleaved, batch 1, 1 thread")
    assert summary["variants"]["w8"]["weight_encoding"] == "u8"
    assert not _has_int8(tmp_path / "job" / "model.onnx")


def test_the_cli_rejects_a_bad_weight_encoding_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    res = CliRunner().invoke(app, ["quantize", "digits-cnn", "--weight-encoding", "int8", "--out", str(tmp_path / "out")])
    assert res.exit_code != 0
    assert "weight_encoding 'int8'; expected one of u8, s8, auto" in res.output
    assert not (tmp_path / "out").exists()
