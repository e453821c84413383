"""The quantise -> calibrate -> evaluate -> export -> verify flow, as plain functions.

``PTQConfig`` holds parameters only; the calibrated model is what the functions return.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import model_validator
from torch import nn

from ..core.describe import describe
from ..tasks.evaluate import predict
from ..infra.errors import ExportError
from .qcdq import cpu_vnni, resolve_weight_encoding
from .onnx_io import export_float
from .packing import resolve_pack
from .exporters import DEFAULT_FORMATS, PRIMARY, get_exporter, resolve_formats
from ..infra.fileio import inside, sha256_file
from ..tasks.metrics import output_agreement
from ..core.options import Flag, OptionModel, choice, integer, names, number
from ..core.ptq import act_equalization, bias_correction, calibrate, gpxq, learned_rounding
from ..core.quantize import quantize_model
from ..core.spec import QuantSpec
from .verify import paired_latency
from ..infra.determinism import fixed_threads


WEIGHT_ROUNDING = ("nearest", "gptq", "gpfq", "adaround")


class PTQConfig(OptionModel):
    """Post-training quantisation parameters (a recipe's ``ptq:`` section, embedded as is)."""

    section: ClassVar[str] = "ptq"
    calib_samples: integer(1, expected="an integer >= 1, or None for the whole calibration split") | None = 512
    bias_correction: Flag = False
    equalize_iters: integer(0) = 0  # cross-layer equalisation iterations (0 = off)
    batch_size: integer(1) = 128
    act_equalization: number("an alpha in (0, 1) or None", gt=0, lt=1) | None = None  # SmoothQuant alpha; None = off
    weight_rounding: choice(WEIGHT_ROUNDING) = "nearest"  # layer by layer against calibration data
    rounding_iters: integer(1, expected="a positive integer") = 500  # adaround: optimisation steps per layer
    rounding_layers: names() | None = None  # adaround: names or globs of the layers to round (None = all)

    @model_validator(mode="after")
    def _layers_need_adaround(self):
        if self.rounding_layers is not None and self.weight_rounding != "adaround":
            raise ValueError(f"rounding_layers applies to weight_rounding 'adaround'; got weight_rounding {self.weight_rounding!r}")
        return self


@fixed_threads()
def quantize_task(task, float_model: nn.Module, spec: QuantSpec | dict | None = None, ptq: PTQConfig = PTQConfig(), progress: bool = False) -> nn.Module:
    """A calibrated Brevitas model of ``float_model`` under ``spec``, with the PTQ steps ``ptq`` asks for
    (activation equalisation, cross-layer equalisation, calibration, GPTQ / GPFQ / AdaRound, bias correction)."""
    x = task.data.calib.x if ptq.calib_samples is None else task.data.calib.x[: ptq.calib_samples]
    if ptq.act_equalization is not None:
        import copy

        float_model = act_equalization(copy.deepcopy(float_model), x, ptq.act_equalization, ptq.batch_size, progress)
    qmodel = quantize_model(float_model, spec, equalize_iters=ptq.equalize_iters, example_input=task.example_input(8))
    calibrate(qmodel, x, batch_size=ptq.batch_size, progress=progress)
    if ptq.weight_rounding == "adaround":
        learned_rounding(qmodel, x, iters=ptq.rounding_iters, layers=ptq.rounding_layers, progress=progress)
    elif ptq.weight_rounding != "nearest":
        gpxq(qmodel, x, ptq.weight_rounding, ptq.batch_size, progress)
    if ptq.bias_correction:
        bias_correction(qmodel, x, batch_size=ptq.batch_size, progress=progress)
    return qmodel


def evaluate_quantized(task, float_model: nn.Module, qmodel: nn.Module, fp_outputs: torch.Tensor | None = None) -> dict:
    """Task metric of the float and the quantised model on the eval split, sizes and agreement."""
    split = task.data.eval
    fp_out = predict(float_model, split.x) if fp_outputs is None else fp_outputs
    q_out = predict(qmodel, split.x)
    table = describe(qmodel)
    cmp = output_agreement(q_out, fp_out, task.kind)
    return {
        "fp_metric": task.score(fp_out, split),
        "quant_metric": task.score(q_out, split),
        "quant_fp_agreement": cmp["agreement"],
        "quant_sqnr_db": cmp["sqnr_db"],
        "weight_bytes_fp": int(table["weight_bytes_fp"].sum()),
        "weight_bytes_quant": int(table["weight_bytes"].sum()),
        "layers": table,
        "sim_outputs": q_out,
    }


def export_and_verify(task, qmodel: nn.Module, out_dir: str | Path, stem: str = "model", *, formats=DEFAULT_FORMATS, qonnx: bool | None = None,
                      float_onnx: str | Path | None = None, latency_runs: int = 200, qonnx_samples: int = 64,
                      sim_outputs: torch.Tensor | None = None, weight_encoding: str = "auto", float_model: nn.Module | None = None,
                      fp_outputs: torch.Tensor | None = None, pack: bool | str = True) -> dict:
    """Export ``qmodel`` in each of ``formats`` (names from :mod:`workbench.export.exporters`, default
    QCDQ and QONNX), verify each file against the simulation, and measure the QCDQ file's latency.

    The QCDQ export is required: the summary's primary keys (``onnx_path``, ``onnx_sha256``,
    ``onnx_metric``, ``latency_ms_*``) come from it; other exporters add their own keys
    (``qonnx_agreement``, ``qonnx_path``, ...). ``qonnx`` is the deprecated boolean alias of old
    callers (False: no QONNX). Unknown names, a format an exporter cannot carry (a number format
    of :mod:`workbench.core.formats` its entry does not list, named with the layer) and a missing
    ``float_onnx`` each raise a one-line :class:`ExportError` before any file is written.
    ``float_model`` (and its eval outputs ``fp_outputs``) feed the ``float`` exporter, which
    reuses ``float_onnx`` when given. Each exporter adds ``<name>_verified``: False (with
    ``<name>_unverified_reason``) where no runtime here runs the file.
    ``weight_encoding`` (``u8``, ``s8`` or ``auto``: s8 where this CPU has VNNI or is ARM) is
    resolved once; the result records it (``weight_encoding``) and the probe (``cpu_vnni``).
    ``pack`` (True / ``"int4"``, the default: weights of at most 4 bits two a byte in QCDQ, integer
    weights at their bit width in QONNX; False / ``"none"``: int8 containers in QCDQ, float weights
    in QONNX) goes to every exporter; the result records it (``pack``).
    The float and QCDQ files' latencies are measured together (:func:`~workbench.export.verify.paired_latency`:
    one process, interleaved, onnxruntime's default level), described by ``latency_method``.
    """
    vnni = cpu_vnni()
    encoding = resolve_weight_encoding(weight_encoding, vnni=vnni)  # a bad value fails before any file is written
    pack = resolve_pack(pack)  # likewise
    names = resolve_formats(formats, qonnx=qonnx)
    if float_onnx is not None and not Path(float_onnx).is_file():
        raise ExportError(f"float_onnx {str(float_onnx)!r} does not exist; pass the float model's ONNX file (export_float_model) or None")
    exporters = [get_exporter(n) for n in names]
    for exporter in exporters:
        exporter.check(qmodel)
        if getattr(exporter, "needs_float_model", False) and float_model is None:
            raise ExportError(f"export format {exporter.name!r} exports the float model: pass float_model= to export_and_verify")
    example = task.example_input()
    # artifacts / rows: what the exporters before this one wrote and measured (a Vela target
    # compiles the tflite-int8 file and quotes its rows)
    options = {"weight_encoding": encoding, "sim_outputs": sim_outputs, "qonnx_samples": qonnx_samples, "float_model": float_model,
               "fp_outputs": fp_outputs, "float_onnx": float_onnx, "pack": pack, "latency_runs": latency_runs,
               "artifacts": {}, "rows": {}}
    result: dict = {"weight_encoding": encoding, "cpu_vnni": vnni, "pack": pack, "latency_method": None}  # first: the old keys keep their order
    for exporter in exporters:
        path = exporter.export(qmodel, example, inside(out_dir, f"{stem}{exporter.suffix}"), task=task, **options)
        options["artifacts"][exporter.name] = path
        verified = exporter.verify(path, qmodel, task, **options)
        options["rows"].update({k: v for k, v in verified.items() if isinstance(v, dict) and "@" in k})
        result.update(verified)
        result.setdefault(f"{exporter.name}_verified", True)
        result[exporter.path_key] = path.name
        if exporter.name == PRIMARY:
            result["onnx_sha256"] = sha256_file(path)
            files = {"quant": path} if result[f"{PRIMARY}_verified"] else {}  # no runtime here runs it: no latency either
            if float_onnx is not None:
                files["fp"] = float_onnx
            # float and quantised in the same process, interleaved, each at onnxruntime's default level
            lat = paired_latency(files, example, runs=latency_runs) if files else {}
            for name in ("quant", "fp"):
                if name in files or name == "quant":
                    got = lat.get(name, {})
                    result[f"latency_ms_p50_{name}"], result[f"latency_ms_p99_{name}"] = got.get("p50"), got.get("p99")
                    if name == "quant" and got:
                        result["latency_ms_max_quant"], result["latency_jitter_quant"] = got["max"], got["p99"] / got["p50"]
            result["latency_method"] = lat.get("method")
    return result


def export_float_model(task, float_model: nn.Module, out_dir: str | Path, stem: str = "model_fp32") -> Path:
    return export_float(float_model, task.example_input(), inside(out_dir, f"{stem}.onnx"))


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 3)
