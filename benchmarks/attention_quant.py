"""What quantising the attention matmuls (``attention_bits``) buys and costs on transformer encoders.

For ``hf-minilm-embed`` and ``hf-bert`` (``--layers`` layers, the full calibration and eval
splits): float, W8A8 and W8A8 + ``attention_bits: 8`` (and 4), each exported with
:func:`workbench.export.qcdq.export_qcdq`. Per variant: the task metric (mean cosine to the float model's
outputs), onnxruntime vs the Brevitas simulation (relative error, optimisations off and at the
default level), the integer MAC kernels onnxruntime runs, float MatMuls left, the file bytes, and
batch-1 latency on one thread (:func:`workbench.export.verify.paired_latency`: interleaved, in this
process; a report, not a promise: it depends on the CPU and what else runs on it).

    .venv/bin/python benchmarks/attention_quant.py --layers 6 --runs 300 [--seq-len 128]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

import workbench as wb
from workbench.tasks.evaluate import predict
from workbench.export.onnx_io import export_float
from workbench.export.qcdq import export_qcdq
from workbench.export.verify import MAC_KERNEL_OPS, optimized_op_counts, paired_latency, run_onnx, session

VARIANTS = {"W8A8": {}, "W8A8+att8": {"attention_bits": 8}, "W8A8+att4": {"attention_bits": 4}}


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def measure(name: str, layers: int, tmp: Path, runs: int, seq_len: int = 32) -> None:
    task = wb.create_task(name, layers=layers, seq_len=seq_len)
    model = wb.load_or_train_baseline(task, progress=False)
    x = task.data.eval.x
    paths = {"float": export_float(model, task.example_input(), tmp / f"{name}-float.onnx")}
    rows = {"float": {"metric": task.score(predict(model, x), task.data.eval)}}
    for variant, extra in VARIANTS.items():
        q = wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, **extra))
        path = paths[variant] = export_qcdq(q, task.example_input(), tmp / f"{name}-{variant}.onnx")
        sim = predict(q, x)
        ops = optimized_op_counts(path)
        rows[variant] = {"metric": task.score(sim, task.data.eval),
                         "ort_vs_sim": {lvl: rel(run_onnx(session(path, level=lvl), x), sim) for lvl in ("disabled", "default")},
                         "int_mac_kernels": sum(ops.get(k, 0) for k in MAC_KERNEL_OPS), "float_matmuls": ops.get("MatMul", 0) + ops.get("FusedMatMul", 0)}
    lat = paired_latency(paths, task.example_input(), runs=runs)
    print(f"{name} ({layers} layers, {seq_len} tokens), {lat['method']}")
    for variant, row in rows.items():
        extra = "" if variant == "float" else (f"; ort vs sim {row['ort_vs_sim']['disabled']:.4f} (off) {row['ort_vs_sim']['default']:.4f} (default); "
                                               f"integer MAC kernels {row['int_mac_kernels']}, float MatMul/FusedMatMul {row['float_matmuls']}")
        print(f"  {variant:10s} metric {row['metric']:.5f}; {paths[variant].stat().st_size / 1e6:.2f} MB; "
              f"p50 {lat[variant]['p50']:.3f} ms p99 {lat[variant]['p99']:.3f} ms{extra}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--tasks", default="hf-minilm-embed,hf-bert")
    ap.add_argument("--seq-len", type=int, default=32, help="tokens per input (attention's share of the work grows with it)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks.split(","):
            measure(name, args.layers, Path(tmp), args.runs, args.seq_len)


if __name__ == "__main__":
    main()
