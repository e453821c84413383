"""Running a ``.tflite`` file: ai-edge-litert (:class:`LiteRTRunner`) and TFLite Micro
(:class:`MicroRunner`), the arena bytes TFLite Micro needs (bisection), the cost model's
peak-activation estimate beside it, and the intermediate tensors per workbench layer
(:func:`tflite_layer_outputs`)."""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...infra.errors import ToolchainError
from .flatbuffer import _layers_from_names, layer_tensor_map
from .layers import _layer_settings, _nan_none, _one_line, _stderr_to_null, quant_layers


# ----------------------------------------------------------------------------- runtimes


def _qparams(detail: dict) -> tuple[float, int]:
    """(scale, zero point) of an interpreter's tensor detail (ai-edge-litert or TFLite Micro)."""
    if "quantization" in detail:
        return detail["quantization"]
    q = detail.get("quantization_parameters") or {}
    scales, zps = q.get("scales", []), q.get("zero_points", [])
    return (float(scales[0]), int(zps[0])) if len(scales) else (0.0, 0)


def _quantise_input(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zp = _qparams(detail)
    if detail["dtype"] == np.float32 or not scale:
        return x.astype(np.float32)
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(detail["dtype"])


def _dequantise(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zp = _qparams(detail)
    if detail["dtype"] == np.float32 or not scale:
        return y.astype(np.float32)
    return (y.astype(np.float32) - zp) * scale


class LiteRTRunner:
    """ai-edge-litert's interpreter on the file, one thread, batch 1."""

    def __init__(self, path, preserve: bool = False):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # preserve=True warns it is for debugging: that is its use here
                with _stderr_to_null():  # "INFO: Created TensorFlow Lite XNNPACK delegate" (C++)
                    self.it = Interpreter(str(path), num_threads=1, experimental_preserve_all_tensors=preserve)
            self.it.allocate_tensors()
        except Exception as exc:
            raise ToolchainError(f"ai-edge-litert could not load {Path(path).name}: {_one_line(exc)}") from None
        self.inp, self.out = self.it.get_input_details()[0], self.it.get_output_details()[0]

    def set(self, x: np.ndarray):
        self.it.set_tensor(self.inp["index"], _quantise_input(x, self.inp).reshape(self.inp["shape"]))

    def invoke(self):
        self.it.invoke()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.set(x)
        self.invoke()
        return _dequantise(self.it.get_tensor(self.out["index"]), self.out)


class MicroRunner:
    """TFLite Micro's Python interpreter on the file with ``arena_size`` bytes of tensor arena."""

    def __init__(self, path, arena_size: int):
        from tflite_micro.python.tflite_micro import runtime

        self.path = Path(path)
        with _stderr_to_null():
            self.it = runtime.Interpreter.from_file(str(path), arena_size=int(arena_size))
        self.inp, self.out = self.it.get_input_details(0), self.it.get_output_details(0)

    def set(self, x: np.ndarray):
        self.it.set_input(_quantise_input(x, self.inp).reshape(self.inp["shape"]), 0)

    def invoke(self):
        self.it.invoke()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.set(x)
        self.invoke()
        return _dequantise(self.it.get_output(0), self.out)


def micro_allocations(path: str | os.PathLike, x: np.ndarray, arena_size: int) -> dict[str, int]:
    """TFLite Micro's allocation report after one run of ``x`` with ``arena_size`` bytes:
    ``{"total", "head", "tail"}`` bytes (head: the planned, non-persistent buffers, i.e. activations
    and scratch; tail: persistent data, i.e. tensor structs, per-channel multipliers, op data).
    Empty where the report cannot be read."""
    import sys

    runner = MicroRunner(path, arena_size)
    runner(x)
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = os.dup(2)
        try:
            os.dup2(log.fileno(), 2)
            runner.it.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        text = log.read().decode(errors="replace")
    out = {}
    for key in ("total", "head", "tail"):
        m = re.search(rf"Arena allocation {key} (\d+) bytes", text)
        if m:
            out[key] = int(m.group(1))
    return out


def micro_arena_bytes(path: str | os.PathLike, x: np.ndarray, step: int = 16, limit: int | None = None) -> int:
    """The smallest TFLite Micro ``arena_size`` (to ``step`` bytes) with which the file allocates
    and runs ``x`` (one sample): found by bisection between 1 KiB and 64 x the file size (the
    search gives up past ``limit`` bytes, default 2 GiB)."""

    def works(n: int) -> bool:
        try:
            with _stderr_to_null():
                r = MicroRunner(path, n)
                r(x)
            return True
        except Exception:
            return False

    lo, hi = 0, max(1024, 64 * os.path.getsize(path))
    while not works(hi):
        if hi > (limit or 2 ** 31):
            raise ToolchainError(f"tflite-micro could not run {Path(path).name} with any arena up to {hi} bytes")
        lo, hi = hi, hi * 4
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            break
        if works(mid):
            hi = mid
        else:
            lo = mid
    return int(hi)


def peak_act_estimate_bytes(qmodel: nn.Module, example: torch.Tensor, float_model: nn.Module | None = None) -> int:
    """The workbench cost model's peak-activation estimate (``peak_act_kib``, in bytes): the largest
    layer input + output at the layer's activation bits."""
    from ...core.cost import cost_table, layer_costs, totals

    model = float_model if float_model is not None else qmodel
    costs = layer_costs(model, example)
    settings = _layer_settings(qmodel)
    wbits = {n: _nan_none(settings.get(n, {}).get("weight_bits")) for n in costs}
    abits = {n: _nan_none(settings.get(n, {}).get("act_bits")) for n in costs}
    wbits = {n: (None if v is None else int(v)) for n, v in wbits.items()}
    abits = {n: (None if v is None else int(v)) for n, v in abits.items()}
    return int(totals(cost_table(costs, wbits, abits))["peak_act_bytes"])


def _plain(out) -> torch.Tensor:
    return out.value if hasattr(out, "value") else out


def tflite_layer_outputs(path, x, qmodel=None) -> dict[str, np.ndarray]:
    """See :meth:`TFLiteInt8Target.layer_outputs`. Layers come from ``qmodel`` when given, else
    from the module paths found in the file's op output names."""
    layers = list(quant_layers(qmodel)) if qmodel is not None else None
    runner = LiteRTRunner(path, preserve=True)
    tensors = {d["name"]: d for d in runner.it.get_tensor_details()}
    if layers is None:
        layers = _layers_from_names(path)
    mapping = layer_tensor_map(path, layers)
    xn = x.float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    out: dict[str, list] = {k: [] for k in mapping}
    for i in range(len(xn)):
        runner(xn[i:i + 1])
        for layer, tname in mapping.items():
            d = tensors[tname]
            v = runner.it.get_tensor(d["index"])
            q = d["quantization_parameters"]
            if d["dtype"] != np.float32 and len(q["scales"]):
                v = (v.astype(np.float32) - q["zero_points"][0]) * q["scales"][0]
            v = np.asarray(v, dtype=np.float32)
            if v.ndim == 4:
                v = np.moveaxis(v, -1, 1)  # NHWC -> NCHW
            elif v.ndim == 3:
                v = np.moveaxis(v, -1, 1)
            out[layer].append(v[0])
    result = {k: np.stack(v) for k, v in out.items()}
    if qmodel is not None:  # the simulation's shapes (a Conv1d runs as a 2-D convolution of height 1 in the file)
        shapes = _layer_shapes(qmodel, x[:1] if isinstance(x, torch.Tensor) else torch.from_numpy(xn[:1]))
        for k, v in result.items():
            want = shapes.get(k)
            if want is not None and v.shape[1:] != want and int(np.prod(v.shape[1:])) == int(np.prod(want)):
                result[k] = v.reshape(len(v), *want)
    return result


def _layer_shapes(qmodel: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """``{layer: output shape without the batch}`` of the simulation on ``x``."""
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: shapes.__setitem__(n, tuple(_plain(o).shape[1:])))
             for n, m in quant_layers(qmodel).items()]
    try:
        with torch.no_grad():
            qmodel.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes
