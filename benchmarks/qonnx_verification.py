"""QONNX verification of a MiniLM-size encoder: the onnxruntime executor vs qonnx's own.

``hf-minilm-embed`` (transformers BertModel, 6 layers, hidden 384, 12 heads, sequences of 32
token ids) quantised W8A8 as the workbench does (``quantize_task``, ``QuantSpec.uniform(8, 8)``),
exported with ``export_qonnx`` (108 Quant nodes). ``verify_qonnx`` then runs the file and compares
it with the Brevitas simulation: with the default executor (qonnx's quantisers lowered to
standard ops, the whole graph in one onnxruntime session) on 64 samples, and with
``executor="qonnx"`` (qonnx's node-by-node ``execute_onnx``) on 4 samples, its 64-sample time
extrapolated: the measured 4-sample verification plus 60 times its executor's per-sample time.

Each way runs in its own process (export in a third), so peak resident memory is its own; growth
is measured over the loaded float model, quantised model and data. Prints time, peak RSS growth,
the largest output difference between the executors on the 4 samples, and the ratio last.
Torch and onnxruntime run at their default thread counts. On a 2-core machine shared with other
work the verification took 13-16 s once (the Brevitas simulation beside it slowed 8x): quote the
load average with the figures.

    .venv/bin/python benchmarks/qonnx_verification.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES, OLD_SAMPLES = 64, 4


def _setup():
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    import workbench as wb

    task = wb.create_task("hf-minilm-embed")
    model = wb.load_or_train_baseline(task, progress=False)
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    task.data  # noqa: B018 - build the data (and its float targets) before measuring
    return wb, task, q


def child(mode: str, path: str) -> None:
    wb, task, q = _setup()
    if mode == "export":
        wb.export.export_qonnx(q, task.example_input(), path)
        return
    from workbench.export.qonnx_run import run_qonnx
    from workbench.export.verify import as_onnx_input

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = wb.export.verify_qonnx(path, q, task, n=SAMPLES if mode == "auto" else OLD_SAMPLES, executor=mode)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"executor": res["qonnx_executor"], "samples": res["qonnx_samples"], "seconds": seconds, "peak_mib": peak / 1024,
           "growth_mib": (peak - base) / 1024, "agreement": res["qonnx_agreement"], "metric": res["qonnx_metric"]}
    if mode == "qonnx":  # the executor alone, per sample, and the fast executor's outputs on the same samples
        x = as_onnx_input(task.data.eval.x[:OLD_SAMPLES])
        t0 = time.perf_counter()
        ref, _ = run_qonnx(path, x, executor="qonnx")
        out["executor_seconds_per_sample"] = (time.perf_counter() - t0) / OLD_SAMPLES
        fast, _ = run_qonnx(path, x)
        out["max_abs_diff_vs_onnxruntime"] = float(abs(fast - ref).max())
    print(json.dumps(out))


def _run(mode: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) if mode != "export" else {}


def main() -> None:
    import os

    print(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "minilm_w8a8.qonnx.onnx")
        _run("export", path)
        new, old = _run("auto", path), _run("qonnx", path)
    extrapolated = old["seconds"] + (SAMPLES - OLD_SAMPLES) * old["executor_seconds_per_sample"]
    print(f"file: hf-minilm-embed W8A8 QONNX, {Path(path).name}")
    print(f"onnxruntime executor ({new['executor']}): {new['samples']} samples {new['seconds']:6.2f} s   peak RSS {new['peak_mib']:7.1f} MiB "
          f"(+{new['growth_mib']:.1f} MiB over the loaded model)  agreement {new['agreement']:.4f}")
    print(f"qonnx executor: {old['samples']} samples measured {old['seconds']:6.2f} s   peak RSS {old['peak_mib']:7.1f} MiB "
          f"(+{old['growth_mib']:.1f} MiB at {old['samples']} samples); {old['executor_seconds_per_sample']:.2f} s per sample")
    print(f"qonnx executor, {SAMPLES} samples EXTRAPOLATED ({old['samples']}-sample verification + {SAMPLES - OLD_SAMPLES} x per-sample time): "
          f"{extrapolated:6.1f} s")
    print(f"max |onnxruntime - qonnx| output on {old['samples']} samples: {old['max_abs_diff_vs_onnxruntime']:.1e}")
    print(f"time ratio qonnx (extrapolated) / onnxruntime, {SAMPLES} samples: {extrapolated / new['seconds']:.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
