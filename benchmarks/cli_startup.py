"""How long the ``workbench`` command takes to answer when it has nothing to compute.

Times, as fresh subprocesses (what a user waits for at the shell), ``workbench --help`` and
``workbench targets`` against importing the whole package, what every command paid before the CLI
imported lazily: every name of ``workbench.__all__`` (torch, Brevitas, onnx, onnxruntime,
transformers), the exporter registry and the tflite target's converter and runtimes (the
toolchains). The three commands are interleaved, ``--runs`` rounds of each,
so that a busy machine slows them alike; it prints each run's wall time, the medians, and last the
ratio of the full import's median to each command's. A report, not a promise: the numbers depend on
the CPU, the disk cache and what else runs on the machine.

    .venv/bin/python benchmarks/cli_startup.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "workbench --help": [sys.executable, "-m", "workbench.cli", "--help"],
    "workbench targets": [sys.executable, "-m", "workbench.cli", "targets"],
    "import workbench (full)": [sys.executable, "-c", "import workbench as wb; [getattr(wb, n) for n in wb.__all__]; wb.list_exporters(); "
                                "import workbench.targets.tflite.convert, workbench.targets.tflite.runtime"],
}


def wall_time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds; each runs every command once (interleaved)")
    args = parser.parse_args()
    for argv in COMMANDS.values():  # warm the disk cache: the first run of each is not timed
        wall_time(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for i in range(args.runs):
        for name, argv in COMMANDS.items():
            times[name].append(wall_time(argv))
        print(f"round {i + 1}: " + ", ".join(f"{name} {t[-1]:.2f} s" for name, t in times.items()), flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, m in medians.items():
        print(f"median {name:26s} {m:.2f} s")
    full = medians["import workbench (full)"]
    print("ratio (full import / command): " + ", ".join(f"{name} {full / medians[name]:.1f}x" for name in COMMANDS if not name.startswith("import")))


if __name__ == "__main__":
    main()
