"""Your own task everywhere: a module of the user's, with make_task(..., train=...), is trained,
swept, searched and applied from the shell, by module:function or by a name it registers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

WORKBENCH = str(Path(sys.executable).parent / "workbench")

MODULE = textwrap.dedent('''
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    import workbench as wb
    from workbench.tasks.data import split_arrays


    def accuracy(outputs, targets):
        return float((outputs.argmax(1) == targets).float().mean())


    def task():
        bunch = load_digits()
        x, y = (bunch.images / 16.0).astype(np.float32)[:, None], bunch.target.astype(np.int64)
        train, calib, eval_ = split_arrays(x, y, seed=0)
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                            nn.Flatten(), nn.Linear(512, 10))
        return wb.make_task(net, calib.x, (eval_.x, eval_.y), accuracy, name="my-digits", train=(train.x, train.y), epochs=6)


    @wb.register_task("my-registered")
    def registered(seed: int = 0):
        return task()
''')


def run(*args, cwd):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ}, timeout=600)


def test_a_user_module_task_trains_sweeps_searches_and_applies_from_the_shell(tmp_path):
    (tmp_path / "mymod.py").write_text(MODULE)
    sens = run("sensitivity", "mymod:task", "--weight-bits", "2,4,8", "--out", "sens", cwd=tmp_path)
    assert sens.returncode == 0, sens.stderr[-2000:]
    assert "my-digits: 9 rows" in sens.stdout
    search = run("search", "mymod:task", "--budget-kib", "4", "--out", "found", cwd=tmp_path)
    assert search.returncode == 0, search.stderr[-2000:]
    recipe = yaml.safe_load((tmp_path / "found" / "recipe.yaml").read_text())
    assert recipe["task"]["factory"] == "mymod:task" and "name" not in recipe["task"]
    refused = run("apply", "found/recipe.yaml", "--out", "applied", cwd=tmp_path)
    assert refused.returncode == 2 and "would import module 'mymod'" in refused.stderr  # code runs only with consent
    applied = run("apply", "found/recipe.yaml", "--out", "applied", "--allow-code", "--latency-runs", "10", cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr[-2000:]
    summary = json.loads((tmp_path / "applied" / "summary.json").read_text())
    assert summary["fp_metric"] > 0.9  # a real baseline, trained from the user's train split (chance is 0.1)
    assert summary["quant_metric"] > 0.85 and summary["onnx_agreement"] >= 0.98
    assert summary["weight_bytes_quant"] <= 4 * 1024
    by_name = run("sensitivity", "my-registered", "--import", "mymod", "--weight-bits", "4", "--out", "sens2", cwd=tmp_path)
    assert by_name.returncode == 0 and "my-digits: 3 rows" in by_name.stdout, by_name.stderr[-2000:]


def test_bad_task_arguments_are_one_line_errors(tmp_path):
    (tmp_path / "mymod.py").write_text(MODULE + "\ndef wrong():\n    return 42\n")
    for args, message in [(["sensitivity", "mymod:wrong"], "task: mymod:wrong returned int; expected a workbench Task"),
                          (["sensitivity", "nomod:task"], "task: cannot import module 'nomod'"),
                          (["sensitivity", "my-registered", "--import", "nomod"], "--import nomod: cannot import it"),
                          (["quantize", "mymod:nothing"], "task: module 'mymod' has no function 'nothing'")]:
        res = run(*args, "--out", "o", cwd=tmp_path)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.returncode == 2 and len(errors) == 1 and message in errors[0], (args, res.stderr[-1000:])
        assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()
