import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKBENCH = str(Path(sys.executable).parent / "workbench")


def run(*args, cwd=None):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ}, timeout=600)


def test_tasks_command_lists_every_task():
    res = run("tasks")
    assert res.returncode == 0, res.stderr
    for name in ("digits-cnn", "mnist1d-cnn", "kws-dscnn", "vww-mobilenet", "ic-resnet8", "ad-autoencoder"):
        assert name in res.stdout
    assert "synthetic" in res.stdout and "77706" in res.stdout


def test_demo_writes_report_summary_and_model(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([WORKBENCH, "demo", "--out", str(out), "--latency-runs", "50"], capture_output=True, text=True, env={**os.environ}, timeout=600,
                         preexec_fn=lambda: os.umask(0o022))
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["quant_metric"] - summary["fp_metric"]) <= 0.01
    assert summary["onnx_agreement"] >= 0.99
    assert summary["int_kernel_nodes"] > 0
    for key in ("task", "metric_name", "fp_metric", "quant_metric", "onnx_metric", "onnx_agreement", "max_abs_diff", "weight_bytes_fp",
                "weight_bytes_quant", "onnx_file_bytes", "int_kernel_nodes", "latency_ms_p50_fp", "latency_ms_p50_quant"):
        assert key in summary
    for key in ("fp_metric", "quant_metric", "onnx_metric", "onnx_agreement"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["weight_bytes_quant"] * 3 < summary["weight_bytes_fp"]
    assert summary["onnx_file_bytes"] == (out / "model.onnx").stat().st_size
    assert set(summary["variants"]) == {"w8a8", "w4a8", "chosen"}
    # the promoted recipe, rebuilt and exported as its export section says, verified: its expectations met
    chosen, search = summary["variants"]["chosen"], summary["search"]
    assert search["variant"] == "chosen" and search["expectations_failed"] == [] and chosen["onnx_agreement"] >= 0.98
    assert abs(chosen["quant_metric"] - search["chosen_measured_metric"]) <= 0.02 and chosen["int_kernel_nodes"] > 0
    assert chosen["weight_bytes_quant"] / 1024 == pytest.approx(search["chosen_weight_kib"])
    assert (out / "model_chosen.onnx").is_file() and (out / "model_chosen.qonnx.onnx").is_file()
    assert all(summary["variants"][n][k] > 0 for n in summary["variants"] for k in ("macs", "bops", "peak_act_bytes"))
    report = (out / "report.html").read_text()
    assert "plotly" in report and "Weight bytes per layer" in report and "w4a8" in report
    assert "Mixed-precision search" in report and "measured front" in report and "recipe_version: 1" in report
    from workbench.runs.recipe import load_recipe

    recipe, _ = load_recipe(out / "recipe.yaml")
    assert recipe.task.name == "digits-cnn" and recipe.quantization.layers
    assert summary["search"]["chosen_weight_kib"] <= summary["search"]["budget_kib"]
    # the budget is the realised ONNX file's KiB: the chosen point's written file is within it, as estimated
    assert search["budget_kind"] == "onnx_kib" and search["chosen_onnx_kib"] <= search["budget_kib"]
    written = (out / "model_chosen.onnx").stat().st_size
    assert written <= search["budget_kib"] * 1024 and abs(search["chosen_onnx_kib"] * 1024 - written) <= 0.02 * written
    assert "(onnx_kib)" in res.stdout
    assert (out / "pareto.csv").exists() and (out / "sensitivity.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo")]  # no temporary folder left
    for text in ("Chosen recipe: rebuilt, exported and verified", "<th>MACs</th>", "<th>BOPs</th>", "<th>peak activation bytes</th>",
                 "percentage points", f"Latency (ms), measured on {summary['latency_where']}", "budget 15 KiB, realised ONNX file KiB", "theoretical packed weight KiB", '"name":"chosen"'):
        assert text in report, text
    # under umask 022 every file the demo writes is 0644 and the folder 0755
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {"0o644"} and oct(out.stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize("args,message", [
    (["quantize", "digits-cnn", "--weight-bits", "0"], "weight_bits: expected an integer in 2-8 or 16, or 'float'; got 0"),
    (["quantize", "digits-cnn", "--act-bits", "eight"], "act_bits: expected an integer in 2-8 or 16, or 'float'; got 'eight'"),
    (["quantize", "digit-cnn"], "unknown task 'digit-cnn'"),
    (["quantize", "digits-cnn", "--spec", "nowhere.yaml"], "spec file 'nowhere.yaml' does not exist"),
])
def test_bad_input_gets_one_line_error_and_exit_2(args, message, tmp_path):
    res = run(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "out").exists()


def test_quantize_with_a_spec_file(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("weight_bits: 8\nact_bits: 8\nlayers:\n  features.3:\n    weight_bits: 4\n")
    out = tmp_path / "q"
    res = run("quantize", "digits-cnn", "--spec", str(spec), "--out", str(out), "--no-qonnx")
    assert res.returncode == 0, res.stderr[-2000:]
    layers = (out / "layers_spec.csv").read_text().splitlines()
    assert any(line.startswith("features.3,") and ",4," in line for line in layers)

    spec.write_text("layers:\n  features.4:\n    weight_bits: 4\n")
    res = run("quantize", "digits-cnn", "--spec", str(spec), "--out", str(tmp_path / "bad"))
    assert res.returncode == 2 and "layers.features.4: no such quantisable layer; closest: features.7, features.3, features.0" in res.stderr
    assert "float baseline" not in res.stderr  # refused before any training


def test_sensitivity_command_writes_csv_and_html(tmp_path):
    out = tmp_path / "sens"
    res = run("sensitivity", "digits-cnn", "--weight-bits", "2,8", "--act-bits", "8", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    import pandas as pd

    df = pd.read_csv(out / "sensitivity.csv")
    for col in ("layer", "layer_type", "depth", "params", "macs", "weight_bits", "act_bits", "mode", "metric", "metric_delta",
                "sqnr_db", "output_mse", "kl", "seconds"):
        assert col in df.columns
    assert len(df) == 8 and set(df["act_bits"]) == {8}
    html = (out / "sensitivity.html").read_text()
    assert "Per-layer sensitivity" in html and "plotly" in html
    again = run("sensitivity", "digits-cnn", "--weight-bits", "2,8", "--act-bits", "8", "--out", str(tmp_path / "again"))
    assert "0 computed, 8 from the store" in again.stdout
    bad = run("sensitivity", "digits-cnn", "--weight-bits", "2,33", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "weight_bits[1]: expected an integer in 2-8 or 16" in bad.stderr


def test_prune_command_writes_pruning_csv(tmp_path):
    out = tmp_path / "prune"
    res = run("prune", "digits-cnn", "--method", "structured", "--sparsity", "0.25,0.5", "--finetune-epochs", "1", "--latency-runs", "10",
              "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    import pandas as pd

    df = pd.read_csv(out / "pruning.csv")
    for col in ("method", "sparsity", "layer", "metric", "params", "macs", "onnx_bytes", "latency_ms"):
        assert col in df.columns
    glob = df[df["layer"] == "global"].set_index("sparsity")
    assert list(glob.index) == [0.0, 0.25, 0.5]
    assert glob.loc[0.5, "params"] < 0.6 * glob.loc[0.0, "params"] and glob.loc[0.5, "onnx_bytes"] < glob.loc[0.25, "onnx_bytes"]
    assert "not pruned: classifier: its channels are the model's output" in res.stdout
    nm = run("prune", "digits-cnn", "--method", "nm", "--sparsity", "0.5", "--no-per-layer", "--latency-runs", "0", "--out", str(tmp_path / "nm"))
    assert nm.returncode == 0, nm.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "nm" / "pruning.csv")
    assert list(rows["layer"]) == ["global", "global"] and rows["onnx_bytes"].nunique() == 1  # masks keep dense bytes
    for args, message in ((["--sparsity", "1"], r"sparsities[0]: sparsity: expected a value in [0, 1); got 1.0"),
                          (["--method", "nm", "--sparsity", "0.3"], "N:M sparsity 0.3 is not a whole number of weights out of m=4"),
                          (["--layers", "features.4"], "layers.features.4: no such prunable layer; closest:")):
        bad = run("prune", "digits-cnn", *args, "--out", str(tmp_path / "bad"))
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
        assert not (tmp_path / "bad").exists()
