"""The ``tflite-int8`` target against the Brevitas simulation, on every registered CNN task.

Per task: the cached float baseline (``load_or_train_baseline``, ``--epochs`` for tasks not yet
cached), W8A8 calibrated on the task's calibration split, the TFLite file built with the
simulation's scales carried (and, with ``--both``, with AEQ's own calibration too), then on the
first ``--n`` eval samples: top-1 agreement with the simulation in ai-edge-litert and in
tflite-micro, the largest output difference in output LSBs, the mean cosine of the litert outputs
to the simulation's, the simulation's own top-1 agreement with the float model (how close to a tie
the logits are), the task metric (simulation, litert, micro), the file bytes (flash), the TFLite Micro arena
bytes (RAM, smallest arena that runs, by bisection) and its split (head: planned activations and
scratch; tail: persistent structs and op data, from TFLite Micro's allocation report), the cost
model's peak-activation estimate (``peak_act_kib`` in bytes) and the ratios arena / estimate and
head / estimate.

    PYTHONPATH=. python benchmarks/targets_agreement.py [--tasks digits-cnn,kws-dscnn] [--n 256] [--both]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import workbench as wb
from workbench.targets import tflite

CNN_TASKS = ("digits-cnn", "mnist1d-cnn", "kws-dscnn", "vww-mobilenet", "ic-resnet8", "hf-resnet18", "hf-mobilenetv2")


def measure(name: str, n: int, epochs: int | None, both: bool, tmp: Path) -> list[str]:
    torch.manual_seed(0)
    task = wb.create_task(name)
    kwargs = {} if epochs is None else {"epochs": epochs}
    model = wb.load_or_train_baseline(task, seed=0, progress=False, **kwargs)
    qmodel = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8))
    target = wb.export.get_exporter("tflite-int8")
    lines = []
    for carry in ((True, False) if both else (True,)):
        t0 = time.perf_counter()
        path = target.export(qmodel, task.example_input(), tmp / f"{name}{target.suffix}", float_model=model, task=task, carry_scales=carry)
        report = target.last_report
        t1 = time.perf_counter()
        rows = {r["runtime"]: r for r in target.evaluate(path, qmodel, task, n=n, latency_runs=0, float_model=model)}
        t2 = time.perf_counter()
        lite, micro = rows["ai-edge-litert"], rows["tflite-micro"]
        with torch.no_grad():
            x = task.data.eval.x[:n]
            sim = torch.cat([qmodel(x[i:i + 256]) for i in range(0, len(x), 256)])
            fp = torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)])
            sim_metric = task.score(sim, wb.tasks.Split(x, task.data.eval.y[:n]))
            sim_fp_agree = float((sim.argmax(1) == fp.argmax(1)).float().mean())
        runner = tflite.LiteRTRunner(path)
        out = torch.from_numpy(np.stack([runner(x[i:i + 1].numpy()).reshape(sim.shape[1:]) for i in range(len(x))]))
        cos = float(torch.nn.functional.cosine_similarity(out.flatten(1), sim.flatten(1)).mean())
        alloc = tflite.micro_allocations(path, x[:1].numpy(), lite["ram_bytes"])
        lines.append(
            f"{name:15s} {'carried' if carry else 'AEQ-cal':8s} n={lite['samples']:<5d} agree litert={lite['agreement']:.4f} micro={micro['agreement']:.4f} "
            f"maxLSB litert={lite['max_lsb_diff']:.0f} micro={micro['max_lsb_diff']:.0f} cos(litert,sim)={cos:.4f} sim-vs-float top1={sim_fp_agree:.3f} "
            f"metric sim={sim_metric:.4f} litert={lite['metric']:.4f} micro={micro['metric']:.4f} "
            f"file={lite['file_bytes']}B arena={lite['ram_bytes']}B est={lite['peak_act_estimate_bytes']}B ratio={lite['ram_vs_estimate']:.2f} "
            f"(arena head={alloc.get('head')}B head/est={alloc.get('head', 0) / lite['peak_act_estimate_bytes']:.2f}, tail={alloc.get('tail')}B) "
            f"carried={len(report['carried'])}/{len(report['carried']) + len(report['calibrated'])} (export {t1 - t0:.0f}s, eval {t2 - t1:.0f}s)")
        print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(CNN_TASKS))
    parser.add_argument("--n", type=int, default=None, help="eval samples (default: the whole eval split)")
    parser.add_argument("--epochs", type=int, default=None, help="baseline epochs for tasks not yet cached (default: the task's)")
    parser.add_argument("--both", action="store_true", help="also build with AEQ's own calibration (carry_scales=False)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks.split(","):
            try:
                measure(name.strip(), args.n, args.epochs, args.both, Path(tmp))
            except Exception as exc:  # report and go on to the next task
                print(f"{name:15s} FAILED {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", flush=True)


if __name__ == "__main__":
    main()
