"""The ``tflite-int8`` deployment target (:class:`TFLiteInt8Target`), registered in the exporter
registry when this module is imported; it imports no toolchain and no torch until it works."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ...infra.errors import ToolchainError
from ...export.exporters import DEPLOYMENT_COLUMNS, Target, register_exporter

if TYPE_CHECKING:
    import torch


# ----------------------------------------------------------------------------- the target


@register_exporter
class TFLiteInt8Target(Target):
    """``tflite-int8``: see :mod:`workbench.targets.tflite` for how the file is built and what is carried."""

    name, suffix = "tflite-int8", ".int8.tflite"
    carries = ("int8 / int16 (A16W8) activations, 2- to 8-bit weights per layer (4-bit as INT4, 2/3/5/6/7-bit in int8 containers), "
               "float layers left float; batch 1")
    max_bits = 16
    verified_by = "ai-edge-litert and tflite-micro (eval split or first n samples; arena bytes by bisection)"
    description = "integer TFLite for microcontrollers (TFLite Micro operators), simulation's scales carried"
    requires = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro")
    runtime = "ai-edge-litert, tflite-micro"

    def support(self, qmodel):
        from .layers import support_table

        return support_table(qmodel)

    def check(self, qmodel):
        Target.check(self, qmodel)

    def export(self, qmodel, example, path, float_model=None, task=None, carry_scales: bool = True, calib=None, **options) -> Path:
        """:func:`export_tflite_int8` after :meth:`check` (one-line errors before any work).
        ``calib``: calibration inputs (default: ``task``'s calibration split, else ``example``).
        The export's report (carried / calibrated tensors, op plan, float ops) is kept as
        ``last_report``."""
        from .convert import export_tflite_int8

        self.check(qmodel)
        if calib is None and task is not None:
            calib = task.data.calib.x
        report = export_tflite_int8(qmodel, float_model, example, path, calib=calib, carry_scales=carry_scales)
        self.last_report = report
        return report["path"]

    def evaluate(self, path, qmodel, task, n: int | None = None, latency_runs: int = 100, float_model=None,
                 sim_outputs: torch.Tensor | None = None, micro_latency: bool = True, **options) -> list[dict]:
        """Two rows (``ai-edge-litert``, ``tflite-micro``) of :data:`DEPLOYMENT_COLUMNS` on the
        eval split (its first ``n`` samples when given), compared with the simulation."""
        import numpy as np
        import torch

        from ...tasks.metrics import output_agreement
        from .flatbuffer import layer_types
        from .layers import _one_line, quant_layers
        from .runtime import LiteRTRunner, MicroRunner, _plain, micro_allocations, micro_arena_bytes, peak_act_estimate_bytes

        from ...export.verify import time_runs

        self.available()
        path = Path(path)
        split = task.data.eval
        x = split.x if n is None else split.x[:n]
        y = split.y if n is None else split.y[:n]
        from ...tasks.data import Split

        sub = Split(x, y) if n is not None else split
        if sim_outputs is None:
            with torch.no_grad():
                sim = torch.cat([_plain(qmodel.eval()(x[i:i + 256])) for i in range(0, len(x), 256)]).float().numpy()
        else:
            sim = sim_outputs[: len(x)].float().numpy()
        xn = x.float().numpy()
        example = task.example_input()
        estimate = peak_act_estimate_bytes(qmodel, example, float_model)
        file_bytes = path.stat().st_size
        import platform

        cpu = platform.processor() or platform.machine()
        rows = []
        lite = LiteRTRunner(path)
        int4 = any(t == "int4" for types in layer_types(path, list(quant_layers(qmodel))).values() for t in types.values())
        try:
            arena = micro_arena_bytes(path, xn[:1], limit=max(1 << 24, 16 * file_bytes) if int4 else None)
            micro = MicroRunner(path, arena)
        except Exception as exc:
            if not int4:
                raise ToolchainError(f"tflite-micro could not load {path.name}: {_one_line(exc)}") from None
            # TFLite Micro's kernels here take int8 weights: the file runs in ai-edge-litert only
            micro, arena, why = None, None, f"TFLite Micro cannot allocate a file with int4 weights ({_one_line(exc)}); ai-edge-litert runs it"
        try:
            alloc = micro_allocations(path, xn[:1], arena) if micro is not None else {}
        except Exception:  # the report is a by-product: the bisection's figure stands without it
            alloc = {}
        ram_source = "TFLite Micro arena: smallest arena_size (16-byte steps, bisection) that allocates and invokes"
        if {"total", "head", "tail"} <= set(alloc):
            ram_source += (f"; its allocation report: {alloc['total']} B = {alloc['head']} B planned tensors and scratch "
                           f"(the activations the estimate prices) + {alloc['tail']} B persistent (tensor structs, per-channel multipliers, op data)")
        scale = lite.out["quantization"][0] or float("nan")
        for runtime, runner in (("ai-edge-litert", lite), ("tflite-micro", micro)):
            if runner is None:
                row = {k: None for k in DEPLOYMENT_COLUMNS}
                row.update(target=self.name, runtime=runtime, file_bytes=file_bytes, artifact=path.name, unsupported=why, peak_act_estimate_bytes=estimate)
                rows.append(row)
                continue
            try:
                outs = np.stack([runner(xn[i:i + 1]).reshape(sim.shape[1:]) for i in range(len(xn))])
            except Exception as exc:
                raise ToolchainError(f"{runtime} failed to run {path.name}: {_one_line(exc)}") from None
            row = {k: None for k in DEPLOYMENT_COLUMNS}
            row.update(target=self.name, runtime=runtime, samples=len(xn), file_bytes=file_bytes, artifact=path.name,
                       metric=float(task.score(torch.from_numpy(outs), sub)),
                       agreement=output_agreement(outs, sim, task.kind)["agreement"],
                       max_lsb_diff=None if math.isnan(scale) else float(np.abs(outs - sim).max() / scale),
                       ram_bytes=arena if runtime == "tflite-micro" else None, ram_source=ram_source if runtime == "tflite-micro" else None,
                       peak_act_estimate_bytes=estimate, ram_vs_estimate=arena / estimate if estimate and arena and runtime == "tflite-micro" else None)
            if latency_runs and (runtime == "ai-edge-litert" or micro_latency):
                x1 = xn[:1]
                # each timed run sets the input, then invokes (as onnxruntime's run feeds it): an
                # invoke on an unchanged input measured 2.5 us on digits-cnn, too little to be a recompute
                lat = time_runs(lambda: (runner.set(x1), runner.invoke()), runs=latency_runs, warmup=min(10, latency_runs))
                row.update(lat)
                row["latency_source"] = f"measured on this CPU ({cpu}; {runtime}{', num_threads=1' if runtime == 'ai-edge-litert' else ', host build of TFLite Micro reference kernels'})"
            rows.append(row)
        return rows

    def layer_outputs(self, path, x, qmodel=None) -> dict:
        """``{workbench layer: float numpy array (NCHW)}``: the file's per-layer op outputs on ``x``
        (one or more samples), dequantised, keyed by layer name (:func:`layer_tensor_map`)."""
        from .runtime import tflite_layer_outputs

        return tflite_layer_outputs(path, x, qmodel)
