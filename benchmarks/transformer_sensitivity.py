"""Quantise-one sensitivity over a 6-layer BERT-style encoder: the swap engine vs the naive loop.

The encoder (transformers BertForSequenceClassification, hidden 128, 6 layers: 38 Linear layers,
random init, sequences of 32 token ids) cannot be traced by fx, so the workbench runs the swap
engine: the float model runs whole per case with only the layer under test replaced; nothing is
cached between cases (activations are recomputed), so memory stays that of one model and one
batch. The naive loop builds, calibrates and runs a whole quantised model per case.

Each way runs in its own process (so peak memory is its own): weights at 4 and 8 bits on every
Linear layer, 76 cases. Prints time, peak resident memory (and its growth over the loaded
model), the largest metric difference between the two, and the time ratio naive / swap last.

    .venv/bin/python benchmarks/transformer_sensitivity.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def child(engine: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    import workbench as wb
    from workbench.sensitivity import SensitivityConfig, sensitivity

    torch.set_num_threads(2)
    task = wb.create_task("hf-bert")
    model = wb.load_or_train_baseline(task, progress=False)
    task.data  # noqa: B018 - build the data (and its float targets) before measuring
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    df = sensitivity(task, model, SensitivityConfig(weight_bits=(4, 8)), store=False, progress=False, engine=engine)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"engine": sorted(set(df["engine"])), "cases": len(df), "seconds": seconds, "peak_mib": peak / 1024,
                      "growth_mib": (peak - base) / 1024, "metric": df["metric"].tolist()}))


def main() -> None:
    results = {}
    for engine in ("cut", "naive"):  # "cut" falls to the swap engine on this untraceable model
        out = subprocess.run([sys.executable, __file__, "--child", engine], capture_output=True, text=True, check=True)
        results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    swap, naive = results["cut"], results["naive"]
    diff = max(abs(a - b) for a, b in zip(swap["metric"], naive["metric"]))
    for label, r in (("swap engine", swap), ("naive loop", naive)):
        print(f"{label:12s} {r['cases']} cases ({', '.join(r['engine'])})  {r['seconds']:7.2f} s   peak RSS {r['peak_mib']:7.1f} MiB "
              f"(+{r['growth_mib']:.1f} MiB over the loaded model)")
    print(f"max |metric difference| {diff:.1e}")
    print(f"time ratio naive / swap: {naive['seconds'] / swap['seconds']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
