"""Recovering low-bit accuracy: plain PTQ against each PTQ algorithm and QAT (with and without
distillation), for ic-resnet8 and kws-dscnn at W4A8 and W4A4, with the time each took.

QAT here is a short schedule (3 epochs, learning rate 1e-4, from the calibrated model); the
tables are what `workbench.analysis.recovery.recovery_table` returns. The last line is the ratio of the
best method's metric to plain PTQ's, averaged over the four tables.

    .venv/bin/python benchmarks/recovery.py
"""

from __future__ import annotations

import warnings

import workbench as wb
from workbench.core.qat import QATConfig
from workbench.analysis.recovery import recovery_table

warnings.filterwarnings("ignore")


def main() -> None:
    ratios = []
    for name in ("ic-resnet8", "kws-dscnn"):
        task = wb.create_task(name)
        model = wb.load_or_train_baseline(task, progress=False)
        for spec in (wb.QuantSpec.uniform(4, 8), wb.QuantSpec.uniform(4, 4)):
            df = recovery_table(task, model, spec, qat=QATConfig(epochs=3), progress=False)
            print(f"\n{name} W{spec.weight_bits}A{spec.act_bits} ({task.metric.name}, {'synthetic' if task.synthetic else 'real'} data)")
            print(df.round(4).to_string(index=False))
            plain = float(df[df.method == "ptq"]["metric"].iloc[0])
            ratios.append(float(df[df.method != "float"]["metric"].max()) / plain)
    print(f"\nbest method / plain PTQ metric ratio (mean over 4 tables): {sum(ratios) / len(ratios):.3f}")


if __name__ == "__main__":
    main()
