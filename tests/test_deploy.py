"""workbench deploy (issue 16, item 3): one command builds every target of a recipe, checks each
against the simulation and writes deployment.csv; a recipe's targets: section carries tolerances;
bad input is refused in one line before any work, with nothing written."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import workbench as wb
from workbench.export.exporters import DEPLOYMENT_COLUMNS, EXPORTERS, Target, register_exporter
from workbench.runs.recipe import parse_recipe

WORKBENCH = str(Path(sys.executable).parent / "workbench")

RECIPE = {
    "recipe_version": 1,
    "name": "kws",
    "task": {"name": "kws-dscnn", "seed": 0, "subset": [256, 64, 128], "epochs": 2},
    "quantization": {"weight_bits": 8, "act_bits": 8},
    "export": {"formats": ["qcdq"]},
}


def _recipe(tmp_path, **changes) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **changes}, sort_keys=False))
    return path


def _cli(*args, cwd):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ}, timeout=900)


def test_deploy_cli_writes_one_row_per_target_and_runtime(tmp_path):
    recipe = _recipe(tmp_path, targets={"tflite-int8": {"min_agreement": 0.99}, "ethos-u55-128": {"max_cpu_ops": 0}})
    res = _cli("deploy", str(recipe), "--out", "out", "--latency-runs", "20", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = tmp_path / "out"
    table = pd.read_csv(out / "deployment.csv")
    assert list(table.columns) == list(DEPLOYMENT_COLUMNS)
    rows = {(r.target, r.runtime): r for r in table.itertuples()}
    assert ("qcdq", "onnxruntime") in rows
    litert, micro = rows[("tflite-int8", "ai-edge-litert")], rows[("tflite-int8", "tflite-micro")]
    for row in (litert, micro):
        assert row.agreement >= 0.99 and row.file_bytes > 0 and row.samples > 0
        assert (out / row.artifact).is_file()
    assert micro.ram_bytes > 0 and "arena" in micro.ram_source
    assert litert.latency_ms_p99 >= litert.latency_ms_p50 > 0 and litert.jitter >= 1.0 and "measured" in litert.latency_source
    vela = table[table["target"] == "ethos-u55-128"].iloc[0]
    assert vela["cycles"] > 0 and vela["cpu_ops"] == 0 and vela["npu_ops"] > 0 and vela["ram_bytes"] > 0
    assert "estimated" in vela["latency_source"] and (out / vela["artifact"]).is_file()
    assert "tflite-int8" in res.stdout and "ethos-u55-128" in res.stdout  # the table is printed
    assert "Deployment" in (out / "report.html").read_text()


def test_tolerance_outside_is_a_failure_and_exit_1(tmp_path):
    recipe = _recipe(tmp_path, targets={"tflite-int8": {"max_ram_bytes": 1}})
    res = _cli("deploy", str(recipe), "--out", "out", "--latency-runs", "10", cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "FAILED targets.tflite-int8 (tflite-micro): ram_bytes" in res.stderr
    assert (tmp_path / "out" / "deployment.csv").is_file()  # the table is kept: it says what was measured


def test_apply_builds_the_recipe_targets_and_deploy_overrides_them(tmp_path):
    recipe = _recipe(tmp_path, targets=["tflite-int8"])
    summary, failures = wb.apply_recipe(recipe, tmp_path / "applied", progress=False, latency_runs=10)
    assert failures == []
    assert {(r["target"], r["runtime"]) for r in summary["deployment"]} == {("qcdq", "onnxruntime"), ("tflite-int8", "ai-edge-litert"),
                                                                           ("tflite-int8", "tflite-micro")}
    assert (tmp_path / "applied" / "deployment.csv").is_file() and (tmp_path / "applied" / "model.int8.tflite").is_file()


@pytest.mark.parametrize("targets, message", [
    (["tflite"], "unknown deployment target 'tflite' (did you mean 'tflite-int8'?)"),
    (["qonnx"], "'qonnx' is an export format, not a deployment target"),
    (["ethos-u55-999"], "unknown deployment target 'ethos-u55-999' (did you mean"),
    (None, "no deployment target"),
])
def test_bad_target_is_one_line_before_any_work(tmp_path, targets, message):
    with pytest.raises(wb.infra.ExportError) as err:
        wb.deploy(_recipe(tmp_path), targets, tmp_path / "out", progress=False)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path):
    res = _cli("deploy", str(_recipe(tmp_path)), "--out", "out", "--target", "tflite", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == ("error: unknown deployment target 'tflite' (did you mean 'tflite-int8'?); targets: "
                                                          + ", ".join(wb.runs.list_target_names())), res.stderr[-1500:]
    assert not (tmp_path / "out").exists()


def test_a_layer_the_target_cannot_carry_is_named_before_any_work(tmp_path):
    task = wb.create_task("kws-dscnn")
    names = list(wb.core.quantisable_layers(task.create_model()))
    layer = names[1]
    recipe = _recipe(tmp_path, quantization={"weight_bits": 8, "act_bits": 8, "layers": {layer: {"weight_bits": 16}}})
    res = _cli("deploy", str(recipe), "--out", "out", "--target", "tflite-int8", cwd=tmp_path)
    assert res.returncode != 0 and layer in res.stderr and "tflite-int8" in res.stderr, res.stderr[-1500:]
    assert not (tmp_path / "out").exists()


class _Missing(Target):
    name, suffix = "missing-toolchain", ".missing.bin"
    requires = ("workbench_no_such_module",)
    runtime = "nothing"


def test_a_missing_toolchain_names_the_extra(tmp_path):
    register_exporter(_Missing)
    try:
        with pytest.raises(wb.infra.ToolchainError, match=r"needs the Python module 'workbench_no_such_module'.*pip install 'workbench\[targets\]'"):
            wb.deploy(_recipe(tmp_path), ["missing-toolchain"], tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()
    finally:
        EXPORTERS.pop("missing-toolchain", None)


def test_recipe_targets_section_parses_checks_and_round_trips():
    r = parse_recipe({**RECIPE, "targets": ["tflite-int8"]})
    assert set(r.targets) == {"tflite-int8"} and r.targets["tflite-int8"].min_agreement is None
    again = parse_recipe(yaml.safe_load(r.to_yaml()))
    assert again == r
    assert "targets" not in parse_recipe(RECIPE).to_yaml()  # older recipes reserialise unchanged
    with pytest.raises(wb.runs.RecipeError, match="unknown deployment target 'tflite-int9'"):
        parse_recipe({**RECIPE, "targets": {"tflite-int8": {}, "tflite-int9": {}}})
    with pytest.raises(wb.runs.RecipeError, match="min_agreement"):
        parse_recipe({**RECIPE, "targets": {"tflite-int8": {"min_agreement": 1.5}}})
    tol = wb.runs.TargetTolerance(min_agreement=0.99, max_ram_bytes=1000)
    assert tol.check({"agreement": 0.995, "ram_bytes": 800}) == []
    assert tol.check({"agreement": 0.9, "ram_bytes": None}) == ["agreement 0.9 is below the minimum 0.99",
                                                                "ram_bytes was not measured; max_ram_bytes 1000 cannot be checked"]


def test_workbench_targets_lists_them():
    res = subprocess.run([WORKBENCH, "targets"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in ("tflite-int8", "ethos-u55-128", "hls4ml"):
        assert name in res.stdout
