"""The workbench's int8 files against what a user would pick instead, in one run.

For each model, on the same float model, calibration and eval data: the float ONNX export, the
workbench's W8A8 and W4A8 (packed 4-bit weights) QCDQ exports, and onnxruntime's own quantiser as a
user following its documentation would run it: ``quant_pre_process`` on the float export, then
``quantize_static`` (QDQ, per-channel, onnxruntime's default types: QInt8 activations and QInt8
weights, i.e. S8S8, MinMax calibration over the task's calibration samples) for CNNs, or
``quantize_dynamic`` (per-channel, default QInt8 weights) for transformers (integer token inputs).
``quantize_dynamic`` also stores the embedding tables (its Gather nodes) as int8, so the workbench's
W8A8 and W4A8 quantise them too, at 8 bits with one scale per row (``embedding_bits=8``;
``--embedding-bits float`` keeps them float, ``--embedding-bits 4`` packs them); models without
embedding tables (the CNNs) are unaffected.

Per model it prints the task's metric on the eval split (each file run in onnxruntime, outputs
scored by ``task.score``), file bytes, and p50 / p99 latency at batch 1 on one intra-op thread,
every session at onnxruntime's default optimisation level (ORT_ENABLE_ALL), measured interleaved
(round-robin over the four sessions each iteration, after a warm-up, in one process). It ends with
two lines: ``latency workbench/baseline`` (W8A8 p50 over the baseline's p50, geometric mean over
models) and ``bytes W4A8/W8A8`` (geometric mean), each naming the workbench files' weight encoding
(``--weight-encoding``, default ``auto`` as the workbench's own: s8 on a CPU with VNNI or ARM, else u8).

    .venv/bin/python benchmarks/baselines.py                       # all models
    .venv/bin/python benchmarks/baselines.py --models digits-cnn ic-resnet8 --runs 300
    .venv/bin/python benchmarks/baselines.py --small               # or WORKBENCH_SMALL=1: quick run
    .venv/bin/python benchmarks/baselines.py --models hf-bert --embedding-bits float   # tables left float
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader
from tqdm import tqdm

import workbench as wb
from workbench.export.qcdq import WEIGHT_ENCODING_CHOICES, resolve_weight_encoding
from workbench.tasks.models import count_macs
from workbench.export.verify import as_onnx_input

warnings.filterwarnings("ignore")
MODELS = ("digits-cnn", "ic-resnet8", "kws-dscnn", "hf-resnet18", "hf-bert", "hf-minilm-embed")
WAYS = ("float", "w8a8", "w4a8", "baseline")


def session(path: Path, optimized_path: Path | None = None) -> ort.InferenceSession:
    """onnxruntime at its defaults (ORT_ENABLE_ALL), except one intra-op thread."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ops_run(path: Path) -> str:
    """The node types onnxruntime runs for ``path`` at the same settings (after its graph optimisations)."""
    opt = path.with_suffix(".optimized.onnx")
    session(path, opt)
    counts = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


def run_all(sess: ort.InferenceSession, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    name = sess.get_inputs()[0].name
    arr = as_onnx_input(x)
    return torch.from_numpy(np.concatenate([sess.run(None, {name: arr[i : i + batch]})[0] for i in range(0, len(arr), batch)]))


class CalibReader(CalibrationDataReader):
    """onnxruntime's CalibrationDataReader over the task's calibration samples."""

    def __init__(self, input_name: str, x: torch.Tensor, batch: int = 16):
        arr = as_onnx_input(x)
        self._batches = iter([{input_name: arr[i : i + batch]} for i in range(0, len(arr), batch)])

    def get_next(self):
        return next(self._batches, None)


def user_baseline(task, float_path: Path, tmp: Path) -> tuple[Path, str]:
    """What onnxruntime's docs tell a user to do with the float export."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    quant_pre_process(str(float_path), str(pre))
    out = tmp / "baseline.onnx"
    if torch.is_floating_point(task.example_input()):
        name = session(pre).get_inputs()[0].name
        quantize_static(str(pre), str(out), CalibReader(name, task.data.calib.x), quant_format=QuantFormat.QDQ, per_channel=True)
        return out, "ort quantize_static QDQ per-channel S8S8"
    quantize_dynamic(str(pre), str(out), per_channel=True)
    return out, "ort quantize_dynamic per-channel S8"


def interleaved_latency(sessions: dict[str, ort.InferenceSession], example: torch.Tensor, runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Batch-1 latency of every session, round-robin each iteration (start rotated), p50 / p99 in ms."""
    x = as_onnx_input(example[:1])
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    keys = list(sessions)
    for _ in range(warmup):
        for k in keys:
            sessions[k].run(None, feeds[k])
    times = {k: np.empty(runs) for k in keys}
    for i in range(runs):
        for j in range(len(keys)):
            k = keys[(i + j) % len(keys)]
            t0 = time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k][i] = (time.perf_counter() - t0) * 1e3
    return {k: {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))} for k, t in times.items()}


