"""The same recipe gives the same bytes whatever thread count the user's environment sets.

`workbench apply` (float baseline training on a fresh cache, pruning fine-tune, PTQ, QAT, export)
runs in separate processes with OMP_NUM_THREADS=1 and 2: the ONNX sha256 must be equal. The
control, the workbench's own thread count changed (WORKBENCH_THREADS=2), gives other bytes: the
comparison can fail.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

WORKBENCH = str(Path(sys.executable).parent / "workbench")
RECIPE = {"recipe_version": 1, "name": "det", "task": {"name": "digits-cnn", "seed": 0, "subset": [512, 128, 256], "epochs": 3},
          "quantization": {"weight_bits": 4, "act_bits": 8}, "pruning": {"method": "structured", "sparsity": 0.25, "finetune_epochs": 1},
          "qat": {"epochs": 1, "lr": 0.001}, "export": {"formats": ["qcdq"]}}


def _apply(tmp_path: Path, name: str, **env) -> dict:
    env = {**env, "WORKBENCH_CACHE": str(tmp_path / f"cache-{name}")}
    res = subprocess.run([WORKBENCH, "apply", str(tmp_path / "r.yaml"), "--out", str(tmp_path / name), "--latency-runs", "10"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-1500:]
    return json.loads((tmp_path / name / "summary.json").read_text())


def test_apply_gives_the_same_bytes_with_1_and_2_threads_on_a_fresh_cache(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    base = {k: v for k, v in os.environ.items() if k != "WORKBENCH_THREADS"}
    one = _apply(tmp_path, "one", **{**base, "OMP_NUM_THREADS": "1"})
    two = _apply(tmp_path, "two", **{**base, "OMP_NUM_THREADS": "2"})
    assert one["torch_threads"] == two["torch_threads"] == 1
    assert one["onnx_sha256"] == two["onnx_sha256"]
    assert (tmp_path / "one" / "model.onnx").read_bytes() == (tmp_path / "two" / "model.onnx").read_bytes()
    control = _apply(tmp_path, "control", **{**base, "OMP_NUM_THREADS": "2", "WORKBENCH_THREADS": "2"})
    assert control["torch_threads"] == 2
    assert control["onnx_sha256"] != one["onnx_sha256"]  # the thread count does change the bytes: the check above can fail


def test_a_sensitivity_sweep_gives_the_same_rows_with_1_and_2_threads(tmp_path):
    import pandas as pd

    tables = []
    for threads in ("1", "2"):
        env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_THREADS"}
        env.update(OMP_NUM_THREADS=threads, WORKBENCH_CACHE=str(tmp_path / f"cache-{threads}"))
        out = tmp_path / f"sens-{threads}"
        res = subprocess.run([WORKBENCH, "sensitivity", "digits-cnn", "--weight-bits", "2,4", "--act-bits", "4", "--out", str(out)],
                             capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, res.stderr[-1500:]
        tables.append(pd.read_csv(out / "sensitivity.csv").drop(columns=["seconds"]))
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)
