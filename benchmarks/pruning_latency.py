"""Structured pruning's real savings on onnxruntime, in one run.

For ic-resnet8 and kws-dscnn: the float baseline and the same model with 50% of its channels
removed (structured, l1, no fine-tune: latency does not depend on the weights' values), each
exported as float ONNX and as W8A8 QCDQ and timed in onnxruntime (batch 1, one thread, p50 of
500 runs). Prints file bytes and latency per model and format, and the latency ratio
unpruned / pruned (geometric mean over models and formats) last.

    .venv/bin/python benchmarks/pruning_latency.py
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import workbench as wb
from workbench.tasks.models import count_params
from workbench.export.verify import latency_ms

warnings.filterwarnings("ignore")
TASKS = ("ic-resnet8", "kws-dscnn")
SPARSITY = 0.5
RUNS = 500


def exported(task, model, tmp: Path, stem: str) -> dict[str, Path]:
    qmodel = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8))
    return {"float": wb.export.export_float(model, task.example_input(), tmp / f"{stem}.fp32.onnx"),
            "w8a8": wb.export_qcdq(qmodel, task.example_input(), tmp / f"{stem}.qcdq.onnx")}


def main() -> None:
    ratios = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in TASKS:
            task = wb.create_task(name)
            model = wb.load_or_train_baseline(task, progress=False)
            pruned = wb.prune(task, model, {"method": "structured", "sparsity": SPARSITY})
            full, half = exported(task, model, tmp, f"{name}-full"), exported(task, pruned, tmp, f"{name}-pruned")
            print(f"{name}: params {count_params(model):,} -> {count_params(pruned):,}")
            for fmt in ("float", "w8a8"):
                a = latency_ms(full[fmt], task.example_input(), runs=RUNS, warmup=50)["p50"]
                b = latency_ms(half[fmt], task.example_input(), runs=RUNS, warmup=50)["p50"]
                ratios.append(a / b)
                print(f"  {fmt:5s}  bytes {full[fmt].stat().st_size:8,} -> {half[fmt].stat().st_size:8,}   "
                      f"p50 {a:.4f} ms -> {b:.4f} ms   ratio {a / b:.2f}")
    print(f"latency ratio unpruned / pruned at {SPARSITY:g} structured (geometric mean): {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}")


if __name__ == "__main__":
    main()
