"""Quantise-one sensitivity of a MiniLM-size sentence encoder: the block engine vs the naive loop.

The encoder is ``hf-minilm-embed``'s (transformers BertModel of all-MiniLM-L6-v2's shape: 6
layers, hidden 384, 12 heads, intermediate 1536; 36 Linear layers), on 256 eval sentences of 32
tokens (the task's eval and calibration sentences, targets the float embeddings). fx cannot trace
it, so the workbench runs the block engine: the float outputs of the encoder layers, their
attention / feed-forward parts and the embeddings are cached once; a case reruns only what comes
after the layer's first call. The naive loop builds, calibrates and runs a whole quantised model
per case.

Each way runs in its own process (so peak memory is its own) with 2 torch threads: weights at 4
and 8 bits on every Linear layer, 72 cases. Prints time, peak resident memory (and its growth over
the loaded model and data), the largest metric difference between the two, and the time ratio
naive / engine last.

    .venv/bin/python benchmarks/transformer_sensitivity.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

EVAL_SAMPLES = 256


def child(engine: str) -> None:
    import dataclasses
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    import workbench as wb
    from workbench.tasks.data import Split
    from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

    torch.set_num_threads(2)
    os.environ["WORKBENCH_THREADS"] = "2"
    task = wb.create_task("hf-minilm-embed")
    model = task.create_model().eval()
    d = task.data
    x = torch.cat([d.eval.x, d.calib.x])[:EVAL_SAMPLES]
    with torch.no_grad():
        y = torch.cat([model(x[i : i + 64]) for i in range(0, len(x), 64)])
    task = task.with_data(dataclasses.replace(d, eval=Split(x, y)))
    assert len(task.data.eval.x) == EVAL_SAMPLES
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    df = sensitivity(task, model, SensitivityConfig(weight_bits=(4, 8)), store=False, progress=False, engine=engine)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"engine": sorted(set(df["engine"])), "cases": len(df), "layers": df["layer"].nunique(), "seconds": seconds,
                      "peak_mib": peak / 1024, "growth_mib": (peak - base) / 1024, "threads": torch.get_num_threads(),
                      "metric": df["metric"].tolist(), "sqnr": df["sqnr_db"].tolist()}))


def main() -> None:
    print(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    results = {}
    for engine in ("cut", "naive"):  # "cut" falls to the block engine on this untraceable model
        out = subprocess.run([sys.executable, __file__, "--child", engine], capture_output=True, text=True, check=True)
        results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    fast, naive = results["cut"], results["naive"]
    diff = max(abs(a - b) for a, b in zip(fast["metric"] + fast["sqnr"], naive["metric"] + naive["sqnr"]))
    for label, r in (("block engine", fast), ("naive loop", naive)):
        print(f"{label:12s} {r['cases']} cases over {r['layers']} layers ({', '.join(r['engine'])}, {r['threads']} threads)  {r['seconds']:7.2f} s   "
              f"peak RSS {r['peak_mib']:7.1f} MiB (+{r['growth_mib']:.1f} MiB over the loaded model and data)")
    print(f"max |metric or SQNR difference| {diff:.1e}")
    print(f"time ratio naive / engine: {naive['seconds'] / fast['seconds']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
