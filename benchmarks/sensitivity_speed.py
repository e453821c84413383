"""Sensitivity engine vs the naive loop, in one run.

The full quantise-one weight sweep (bits 2, 3, 4, 6, 8 on every layer) on ic-resnet8, kws-dscnn
and hf-bert (a 6-layer BERT fx cannot trace), computed twice: by the engine (the cut engine's
cached layer inputs, or the block engine's cached encoder-layer outputs, only the network from
the layer onward, passes sized to the CPU's cache, no model rebuild) and by the naive loop (build
the quantised model, calibrate, full forward, per case). Checks the metrics agree within 1e-6 and
prints naive / engine per model and overall, the overall ratio last.

    .venv/bin/python benchmarks/sensitivity_speed.py
"""

from __future__ import annotations

import time
import warnings

import numpy as np

import workbench as wb
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

warnings.filterwarnings("ignore")
TASKS = ("ic-resnet8", "kws-dscnn", "hf-bert")
CONFIG = SensitivityConfig(weight_bits=(2, 3, 4, 6, 8))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    import os

    print(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    total = {"cut": 0.0, "naive": 0.0}
    for name in TASKS:
        task = wb.create_task(name)
        model = wb.load_or_train_baseline(task, progress=False)
        engine, t_engine = timed(lambda: sensitivity(task, model, CONFIG, store=False, progress=False, engine="cut"))
        naive, t_naive = timed(lambda: sensitivity(task, model, CONFIG, store=False, progress=False, engine="naive"))
        cols = ["metric", "sqnr_db", "output_mse", "kl"]
        diff = float(np.nanmax(np.abs(engine[cols].to_numpy(float) - naive[cols].to_numpy(float))))
        assert diff <= 1e-6, f"{name}: engine and naive differ by {diff}"
        assert set(engine["engine"]) <= {"cut", "block", "swap"}
        total["cut"] += t_engine
        total["naive"] += t_naive
        engines = "/".join(sorted(set(engine["engine"])))
        print(f"{name:12s} {len(engine):3d} cases ({engines:10s}) engine {t_engine:6.2f} s  naive {t_naive:6.2f} s  "
              f"ratio {t_naive / t_engine:4.2f}  max |metric diff| {diff:.1e}", flush=True)
    print(f"total        engine {total['cut']:6.2f} s  naive {total['naive']:6.2f} s")
    print(f"ratio naive/engine: {total['naive'] / total['cut']:.2f}")


if __name__ == "__main__":
    main()
