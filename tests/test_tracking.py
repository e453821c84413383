"""MLflow tracking against a local store: sweeps and apply runs hold the expected params, metrics
and artifacts; an unreachable server is a one-line error before any work starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import workbench as wb
from workbench.infra.tracking import Tracker, TrackingError

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is part of make test's install")
WORKBENCH = str(Path(sys.executable).parent / "workbench")


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _artifact(client, run_id, name, dst):
    return Path(client.download_artifacts(run_id, name, str(dst)))


def test_a_sensitivity_sweep_is_logged_with_its_config_metrics_and_table(digits, tmp_path):
    task, model = digits
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = wb.SensitivityConfig(weight_bits=(2, 8))
    df = wb.sensitivity(task, model, config, store=False, progress=False, tracking=Tracker(uri, experiment="tests"))
    client = _client(uri)
    run = client.get_run(df.attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "sensitivity digits-cnn"
    assert run.data.params["task"] == "digits-cnn" and run.data.params["weight_bits"] == "[2, 8]" and run.data.params["executor"] == "local"
    assert run.data.params["mode"] == "quantise-one" and run.data.params["base.weight_bits"] == "8"
    assert run.data.metrics["rows"] == len(df) and run.data.metrics["metric_min"] == pytest.approx(df["metric"].min())
    csv = _artifact(client, run.info.run_id, "sensitivity.csv", tmp_path)
    logged = pd.read_csv(csv)
    assert list(logged["layer"]) == list(df["layer"]) and logged["metric"].tolist() == pytest.approx(df["metric"].tolist())
    assert (tmp_path / "artifacts").is_dir()  # artifacts beside the database, not in the working directory


def test_apply_logs_the_recipe_metrics_and_files(digits, tmp_path):
    recipe = {"recipe_version": 1, "name": "digits-w8", "task": {"name": "digits-cnn"}, "quantization": {"weight_bits": 8, "act_bits": 8},
              "export": {"formats": ["qcdq"]}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = subprocess.run([WORKBENCH, "apply", str(path), "--out", str(tmp_path / "o"), "--latency-runs", "10", "--mlflow", uri],
                         capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert res.returncode == 0, res.stderr[-1500:]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    assert run.data.params["recipe.quantization.weight_bits"] == "8" and run.data.params["recipe_sha256"] == summary["recipe_sha256"]
    assert run.data.metrics["quant_metric"] == pytest.approx(summary["quant_metric"])
    assert run.data.metrics["onnx_agreement"] == pytest.approx(summary["onnx_agreement"]) and run.data.metrics["int_kernel_nodes"] >= 1
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"r.yaml", "model.onnx", "summary.json"} <= names
    onnx = _artifact(client, run.info.run_id, "model.onnx", tmp_path / "dl")
    assert onnx.read_bytes() == (tmp_path / "o" / "model.onnx").read_bytes()


def test_tracking_is_off_unless_asked_for(digits, tmp_path, monkeypatch):
    task, model = digits
    monkeypatch.delenv("WORKBENCH_MLFLOW", raising=False)
    monkeypatch.chdir(tmp_path)
    df = wb.sensitivity(task, model, wb.SensitivityConfig(weight_bits=(8,)), store=False, progress=False)
    assert "mlflow_run_id" not in df.attrs and not (tmp_path / "mlruns").exists()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_MLFLOW", "local")  # the environment turns it on: a local store in the cache folder
    df = wb.sensitivity(task, model, wb.SensitivityConfig(weight_bits=(8,)), store=False, progress=False)
    assert df.attrs["mlflow_run_id"] and (tmp_path / "cache" / "mlruns" / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_unreachable_or_malformed_uris_fail_before_any_work(tmp_path):
    with pytest.raises(TrackingError, match="mlflow tracking server 127.0.0.1:9 is unreachable .*; expected a running MLflow server"):
        Tracker("http://127.0.0.1:9")
    with pytest.raises(TrackingError, match="mlflow tracking URI 'ftp://x'; expected 'local', http"):
        Tracker("ftp://x")
    res = subprocess.run([WORKBENCH, "sensitivity", "digits-cnn", "--mlflow", "http://127.0.0.1:9", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "is unreachable" in res.stderr
    assert not (tmp_path / "o").exists()  # nothing ran, nothing written


def test_a_qat_recipe_logs_loss_and_metric_per_epoch(digits, tmp_path):
    from workbench.runs.job import apply_recipe

    task, _ = digits
    recipe = {"recipe_version": 1, "name": "digits-w4-qat", "task": {"name": "digits-cnn"}, "quantization": {"weight_bits": 4, "act_bits": 8},
              "qat": {"epochs": 2, "lr": 0.0003, "distill": True}, "export": {"formats": ["qcdq"]}}
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(recipe))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary, _ = apply_recipe(path, tmp_path / "o", progress=False, latency_runs=10, tracking=uri)
    client = _client(uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "qat digits-w4-qat" and run.data.params["recipe.qat.distill"] == "true"
    for key in ("loss", "metric"):
        history = client.get_metric_history(run.info.run_id, f"qat_{key}")
        assert [m.step for m in history] == [0, 1]
        assert [m.value for m in history] == pytest.approx([row[key] for row in summary["qat"]["history"]])
