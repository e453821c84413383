"""The workbench as a user installs it: built as a wheel, installed without ``-e`` into a folder of
its own, imported from there (not from this checkout), every target profile loaded and a tiny
model quantised, exported and verified."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SMOKE = r"""
import sys, warnings
warnings.filterwarnings("ignore")
import workbench as wb
from workbench.core.cost import list_targets, load_target
assert wb.__file__.startswith(sys.argv[1]), wb.__file__
names = list_targets()
assert {"cpu-int8-ort", "fpga-dataflow", "mcu"} <= set(names), names
for name in names:
    load_target(name)
task = wb.create_task("digits-cnn").small(128, 64, 64)
model = wb.load_or_train_baseline(task, epochs=1, progress=False)
qmodel = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
result = wb.export_and_verify(task, qmodel, sys.argv[2], "m", qonnx=False, latency_runs=10)
assert result["onnx_agreement"] >= 0.99, result
print("ok", len(names), "targets", result["onnx_agreement"])
"""


def test_the_installed_wheel_carries_its_targets_and_works(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("workbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "workbench/py.typed" in names
    assert {"workbench/tasks/texts/sentences.txt", "workbench/tasks/texts/vocab.txt"} <= set(names)  # hf-minilm-embed's text and vocabulary
    assert {"workbench/targets/cpu-int8-ort.yaml", "workbench/targets/fpga-dataflow.yaml", "workbench/targets/mcu.yaml"} <= set(names)
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site), "WORKBENCH_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", SMOKE, str(site), str(tmp_path / "out")], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0 and run.stdout.startswith("ok 3 targets"), run.stderr[-2000:]
