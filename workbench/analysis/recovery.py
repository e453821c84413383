"""How much each recovery tool gets back, and at what cost in time: one table per task and spec.

Rows: the float model, plain PTQ (calibration, nearest rounding), each PTQ algorithm on its own
(bias correction, cross-layer equalisation, SmoothQuant-style activation equalisation, GPTQ, GPFQ,
AdaRound learned rounding),
and quantisation-aware training from the plain PTQ model without and with distillation. Each
row: the metric, its change from float, the share of the PTQ drop it recovers, and seconds.
"""

from __future__ import annotations

import time

import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from ..tasks.evaluate import evaluate
from ..export.pipeline import PTQConfig, quantize_task
from ..core.qat import QATConfig, train_qat
from ..core.spec import QuantSpec

PTQ_VARIANTS = {
    "ptq": PTQConfig(),
    "bias_correction": PTQConfig(bias_correction=True),
    "cle": PTQConfig(equalize_iters=2),
    "act_equalization": PTQConfig(act_equalization=0.5),
    "gptq": PTQConfig(weight_rounding="gptq"),
    "gpfq": PTQConfig(weight_rounding="gpfq"),
    "adaround": PTQConfig(weight_rounding="adaround"),
}


def recovery_table(task, model: nn.Module, spec: QuantSpec | dict, *, ptq: dict[str, PTQConfig] | None = None,
                   qat: QATConfig | None = QATConfig(), progress: bool = True) -> pd.DataFrame:
    """One row per method (see the module docstring); ``qat=None`` leaves training out."""
    spec = QuantSpec.parse(spec)
    variants = dict(PTQ_VARIANTS if ptq is None else ptq)
    if "ptq" not in variants:
        variants = {"ptq": PTQConfig(), **variants}
    rows = [{"method": "float", "metric": evaluate(model, task), "seconds": 0.0}]
    steps = len(variants) + (2 if qat is not None else 0)
    bar = tqdm(total=steps, desc=f"recovery {task.name}", disable=not progress)
    for name, config in variants.items():
        t0 = time.perf_counter()
        q = quantize_task(task, model, spec, config)
        rows.append({"method": name, "metric": evaluate(q, task), "seconds": time.perf_counter() - t0})
        bar.update()
    if qat is not None:
        for name, distill in (("qat", False), ("qat+distill", True)):
            t0 = time.perf_counter()
            q = quantize_task(task, model, spec, variants["ptq"])
            q, _ = train_qat(task, model, q, QATConfig(**{**qat.to_dict(), "distill": distill}), progress=False)
            rows.append({"method": name, "metric": evaluate(q, task), "seconds": time.perf_counter() - t0})
            bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    fp, plain = df.loc[0, "metric"], float(df[df.method == "ptq"]["metric"].iloc[0])
    df["delta"] = df["metric"] - fp
    df["recovered"] = (df["metric"] - plain) / (fp - plain) if fp - plain > 1e-12 else float("nan")  # no drop: nothing to recover
    df.loc[0, "recovered"] = float("nan")
    df.attrs.update({"task": task.name, "spec": spec.to_dict(), "metric_name": task.metric.name})
    return df[["method", "metric", "delta", "recovered", "seconds"]]
