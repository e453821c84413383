"""hls4ml's C++ emulation of every registered CNN task against the Brevitas simulation.

Per task: W8A8 (``--spec``, power-of-two scales by default: what ``ap_fixed`` carries exactly)
quantisation calibrated on the task's calibration split, the ``hls4ml`` target's export (Brevitas ->
QONNX -> hls4ml project, :mod:`workbench.targets.hls`), the project compiled with g++, then the eval split
run through the emulation. Printed per task: ``converts`` (or the one-line error), g++
``compile_s``, top-1 ``agreement`` with the simulation, ``max_lsb_diff`` (largest output
difference in output LSBs) and ``n`` (samples). Each task runs in its own process under
``--timeout`` seconds (g++ on a large fully unrolled network can take very long).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/hls4ml_agreement.py --tasks digits-cnn kws-dscnn
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import multiprocessing as mp
import tempfile
import time
import traceback
import warnings
from pathlib import Path

CNN_TASKS = ["digits-cnn", "mnist1d-cnn", "kws-dscnn", "vww-mobilenet", "ic-resnet8", "hf-resnet18", "hf-mobilenetv2"]


def run_task(name: str, scale_type: str, bits: int, n: int | None, epochs: int, queue) -> None:
    warnings.filterwarnings("ignore")
    import torch

    import workbench as wb
    from workbench.targets.hls import load_emulation

    torch.manual_seed(0)
    row = {"task": name, "converts": False}
    try:
        queue.put({"stage": "baseline"})
        task = wb.create_task(name).small(n_eval=n or 128)
        model = wb.load_or_train_baseline(task, seed=0, epochs=epochs, progress=False)
        queue.put({"stage": "quantise + calibrate"})
        q = wb.quantize_task(task, model, wb.QuantSpec.uniform(bits, bits, scale_type=scale_type), wb.PTQConfig(calib_samples=64))
        target = wb.export.get_exporter("hls4ml")
        queue.put({"stage": "hls4ml conversion + g++ build"})
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            path = target.export(q, task.example_input(1), Path(tmp) / f"{name}{target.suffix}")
            row["export_s"] = round(time.perf_counter() - t, 1)
            emu = load_emulation(path)
            row.update(converts=True, compile_s=round(emu.compile_seconds, 1), file_kib=round(path.stat().st_size / 1024, 1))
            queue.put({"stage": "emulation on the eval split"})
            r = target.evaluate(path, q, task)[0]
            row.update(agreement=r["agreement"], max_lsb_diff=r["max_lsb_diff"], n=r["samples"])
    except Exception as exc:  # report, do not stop the sweep
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if str(exc) else traceback.format_exc(limit=1)
    queue.put(row)


def _stop(proc) -> None:
    """Kill the task's process and the compilers it started (g++ under hls4ml's build_lib.sh)."""
    import signal
    import subprocess

    kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in kids:
        grand = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()
        for g in grand:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(g), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    proc.kill()
    proc.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="*", default=CNN_TASKS)
    ap.add_argument("--scale-type", default="po2", choices=["po2", "float"])
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--n", type=int, default=128, help="eval samples")
    ap.add_argument("--epochs", type=int, default=2, help="baseline training epochs where no cached baseline exists")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per task")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"hls4ml emulation vs simulation, W{args.bits}A{args.bits} scale_type={args.scale_type}")
    print(f"{'task':16} {'converts':8} {'compile_s':>9} {'agreement':>9} {'max_lsb_diff':>12} {'n':>5}  note")
    for name in args.tasks:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_task, args=(name, args.scale_type, args.bits, args.n, args.epochs, queue))
        t = time.perf_counter()
        proc.start()
        proc.join(args.timeout)
        msgs = []
        while True:  # drain what the task reported (stages, then its row)
            try:
                msgs.append(queue.get(timeout=0.5))
            except Exception:
                break
        stages = [m["stage"] for m in msgs if "stage" in m]
        rows = [m for m in msgs if "task" in m]
        if proc.is_alive():
            _stop(proc)
            row = {"task": name, "converts": None, "error": f"stopped after {args.timeout:.0f} s in: {stages[-1] if stages else 'start-up'}"}
        else:
            row = rows[-1] if rows else {"task": name, "converts": False, "error": f"process exited {proc.exitcode} in: {stages[-1] if stages else 'start-up'}"}
        row["wall_s"] = round(time.perf_counter() - t, 1)

        def f(k, fmt):
            v = row.get(k)
            return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"

        print(f"{name:16} {str(row.get('converts')):8} {f('compile_s', '9.1f')} {f('agreement', '9.4f')} {f('max_lsb_diff', '12.1f')} "
              f"{f('n', '5d')}  {row.get('error', '')}", flush=True)
        print("  " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
