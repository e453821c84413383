"""Search in the target's own units: bits-only search and width + bits search against uniform 8-bit,
at the target's latency, on each task and target.

Per task: the cached float baseline, a quantise-one sensitivity sweep at weight bits 8/4/2. Per
target (``ethos-u55-128``: Vela's cycles at its clock; ``onnxruntime``: this CPU, one thread,
batch 1): the per-layer cost table (uniform builds, validated on ``--validate`` seeded mixed
points: the additive estimate's relative error against the target's own number), then

- bits-only search (ILP over the table, every candidate built and measured on the target) and the
  best measured point within the latency of uniform 8-bit (``L8``, the target's own number), and
  within 0.7 x L8 (often none: on x86 every width below 8 bits runs the same int8 kernel, and on
  the Ethos-U narrower codes only shorten the weight stream);
- width + bits search (Optuna NSGA-II over per-stage channel widths, pruned and fine-tuned, and
  per-layer bits; every trial measured on the target) under a 0.7 x L8 budget, and its best
  trial within L8 (the same latency as the bits-only comparison);
- pruning-only: the same width search with every layer at 8 bits.

One line per task and target, the ratios last:

    PYTHONPATH=. python benchmarks/hardware_search.py [--tasks kws-dscnn,ic-resnet8] [--targets ethos-u55-128,onnxruntime]
        [--trials 16] [--finetune-epochs 6] [--widths 1.0,0.75,0.5] [--small]

Latency on ``onnxruntime`` is this machine's (probe printed first); Vela's is its cycle estimate.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import workbench as wb
from workbench.infra.errors import SpecError
from workbench.search.config import SearchConfig
from workbench.search.front import best_within
from workbench.search.precision import search
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

BITS = (8, 4, 2)


def _profile(folder: Path, bits) -> str:
    path = folder / "bits.yaml"
    path.write_text(f"name: bench\nweight_bits: [{', '.join(map(str, sorted(bits)))}]\nact_bits: [8]\ncost: weight_kib\nbudgets: {{}}\n")
    return str(path)


def _best(points, budget: float):
    try:
        return best_within(points, budget, "latency_ms")
    except SpecError:
        return None


def run(task_name: str, targets: list[str], trials: int, epochs: int, small: bool, n_validate: int, tmp: Path,
        width_choices: tuple[float, ...] = (1.0, 0.75, 0.5)) -> list[str]:
    task = wb.create_task(task_name)
    task = task.small() if small else task
    model = wb.load_or_train_baseline(task, seed=0, progress=False)
    sens = sensitivity(task, model, SensitivityConfig(weight_bits=BITS), progress=False)
    fp = float(sens.attrs["fp_metric"])
    lines = []
    for target in targets:
        t0 = time.perf_counter()
        source = wb.search.get_cost_source(target)
        bits = tuple(b for b in BITS if not source.supported_bits or b in source.supported_bits)
        table = wb.search.build_cost_table(task, model, target, bits=bits, n_validate=n_validate, seed=0, progress=False)
        t_table = time.perf_counter() - t0
        err = table.validation[table.validation["kind"] == "latency_ms"]["error"]
        l8 = float(table.totals.set_index("weight_bits").loc[8, "latency_ms"])  # the table's uniform 8-bit build: the width budget
        folder = tmp / f"{task_name}-{target}"
        folder.mkdir(parents=True, exist_ok=True)
        config = SearchConfig(target=_profile(folder, bits), budget_kind="latency_ms", n_budgets=5, n_random=0, latency_runs=0,
                              uniform_bits=bits)
        t0 = time.perf_counter()
        points = search(task, model, sens, config, cost_table=table, progress=False)
        t_search = time.perf_counter() - t0
        u8 = points[points["kind"] == "uniform-8"].iloc[0]
        l8 = float(u8["latency_ms"])  # uniform 8-bit as the search measured it (onnxruntime: the same run's noise)
        at1, at07 = _best(points, l8), _best(points, 0.7 * l8)
        cheapest = float(points.loc[points["within_budgets"], "latency_ms"].min())
        def pt(row) -> str:
            return "none" if row is None else f"{row['measured_metric']:.4f} @ {row['latency_ms'] / l8:.2f}x"

        def best(rows, limit):
            fit = rows[rows["latency_ms"] <= limit * (1 + 1e-12)].sort_values(["measured_metric", "latency_ms"], ascending=[False, True])
            return None if fit.empty else fit.iloc[0]

        arms, t_width = {}, 0.0
        for arm, arm_bits in (("width+bits", bits[:2]), ("pruning-only", (8,))):
            t0 = time.perf_counter()
            rows = wb.search.width_search.width_search(task, model, out=folder / arm, bits=arm_bits, widths=width_choices, n_trials=trials, objective_kind="latency_ms",
                                   target=target, budgets={"latency_ms": 0.7 * l8}, finetune_epochs=epochs, seed=0, progress=False)
            t_width += time.perf_counter() - t0
            arms[arm] = rows[rows["state"] == "COMPLETE"] if "state" in rows else rows
        done = arms["width+bits"]
        w1m, w07m = best(done, l8), best(done, 0.7 * l8)
        p1, p07 = best(arms["pruning-only"], l8), best(arms["pruning-only"], 0.7 * l8)
        fastest = done.sort_values("latency_ms").iloc[0] if len(done) else None
        drop07 = "" if w07m is None else f" (drop {100 * (fp - w07m['measured_metric']):.1f} pt)"

        def ratio(a, b) -> float:
            return a["measured_metric"] / b["measured_metric"] if a is not None and b is not None else math.nan

        lines.append(
            f"{task_name} {target}: float {fp:.4f}; uniform-8 {u8['measured_metric']:.4f} at {l8:.4f} ms | "
            f"within L8: bits-only {pt(at1)}, width+bits {pt(w1m)}, pruning-only {pt(p1)} | within 0.7x L8: bits-only {pt(at07)} "
            f"(cheapest bits-only point {cheapest / l8:.2f}x), width+bits {pt(w07m)}{drop07} (fastest trial {pt(fastest)}), "
            f"pruning-only {pt(p07)} | table error median {100 * err.median():.1f}% max {100 * err.max():.1f}% | "
            f"time: table {t_table:.0f} s, search {t_search:.0f} s ({len(points)} points), width searches {t_width:.0f} s (2 x {len(done)} trials) | "
            f"ratios: bits-only/uniform-8 within L8 {ratio(at1, u8):.3f}, width+bits/bits-only within L8 {ratio(w1m, at1):.3f}, "
            f"width+bits/pruning-only within 0.7x L8 {ratio(w07m, p07):.3f}")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="kws-dscnn,ic-resnet8")
    ap.add_argument("--targets", default="ethos-u55-128,onnxruntime")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--finetune-epochs", type=int, default=6)
    ap.add_argument("--widths", default="1.0,0.75,0.5", help="the width choices of each stage")
    ap.add_argument("--validate", type=int, default=5, help="mixed points the cost tables are validated on")
    ap.add_argument("--small", action="store_true", help="the tasks' small subsets (quick)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from workbench.targets.tflite import quiet_toolchain_logs

    quiet_toolchain_logs()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch threads {__import__('torch').get_num_threads()}; "
          f"ethos-u55-128 latency = Vela cycles at its clock, onnxruntime latency = this CPU, 1 thread", flush=True)
    lines = []
    with tempfile.TemporaryDirectory(prefix="wb-hwsearch-") as tmp:
        for name in args.tasks.split(","):
            lines += run(name, args.targets.split(","), args.trials, args.finetune_epochs, args.small, args.validate, Path(tmp),
                         tuple(float(w) for w in args.widths.split(",")))
    print("\n".join(["# summary", *lines]))


if __name__ == "__main__":
    main()