def bench_model(name: str, runs: int, warmup: int, small: bool, tmp: Path, ops: bool = False, weight_encoding: str = "auto",
                embedding_bits: int | None = 8) -> dict:
    task = wb.create_task(name)
    model = wb.load_or_train_baseline(task, progress=False).eval()  # the full task's float model, also in --small
    if small:
        task = task.small(n_train=64, n_calib=32, n_eval=64)
    example = task.example_input()
    macs = sum(count_macs(model, example).values())
    d = tmp / name
    d.mkdir()
    paths = {"float": wb.export.export_float(model, example, d / "float.onnx"),
             "w8a8": wb.export_qcdq(wb.quantize_task(task, model, wb.QuantSpec.uniform(8, 8, embedding_bits=embedding_bits)), example, d / "w8a8.onnx",
                                    weight_encoding=weight_encoding),
             "w4a8": wb.export_qcdq(wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 8, embedding_bits=embedding_bits)), example, d / "w4a8.onnx",
                                    weight_encoding=weight_encoding)}
    paths["baseline"], how = user_baseline(task, paths["float"], d)
    sessions = {k: session(paths[k]) for k in WAYS}
    ev = task.data.eval
    metric = {k: float(task.score(run_all(s, ev.x), ev)) for k, s in sessions.items()}
    lat = interleaved_latency(sessions, example, runs, warmup)
    return {"name": name, "metric_name": task.metric.name, "macs": macs, "how": how, "metric": metric,
            "bytes": {k: p.stat().st_size for k, p in paths.items()}, "lat": lat,
            "ops": {k: ops_run(p) for k, p in paths.items()} if ops else {}}


def print_row(r: dict) -> None:
    m, b, lat = r["metric"], r["bytes"], r["lat"]
    cells = "  ".join(f"{k} {m[k]:.4f} {b[k]:>10,} B {lat[k]['p50']:.3f}/{lat[k]['p99']:.3f} ms" for k in WAYS)
    tqdm.write(f"{r['name']:12s} {r['macs'] / 1e6:7.2f} M MACs  {r['metric_name']}  {cells}")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="task names (default: all six)")
    ap.add_argument("--runs", type=int, default=500, help="timed iterations per session (default 500)")
    ap.add_argument("--warmup", type=int, default=50, help="untimed iterations per session first (default 50)")
    ap.add_argument("--weight-encoding", choices=WEIGHT_ENCODING_CHOICES, default="auto",
                    help="the workbench files' weight_encoding (default auto, the workbench's own default: s8 where the CPU has VNNI or is ARM, "
                         "else u8, exact on every x86 CPU)")
    ap.add_argument("--embedding-bits", default="8", choices=[str(b) for b in range(2, 9)] + ["float"],
                    help="bits of the workbench files' embedding tables, one scale per row (default 8, as quantize_dynamic; 'float' leaves them float)")
    ap.add_argument("--ops", action="store_true", help="also print the node types onnxruntime runs for each file")
    ap.add_argument("--small", action="store_true", help="quick run: 32 calibration / 64 eval samples (also WORKBENCH_SMALL=1)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        ap.error(f"--runs {args.runs} --warmup {args.warmup}; expected runs >= 1 and warmup >= 0")
    small = args.small or os.environ.get("WORKBENCH_SMALL") == "1"
    encoding = resolve_weight_encoding(args.weight_encoding)
    chosen = f"weight_encoding {encoding}" + (" (auto)" if args.weight_encoding == "auto" else "")
    torch.set_num_threads(1)
    known = set(wb.list_tasks())
    rows = []
    print(f"per way: metric, file bytes, p50/p99 latency (batch 1, one thread, onnxruntime defaults, interleaved);"
          f" workbench {chosen}, embedding_bits={args.embedding_bits}")
    with tempfile.TemporaryDirectory() as t:
        for name in tqdm(args.models, desc="models", leave=False):
            if name not in known:
                tqdm.write(f"{name:12s} skipped: no task of that name is registered yet")
                continue
            r = bench_model(name, args.runs, args.warmup, small, Path(t), args.ops, encoding,
                            None if args.embedding_bits == "float" else int(args.embedding_bits))
            rows.append(r)
            tqdm.write(f"{name:12s} baseline: {r['how']}")
            print_row(r)
            for k, v in r["ops"].items():
                tqdm.write(f"{'':12s} ops run {k:8s} {v}")
    if not rows:
        print("no model ran")
        return rows
    for r in rows:
        m, b, lat = r["metric"], r["bytes"], r["lat"]
        goals = {"W8A8 p50 <= baseline": lat["w8a8"]["p50"] <= lat["baseline"]["p50"],
                 "bytes <= 1.05x baseline": b["w8a8"] <= 1.05 * b["baseline"],
                 "metric >= baseline - 0.1 pt": 100 * (m["w8a8"] - m["baseline"]) >= -0.1}
        if r["macs"] >= 1e6:
            goals["int8 faster than float"] = max(lat["w8a8"]["p50"], lat["w4a8"]["p50"]) < lat["float"]["p50"]
        tqdm.write(f"goals {r['name']:12s} " + "  ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in goals.items())
              + f"  (W8A8/baseline p50 {lat['w8a8']['p50'] / lat['baseline']['p50']:.2f}, bytes {b['w8a8'] / b['baseline']:.2f},"
              f" metric {100 * (m['w8a8'] - m['baseline']):+.3f} pt)")
    gm = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs))
    print(f"latency workbench/baseline: {gm([r['lat']['w8a8']['p50'] / r['lat']['baseline']['p50'] for r in rows]):.3f}  ({chosen})")
    print(f"bytes W4A8/W8A8: {gm([r['bytes']['w4a8'] / r['bytes']['w8a8'] for r in rows]):.3f}  ({chosen})")
    return rows


if __name__ == "__main__":
    main()
