"""The ``tflite-int8`` deployment target: an integer TFLite flatbuffer (TFLite Micro operators)
that carries the workbench's per-layer choices, run in ai-edge-litert and in TFLite Micro.

How the file is built (:func:`export_tflite_int8`):

1. A *carrier* float model: the float model with every BatchNorm the simulation folded replaced
   by an Identity, and every quantised Conv/Linear given the simulation's folded weights,
   **dequantised** (``quant_weight()``: integer codes times the Brevitas scale) and its bias. The
   weights a converter sees thus lie exactly on the simulation's grid.
2. ``litert_torch`` converts the carrier to a float ``.tflite`` (in a temporary folder).
3. ``ai_edge_quantizer`` (AEQ) quantises it with one configuration per op (:func:`op_plan`):
   weights per-channel (or per-tensor) symmetric at the layer's weight bits (8 or packed 4),
   activations int8 (asymmetric) or int16 (symmetric, A16W8: the ops writing the tensor an A16
   layer reads write int16 too, so the layer reads 16-bit data); layers the spec leaves float,
   and the pooling / reshaping ops in front of them, stay float (AEQ ``NO_QUANTIZE``). AEQ's
   weight scales are max|w| / (2^(b-1)-1) per channel, the rule of Brevitas's narrow-range
   AbsMax weight quantisers: on the carrier's weights they are the simulation's scales and codes.
4. Activation ranges are **carried** from the simulation, not re-calibrated. AEQ calibrates first
   (so every tensor has a range); then each activation tensor of the float file is matched to
   the Brevitas activation quantiser whose output it is (:func:`match_tensors`: the quantiser of
   the module the tensor is named after, or the closest output of the same size, NCHW or
   channels-last, over a few calibration samples; a quantiser shared by several tensors, as at a
   residual add, once per call) and takes that quantiser's range: unsigned ``[0, 255 s]``, signed
   ``[-128 s, 127 s]``, which AEQ's asymmetric int8 rule turns back into exactly scale ``s``.
   Outputs of ops that keep their input's scale (:data:`SAME_SCALE_OPS`: max pool, pad, reshape,
   transpose) take their input's range. Any other tensor keeps AEQ's calibrated range: the
   export's report (``calibrated``) lists them. Where the converter recomputes a scale: int16
   activations are symmetric in TFLite, so a 16-bit unsigned Brevitas range ``[0, 65535 s]``
   becomes scale ``2 s`` (one bit of resolution lost). ``carry_scales=False`` uses AEQ's own
   calibration throughout; ``benchmarks/targets_agreement.py --both`` measures both ways (AEQ's
   calibration: 73-294 output codes from the simulation, mnist1d-cnn's top-1 agreement 0.87;
   carried: 1-2 codes in ai-edge-litert, agreement 1.0).
5. AEQ writes every weight buffer inside the flatbuffer (:func:`_inline_buffers`): the external
   buffers it appends for models of 256 KiB of weights or more are not read by TFLite Micro.
6. With ``weight_container="int8"`` (what the Ethos-U targets use: Vela takes int8 weight
   tensors only) AEQ quantises every weight at 8 bits, and then :func:`write_int8_containers`
   rewrites the flatbuffer's weight tensors of the 2..7-bit layers: the simulation's integer
   codes (int8), its scales, and the bias requantised at input scale x those scales. The
   default, ``"native"``, writes 4-bit layers as packed INT4 and keeps int8 containers for the
   widths TFLite has no type for (2, 3, 5, 6, 7 bits: exact, stored at 8 bits).
   Measured (``ethos-u55-128``, exact containers, small data): kws-dscnn 31,760 flash bytes at
   8 bits, 20,624 at 4, 12,528 at 2 (cycles 100k, nearly flat); ic-resnet8 84,128 -> 44,896 ->
   19,264 bytes, 215.9k -> 189.6k cycles; ai-edge-litert's top-1 agreement with the simulation
   1.0 at every width.

What to expect (``benchmarks/targets_agreement.py``, W8A8): on the models the workbench quantises
on its fx path (digits-cnn, mnist1d-cnn, kws-dscnn, ic-resnet8, vww-mobilenet) every activation
is carried and ai-edge-litert's outputs match the simulation to 1-2 output codes. TFLite Micro's
reference kernels round requantisation differently (one code at the first layer, growing through
deep networks: about 20 codes at vww-mobilenet's output), so its top-1 agreement can sit a flip or
two under litert's. Models quantised on the per-module path (the transformers CNNs, which fx
cannot trace) quantise only each layer's input: their convolution outputs and residual sums are
float in the simulation and int8 in the file (AEQ-calibrated), so the file cannot match it bit
for bit; on near-tied logits that shows as a top-1 agreement well under 99%.

The TFLite tensor names litert_torch writes hold the torch module path
(``.../Sequential_features/torch.nn.modules.conv.Conv2d_3``): :func:`layer_tensor_map` maps each
workbench layer (quantised Conv/Linear module name) to the output tensor of its op by that path.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..infra import children
from ..infra.errors import ExportError, ToolchainError
from ..export.exporters import DEPLOYMENT_COLUMNS, Target, register_exporter
from ..tasks.metrics import output_agreement

#: TFLite ops a workbench layer becomes (the op whose output is the layer's output).
LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")
ACT_BITS = (8, 16)
CALIB_SAMPLES = 256  # AEQ calibration samples (every tensor needs a range before carrying)
MATCH_SAMPLES = 8  # samples the tensor <-> quantiser matching compares
MATCH_TOLERANCE = 0.15  # mean |tflite - sim| / mean |sim| under which the closest quantiser is taken
NAME_TOLERANCE = 0.8  # ... under which the quantiser named like the tensor's module is taken (wrong ones: about 1.4)


# ----------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:400]}"


@contextlib.contextmanager
def _quiet():
    """Silence the converters' progress output (Python-level stdout / stderr)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _module_regex(layer: str) -> str:
    """A regex finding the torch module ``layer`` (``features.3``) in a litert_torch tensor name,
    where each path component is written ``<type qualname>_<attribute name>``."""
    parts = layer.split(".")
    return r"(?:^|/)" + "/".join(r"[A-Za-z0-9.]+_" + re.escape(p) for p in parts) + r"(?=;|$)"


def quant_layers(qmodel: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of the qmodel's Conv/Linear layers (quantised or left float), in order."""
    from ..core.quantize import QUANTISABLE

    return {n: m for n, m in qmodel.named_modules() if isinstance(m, QUANTISABLE)}


def _layer_settings(qmodel: nn.Module) -> dict[str, dict]:
    """Per layer: op, weight_bits, act_bits, formats, granularity, scale type (from describe)."""
    from ..core.describe import describe

    table = describe(qmodel)
    out = {}
    for r in table.to_dict("records"):
        out[r["layer"]] = r
    return out


def _nan_none(v):
    """None for a missing table cell (None, NaN, pandas NA), else the value."""
    import pandas as pd

    try:
        return None if v is None or bool(pd.isna(v)) else v
    except (TypeError, ValueError):
        return v


# ----------------------------------------------------------------------------- support


def support_table(qmodel: nn.Module):
    """One row per layer: ``layer``, ``op``, ``supported``, ``reason``. Carried: integer weights of
    2 to 8 bits (per-channel or per-tensor, float scales; 2/3/5/6/7-bit codes in int8 containers,
    said in ``reason``), int activations of 8 or 16 bits (static), layers left float. Refused:
    other bit widths, FP8 / minifloat formats, power-of-two scales
    (AEQ recomputes max-abs scales), dynamic activations, quantised embedding tables and attention."""
    import pandas as pd

    rows = []
    plan = getattr(qmodel, "workbench_plan", None)
    for name, r in _layer_settings(qmodel).items():
        op = str(r.get("type"))
        wb, ab = _nan_none(r.get("weight_bits")), _nan_none(r.get("act_bits"))
        wf, af = _nan_none(r.get("weight_format")), _nan_none(r.get("act_format"))
        reasons = []
        if op.startswith("Embedding"):
            if wb is not None:
                reasons.append("quantised embedding tables are not carried by the TFLite target")
            rows.append({"layer": name, "op": op, "supported": not reasons, "reason": "; ".join(reasons)})
            continue
        if wb is not None and int(wb) not in CONTAINER_BITS:
            reasons.append(f"{int(wb)}-bit weights (TFLite carries 2- to 8-bit weights: 8-bit int8, 4-bit INT4, others in int8 containers)")
        if ab is not None and int(ab) not in ACT_BITS:
            reasons.append(f"{int(ab)}-bit activations (TFLite runs int8 or int16 activations)")
        if wf not in (None, "int"):
            reasons.append(f"weight format {wf} (TFLite Micro has integer kernels only)")
        if af not in (None, "int"):
            reasons.append(f"activation format {af} (TFLite Micro has integer kernels only)")
        if wb is not None and str(r.get("scale_type")) == "po2":
            reasons.append("power-of-two scales (AEQ recomputes max-abs float scales)")
        if wb is None and ab is not None:
            reasons.append("float weights reading quantised activations (TFLite has no such kernel; leave the layer float or quantise its weights)")
        if wb is not None and ab is None:
            reasons.append("quantised weights reading float activations (weight-only layers are not carried; quantise its input too)")
        note = ""
        if not reasons and wb is not None and int(wb) not in (4, 8):
            note = f"{int(wb)}-bit codes in an int8 container (TFLite has no {int(wb)}-bit type: stored, and read from flash, at 8 bits)"
        rows.append({"layer": name, "op": op, "supported": not reasons, "reason": "; ".join(reasons) or note})
    if plan is not None:
        spec = plan.spec
        if getattr(spec, "attention_bits", None) is not None:
            rows.append({"layer": "attention", "op": "attention", "supported": False, "reason": "quantised attention matmuls are not carried"})
        for name in plan.embeddings or {}:
            if not any(r["layer"] == name for r in rows):
                rows.append({"layer": name, "op": "Embedding", "supported": False, "reason": "quantised embedding tables are not carried"})
    dyn = _dynamic_layers(qmodel)
    for row in rows:
        if row["layer"] in dyn:
            row["supported"] = False
            row["reason"] = "; ".join(filter(None, [row["reason"], "dynamic activation quantisation (TFLite Micro needs static scales)"]))
    return pd.DataFrame(rows, columns=["layer", "op", "supported", "reason"])


def _dynamic_layers(qmodel) -> set[str]:
    plan = getattr(qmodel, "workbench_plan", None)
    if plan is None:
        return set()
    return {name for name, lq in plan.layers.items() if getattr(lq, "act_dynamic", False) or getattr(lq, "dynamic", False)}


# ----------------------------------------------------------------------------- carrier model


def carrier_model(qmodel: nn.Module, float_model: nn.Module) -> nn.Module:
    """A float copy of ``float_model`` that computes what the simulation's weights compute: every
    BatchNorm absent from (or an Identity in) ``qmodel`` (folded by the simulation) becomes an
    Identity, and every Conv/Linear gets ``qmodel``'s weight (dequantised where quantised) and bias."""
    carrier = copy.deepcopy(float_model).eval()
    qmods = dict(qmodel.named_modules())
    fmods = dict(carrier.named_modules())
    for name, m in list(fmods.items()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            qm = qmods.get(name)
            if qm is None or isinstance(qm, nn.Identity):
                _set_module(carrier, name, nn.Identity())
    for name, qm in quant_layers(qmodel).items():
        fm = fmods.get(name)
        if fm is None:
            raise ExportError(f"layer {name} of the quantised model has no module of that name in the float model; pass the float model the simulation was built from")
        with torch.no_grad():
            w = qm.quant_weight().value if _weight_quantised(qm) else qm.weight
            fm.weight.data = w.detach().clone().float().reshape(fm.weight.shape)
            if qm.bias is not None:
                fm.bias = nn.Parameter(qm.bias.detach().clone().float())
            elif fm.bias is not None:
                fm.bias = None
    return carrier


def _weight_quantised(layer: nn.Module) -> bool:
    """Whether a Brevitas layer quantises its weights (its weight quantiser is enabled)."""
    proxy = getattr(layer, "weight_quant", None)
    return isinstance(proxy, nn.Module) and bool(getattr(proxy, "is_quant_enabled", False))


def quiet_toolchain_logs() -> None:
    """Keep the converters' own log lines (TensorFlow's C++ INFO lines, torchao's missing-kernel
    warnings) off the user's terminal; errors still surface as exceptions."""
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("torchao", "absl", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def convert_float(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> Path:
    """``litert_torch.convert`` of ``model`` on ``example`` (batch 1) written to ``path``."""
    quiet_toolchain_logs()
    with _stderr_to_null():  # TensorFlow's and absl's C++ start-up lines
        import litert_torch

    try:
        with _quiet(), _stderr_to_null():
            litert_torch.convert(model.eval(), (example[:1].float(),)).export(str(path))
    except Exception as exc:
        raise ToolchainError(f"litert_torch could not convert the model: {_one_line(exc)}") from None
    return Path(path)


# ----------------------------------------------------------------------------- simulation quantisers


def sim_quantisers(qmodel: nn.Module, x: torch.Tensor) -> dict[str, dict]:
    """Every enabled Brevitas activation quantiser of ``qmodel`` on ``x``: ``{proxy name: {"value":
    dequantised output (numpy), "scale", "zero_point", "bits", "signed", "narrow"}}``."""
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    found: dict[str, dict] = {}
    calls: dict[str, int] = {}  # a quantiser shared by several tensors (a residual add's inputs) is called once per tensor
    hooks = []
    for name, m in qmodel.named_modules():
        if not isinstance(m, ActQuantProxyFromInjector):
            continue

        def hook(mod, args, out, name=name):
            if not getattr(mod, "is_quant_enabled", False) or not hasattr(out, "scale") or out.scale is None:
                return
            scale = out.scale.detach().reshape(-1)
            if scale.numel() != 1:
                return
            k = calls.get(name, 0)
            calls[name] = k + 1
            key = name if k == 0 else f"{name}#{k}"
            found.setdefault(key, {"value": [], "scale": float(scale[0]), "zero_point": float(out.zero_point.detach().reshape(-1)[0]),
                                   "bits": int(out.bit_width.detach()), "signed": bool(out.signed),
                                   "narrow": bool(getattr(mod, "is_narrow_range", False))})
            found[key]["value"].append(out.value.detach().float().numpy())

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for i in range(len(x)):
                calls.clear()
                qmodel.eval()(x[i:i + 1])
    finally:
        for h in hooks:
            h.remove()
    for q in found.values():
        q["value"] = np.concatenate(q["value"], axis=0)
    return found


def quantiser_range(q: dict) -> tuple[float, float]:
    """The float range ``[min, max]`` a Brevitas quantiser represents (integer range minus its
    zero point, times its scale)."""
    b = q["bits"]
    if q["signed"]:
        lo, hi = -(2 ** (b - 1)) + (1 if q["narrow"] else 0), 2 ** (b - 1) - 1
    else:
        lo, hi = 0, 2 ** b - 1
    return (lo - q["zero_point"]) * q["scale"], (hi - q["zero_point"]) * q["scale"]


def _layouts(v: np.ndarray) -> list[np.ndarray]:
    """``v`` (batch first) flattened per sample as stored in NCHW and in channels-last order."""
    out = [v.reshape(len(v), -1)]
    if v.ndim >= 3:
        out.append(np.moveaxis(v, 1, -1).reshape(len(v), -1))
    return out


def float_tensors(float_path: str | os.PathLike, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every non-constant tensor of the float tflite on each sample of ``x``: ``{name: array (n, ...)}``."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": that is the use here
        it = Interpreter(str(float_path), num_threads=1, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    details = [d for d in it.get_tensor_details() if d["dtype"] == np.float32]
    out: dict[str, list] = {}
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1].astype(np.float32).reshape(inp["shape"]))
        it.invoke()
        for d in details:
            try:
                out.setdefault(d["name"], []).append(np.array(it.get_tensor(d["index"])))
            except ValueError:
                pass
    return {k: np.stack(v) for k, v in out.items() if len(v) == len(x)}


def tensor_module(tname: str) -> str:
    """The torch module path of the outermost op fused into a litert_torch tensor name
    (``.../Sequential_features/torch.nn.modules.activation.ReLU_38;;...`` -> ``features.38``)."""
    first = tname.split(";")[0]
    parts = first.split("/")[1:]
    return ".".join(p.rsplit(".", 1)[-1].split("_", 1)[1] for p in parts if "_" in p.rsplit(".", 1)[-1])


def match_tensors(tensors: dict[str, np.ndarray], quantisers: dict[str, dict], names=None) -> dict[str, str]:
    """``{tflite tensor name: Brevitas quantiser name}``: each tensor (of ``names``, default all)
    matched to a quantiser of the same element count (NCHW or channels-last) whose output is close
    (error: mean |float tflite - simulation| / mean |simulation| over the samples; it grows with
    depth, as the float file drifts from the quantised simulation). The quantiser of the module
    the tensor's name starts with (``features.38`` -> ``features.38.act_quant``) is taken when its
    error is under :data:`NAME_TOLERANCE`; otherwise the closest one, when under
    :data:`MATCH_TOLERANCE`, or under :data:`NAME_TOLERANCE` and half the next candidate's error."""
    out = {}
    for tname, t in tensors.items():
        if names is not None and tname not in names:
            continue
        flat = t.reshape(t.shape[0], -1)
        errors = {}
        for qname, q in quantisers.items():
            v = q["value"]
            if v.shape[0] != flat.shape[0] or v[0].size != flat.shape[1]:
                continue
            ref = float(np.abs(v).mean()) + 1e-12
            errors[qname] = min(float(np.abs(lay - flat).mean()) / ref for lay in _layouts(v))
        if not errors:
            continue
        hint = f"{tensor_module(tname)}.act_quant"
        ranked = sorted(errors, key=errors.get)
        best = ranked[0]
        second = errors[ranked[1]] if len(ranked) > 1 else float("inf")
        if errors.get(hint, float("inf")) < NAME_TOLERANCE:
            out[tname] = hint
        elif errors[best] < MATCH_TOLERANCE or (errors[best] < NAME_TOLERANCE and errors[best] < 0.5 * second):
            out[tname] = best
    return out


# ----------------------------------------------------------------------------- export


#: Ops whose output keeps its input's quantisation (TFLite Micro's kernels need the same scale).
SAME_SCALE_OPS = ("RESHAPE", "TRANSPOSE", "MAX_POOL_2D", "PAD", "PADV2", "SQUEEZE", "EXPAND_DIMS")

#: Ops that hand their input on (shape or selection only) or pool it: walking up through them
#: from a layer's op finds the op that produced the tensor the layer reads.
PASS_OPS = ("RESHAPE", "TRANSPOSE", "MAX_POOL_2D", "PAD", "PADV2", "SQUEEZE", "EXPAND_DIMS", "MEAN", "AVERAGE_POOL_2D", "CONCATENATION")


def op_plan(float_path: str | os.PathLike, settings: dict[str, dict], layers: list[str]) -> dict[str, dict]:
    """``{op output tensor name: {"layer", "op", "act_bits", "weight_bits", "granularity"}}`` of every
    op of the float file that differs from the default (int8 activations, 8-bit per-channel
    weights): a layer's own op takes the layer's bits (None: float); the ops producing the tensor
    an A16 layer reads (walking up through :data:`PASS_OPS` to the previous layer's op) write int16,
    so the layer reads 16-bit data; the pass-through ops in front of a float layer stay float."""
    ops = op_types(float_path)
    producer = {out: i for i, (_, out, _) in enumerate(ops)}
    by_layer = layer_tensor_map(float_path, layers)
    layer_of = {t: l for l, t in by_layer.items()}
    plan: dict[str, dict] = {}

    def entry(out):
        i = producer[out]
        layer = layer_of.get(out)
        r = settings.get(layer, {}) if layer else {}
        wb = _nan_none(r.get("weight_bits")) if layer else 8
        return plan.setdefault(out, {"layer": layer, "op": ops[i][0], "act_bits": 8, "weight_bits": None if wb is None else int(wb),
                                     "granularity": r.get("granularity") or "per_channel"})

    def upstream(out):
        """The ops writing the tensor that ``out``'s op reads, up to and including a layer's op."""
        seen, todo, found = set(), [n for n in ops[producer[out]][2][:1]], []
        while todo:
            t = todo.pop()
            if t in seen or t not in producer:
                continue
            seen.add(t)
            found.append(t)
            if ops[producer[t]][0] in PASS_OPS and t not in layer_of:
                todo.extend(ops[producer[t]][2][:1] if ops[producer[t]][0] != "CONCATENATION" else ops[producer[t]][2])
        return found

    for layer, out in by_layer.items():
        r = settings.get(layer, {})
        wb, ab = _nan_none(r.get("weight_bits")), _nan_none(r.get("act_bits"))
        e = entry(out)
        if wb is None:
            e["weight_bits"], e["act_bits"] = None, None
            for t in upstream(out):
                if t not in layer_of:
                    entry(t).update(weight_bits=None, act_bits=None)
        elif ab is not None and int(ab) == 16:
            e["act_bits"] = 16
            for t in upstream(out):
                if plan.get(t, {}).get("act_bits", 8) is not None:
                    entry(t)["act_bits"] = 16
    return {k: v for k, v in plan.items() if (v["act_bits"], v["weight_bits"], v["granularity"]) != (8, 8, "per_channel")}


def _recipe(qz, plan: dict[str, dict]) -> None:
    """Load the default static a8w8 recipe, then one configuration per op of ``plan``, selected by
    its exact output tensor name (AEQ matches a regex against it)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe

    qz.load_quantization_recipe(recipe.static_wi8_ai8())
    for out, e in plan.items():
        regex = "^" + re.escape(out) + ";$"  # AEQ's op scope: the output names, each followed by ";"
        if e["act_bits"] is None:
            qz.update_quantization_recipe(regex, qtyping.TFLOperationName.ALL_SUPPORTED, None, algorithm_manager.AlgorithmName.NO_QUANTIZE)
            continue
        gran = qtyping.QuantGranularity.TENSORWISE if e["granularity"] == "per_tensor" else qtyping.QuantGranularity.CHANNELWISE
        qz.add_static_config(regex, qtyping.TFLOperationName.ALL_SUPPORTED, int(e["act_bits"]), int(e["weight_bits"] or 8), gran)


def export_tflite_int8(qmodel: nn.Module, float_model: nn.Module, example: torch.Tensor, path: str | os.PathLike,
                       calib: torch.Tensor | None = None, carry_scales: bool = True, weight_container: str = "native") -> dict:
    """Write the integer TFLite file of ``qmodel`` to ``path`` (atomically) and return a report:
    ``{"path", "carried": {tensor: quantiser}, "calibrated": [tensors AEQ's own ranges kept],
    "op_plan": {op output: settings differing from int8} (:func:`op_plan`), "layer_tensors": {layer: tensor},
    "float_ops": [ops AEQ left float that the spec did not ask for (an op it cannot quantise)]}``.

    ``float_model``: the float model ``qmodel`` was built from (converted with the simulation's
    weights, see the module docstring). ``calib``: calibration inputs (default: ``example``),
    AEQ's calibration and the range matching run on them. ``carry_scales`` (default True):
    activation ranges from the simulation's quantisers; False: AEQ's calibrated ranges only.
    ``weight_container``: ``"native"`` (default) stores 4-bit weights as packed INT4 tensors,
    8-bit ones as int8, and 2-, 3-, 5-, 6-, 7-bit ones in int8 containers (TFLite has no such
    type); ``"int8"`` stores every quantised weight tensor as int8 and, for layers of
    2 to 7 bits, writes the simulation's exact integer codes and scales into it
    (:func:`write_int8_containers`; the report's ``int8_containers`` lists them), the form Arm's
    Vela takes. Any failure inside litert_torch / AEQ is a one-line ToolchainError; nothing is
    left at ``path``.
    """
    from ai_edge_quantizer import quantizer

    from ..infra.fileio import atomic_target

    if float_model is None:
        raise ExportError("target 'tflite-int8' converts the float model with the simulation's weights: pass float_model=")
    if weight_container not in WEIGHT_CONTAINERS:
        raise ExportError(f"weight_container {weight_container!r} is not known; expected one of {', '.join(map(repr, WEIGHT_CONTAINERS))}")
    calib = example if calib is None else calib
    calib = calib[:CALIB_SAMPLES].float()
    settings = _layer_settings(qmodel)
    layers = list(quant_layers(qmodel))
    containers: dict[str, int] = {}
    aeq_settings = settings
    if weight_container == "int8":
        containers = container_layers(qmodel, settings)
    else:  # native: 4-bit as INT4; the widths TFLite has no type for in int8 containers
        containers = {k: b for k, b in container_layers(qmodel, settings).items() if b != 4}
    if containers:
        # AEQ quantises these layers' weights at 8 bits; their buffers are rewritten afterwards
        aeq_settings = {k: ({**r, "weight_bits": 8} if k in containers else r) for k, r in settings.items()}
    with children.temp_dir("wb-tflite-") as tmp:
        float_path = convert_float(carrier_model(qmodel, float_model), example, Path(tmp) / "float.tflite")
        try:
            with _quiet():
                qz = quantizer.Quantizer(str(float_path))
                plan = op_plan(float_path, settings, layers)
                plan_aeq = op_plan(float_path, aeq_settings, layers) if containers else plan
                _recipe(qz, plan_aeq)
                cx = calib.numpy()
                ranges = qz.calibrate({"serving_default": [{"args_0": cx[i:i + 1]} for i in range(len(cx))]}, num_threads=1)
        except Exception as exc:
            raise ToolchainError(f"ai_edge_quantizer could not calibrate the model: {_one_line(exc)}") from None
        carried: dict[str, str] = {}
        if carry_scales:
            xs = calib[:MATCH_SAMPLES]
            quantisers = sim_quantisers(qmodel, xs)
            tensors = float_tensors(float_path, xs.numpy())
            carried = match_tensors(tensors, quantisers, names=set(ranges))
            for tname, qname in carried.items():
                lo, hi = quantiser_range(quantisers[qname])
                ranges[tname] = {"min": np.array([lo], dtype=np.float32).reshape(np.shape(ranges[tname]["min"])),
                                 "max": np.array([hi], dtype=np.float32).reshape(np.shape(ranges[tname]["max"]))}
            for op, out, inputs in op_types(float_path):  # ops that keep their input's scale, in graph order
                if op in SAME_SCALE_OPS and out in ranges and out not in carried and inputs and inputs[0] in ranges:
                    ranges[out] = {k: np.array(v, copy=True) for k, v in ranges[inputs[0]].items()}
                    if inputs[0] in carried:
                        carried[out] = carried[inputs[0]]
        try:
            with _quiet(), _inline_buffers():
                result = qz.quantize(ranges, enable_progress_report=False)
                data = bytes(result.quantized_model)
        except Exception as exc:
            raise ToolchainError(f"ai_edge_quantizer could not quantise the model: {_one_line(exc)}") from None
        if containers:
            aeq_path = Path(tmp) / "aeq.tflite"
            aeq_path.write_bytes(data)
            data = write_int8_containers(data, qmodel, containers, layer_tensor_map(aeq_path, list(containers)))
    with atomic_target(path) as tmp_path:
        Path(tmp_path).write_bytes(data)
    planned_float, types = {t for t, e in plan.items() if e["act_bits"] is None}, tensor_types(path)
    float_ops = [f"{op} {tensor_module(out) or out}" for op, out, _ in op_types(path)
                 if types.get(out) == np.float32 and op not in ("DEQUANTIZE",) and out not in planned_float]
    return {"path": Path(path), "carried": carried, "calibrated": sorted(set(ranges) - set(carried)), "op_plan": plan,
            "layer_tensors": layer_tensor_map(path, layers), "float_ops": float_ops, "weight_container": weight_container,
            "int8_containers": containers}


# ----------------------------------------------------------------------------- int8 containers


#: How :func:`export_tflite_int8` stores quantised weights: ``native`` (4-bit as packed INT4,
#: 8-bit as int8) or ``int8`` (every weight tensor int8; 2..7-bit codes held in it).
WEIGHT_CONTAINERS = ("native", "int8")
#: Weight bits an int8 container holds exactly (8: AEQ's own int8 quantisation).
CONTAINER_BITS = range(2, 9)


def container_layers(qmodel: nn.Module, settings: dict[str, dict] | None = None) -> dict[str, int]:
    """``{layer: weight bits}`` of the layers whose weights an int8 container holds as the
    simulation's codes: integer weights of 2 to 7 bits. Weights of other formats or widths (FP8,
    1 bit, more than 8 bits) are a one-line ExportError naming the layer."""
    settings = _layer_settings(qmodel) if settings is None else settings
    out = {}
    for name, r in settings.items():
        wb = _nan_none(r.get("weight_bits"))
        if wb is None or str(r.get("type", "")).startswith("Embedding"):
            continue
        wf = _nan_none(r.get("weight_format"))
        if wf not in (None, "int") or int(wb) not in CONTAINER_BITS:
            what = f"weight format {wf}" if wf not in (None, "int") else f"{int(wb)}-bit weights"
            raise ExportError(f"layer {name}: {what} cannot be stored in an int8 container; expected integer weights of 2 to 8 bits")
        if int(wb) < 8:
            out[name] = int(wb)
    return out


def write_int8_containers(data: bytes, qmodel: nn.Module, layers: dict[str, int], tensors: dict[str, str]) -> bytes:
    """The TFLite flatbuffer ``data`` (AEQ's int8 file) with the weights of each layer of
    ``layers`` (``{layer: bits}``) replaced by the simulation's own: the int8 weight tensor holds
    the Brevitas integer codes (``quant_weight().int()``) in TFLite's layout, its quantisation
    the Brevitas scales (per channel on the tensor's quantised dimension, or one per tensor) with
    zero point 0, and the bias (int32, or int64 beside int16 activations) the layer's float bias
    at scale input scale x weight scale, as TFLite's kernels require. ``tensors``: ``{layer: op
    output tensor name}`` (:func:`layer_tensor_map`).

    The codes are read back from AEQ's 8-bit tensor (``round(q8 * s8 / s)``, exact since AEQ's
    8-bit step is under half the layer's) and checked per channel against the simulation's codes:
    a mismatch is an ExportError, never a silently different file."""
    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    model = fb.read_model(bytearray(data))
    graph = model.subgraphs[0]
    by_output = {fb.get_tensor_name(graph.tensors[op.outputs[0]]): op for op in graph.operators if len(op.outputs)}
    users: dict[int, int] = {}
    for t in graph.tensors:
        users[t.buffer] = users.get(t.buffer, 0) + 1

    def store(tensor, array: np.ndarray) -> None:
        raw = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8).copy()
        if users.get(tensor.buffer, 0) > 1:  # a buffer shared with another tensor: give this one its own
            from ai_edge_litert import schema_py_generated as schema

            buf = schema.BufferT()
            model.buffers.append(buf)
            users[tensor.buffer] -= 1
            tensor.buffer = len(model.buffers) - 1
            users[tensor.buffer] = 1
        model.buffers[tensor.buffer].data = raw
        model.buffers[tensor.buffer].offset, model.buffers[tensor.buffer].size = 0, 0

    for layer, bits in layers.items():
        tname = tensors.get(layer)
        if tname is None or tname not in by_output:
            raise ExportError(f"layer {layer}: no Conv/FullyConnected op of the TFLite file carries it; cannot write its {bits}-bit weights")
        op = by_output[tname]
        inp, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
        bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        q8 = fb.get_tensor_data(w, model.buffers)
        if w.type != 9 or q8 is None or w.quantization is None or w.quantization.scale is None:  # 9: INT8
            raise ExportError(f"layer {layer}: the TFLite weight tensor is not a constant int8 tensor (type {_TYPE_NAMES.get(w.type, w.type)}); "
                              f"expected AEQ's int8 weights")
        module = qmodel.get_submodule(layer)
        with torch.no_grad():
            qw = module.quant_weight()
            codes_sim = qw.int().detach().cpu().numpy().astype(np.int64)
            scale = qw.scale.detach().cpu().double().numpy().reshape(-1)
            zero = np.asarray(qw.zero_point.detach().cpu().numpy(), dtype=np.float64)
        if np.any(zero != 0):
            raise ExportError(f"layer {layer}: asymmetric weights (zero point not 0) cannot be stored in a TFLite int8 weight tensor; expected symmetric weights")
        axis = int(w.quantization.quantizedDimension or 0)
        s8 = np.asarray(w.quantization.scale, dtype=np.float64)
        bshape = [1] * q8.ndim
        if s8.size > 1:
            bshape[axis] = -1
        if scale.size not in (1, q8.shape[axis]):
            raise ExportError(f"layer {layer}: {scale.size} weight scales in the simulation for {q8.shape[axis]} TFLite channels; "
                              f"expected one per output channel or one per tensor")
        exact = q8.astype(np.float64) * s8.reshape(bshape)
        sshape = [1] * q8.ndim
        if scale.size > 1:
            sshape[axis] = -1
        codes = np.rint(exact / scale.reshape(sshape)).astype(np.int64)
        per_channel = lambda a, ax: np.sort(np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1), axis=1)  # noqa: E731
        mine = per_channel(codes, axis) if scale.size > 1 else np.sort(codes.reshape(-1))
        theirs = per_channel(codes_sim, 0) if scale.size > 1 else np.sort(codes_sim.reshape(-1))
        if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
            raise ExportError(f"layer {layer}: the TFLite weights do not hold the simulation's {bits}-bit codes after requantisation "
                              f"(shape {list(q8.shape)} vs {list(codes_sim.shape)}); cannot write an exact int8 container")
        store(w, codes.astype(np.int8))
        n = scale.size
        w.quantization.scale = [float(np.float32(v)) for v in scale]
        w.quantization.zeroPoint = [0] * n
        w.quantization.min, w.quantization.max = None, None
        w.quantization.quantizedDimension = axis if n > 1 else 0
        if bias is not None and module.bias is not None:
            in_scale = float(np.float32(inp.quantization.scale[0]))
            bscale = np.array([in_scale * float(np.float32(v)) for v in scale], dtype=np.float64)
            bvals = module.bias.detach().cpu().double().numpy().reshape(-1)
            btype = {2: np.int32, 4: np.int64}.get(bias.type)
            held = fb.get_tensor_data(bias, model.buffers)
            if btype is None or held is None or bvals.size != held.size:
                raise ExportError(f"layer {layer}: the TFLite bias tensor (type {_TYPE_NAMES.get(bias.type, bias.type)}) is not an int32/int64 "
                                  f"tensor of {bvals.size} values; cannot rescale it to the simulation's weight scales")
            info = np.iinfo(btype)
            q = np.clip(np.rint(bvals / (bscale if n > 1 else bscale[0])), info.min, info.max).astype(btype)
            store(bias, q)
            bias.quantization.scale = [float(np.float32(v)) for v in bscale]
            bias.quantization.zeroPoint = [0] * n
            bias.quantization.min, bias.quantization.max = None, None
            bias.quantization.quantizedDimension = 0
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_for_assignment(task, model: nn.Module, assignment: dict[str, int], path: str | os.PathLike, act_bits: int = 8,
                          weight_container: str = "int8", ptq=None, carry_scales: bool = True) -> Path:
    """Write the integer TFLite file of ``model`` quantised with per-layer weight bits
    ``assignment`` (``{layer: bits}``, the other layers at the spec's defaults) and activations at
    ``act_bits``, as the search quantises a candidate (:func:`workbench.search.precision.assignment_spec`,
    :func:`workbench.export.pipeline.quantize_task` with ``ptq``, default :class:`~workbench.export.pipeline.PTQConfig`),
    to ``path`` (atomically) and return ``path``. ``weight_container``: ``"int8"`` (default: every
    weight tensor int8, 2..8-bit codes exact, what Vela compiles) or ``"native"`` (4-bit as INT4,
    the other widths below 8 in int8 containers); see :func:`export_tflite_int8`."""
    from ..export.pipeline import PTQConfig, quantize_task
    from ..core.spec import assignment_spec

    if weight_container not in WEIGHT_CONTAINERS:
        raise ExportError(f"weight_container {weight_container!r} is not known; expected one of {', '.join(map(repr, WEIGHT_CONTAINERS))}")
    qmodel = quantize_task(task, model, assignment_spec(assignment, act_bits), ptq if ptq is not None else PTQConfig())
    report = export_tflite_int8(qmodel, model, task.example_input(), path, calib=task.data.calib.x, carry_scales=carry_scales,
                                weight_container=weight_container)
    return report["path"]


@contextlib.contextmanager
def _inline_buffers():
    """Make AEQ write every weight buffer inside the flatbuffer. For models holding 256 KiB of
    weights or more AEQ appends them after it (buffers with offsets), which TFLite Micro does not
    read: its outputs were garbage on hf-mobilenetv2 / hf-resnet18 (top-1 agreement 0.15 while
    ai-edge-litert ran the same file). Inline buffers cap a file at 2 GB, far above any MCU."""
    from ai_edge_quantizer import model_modifier

    cls = model_modifier.ModelModifier
    original = cls._serialize_model

    def inline(self, quantized_model, packed_buffer_data, serialize_to_path=None):
        data = self._serialize_small_model(quantized_model)
        if serialize_to_path:
            Path(serialize_to_path).write_bytes(bytes(data))
        return data

    cls._serialize_model = inline
    try:
        yield
    finally:
        cls._serialize_model = original


# ----------------------------------------------------------------------------- reading the file


def _ops(path) -> tuple[list[dict], list[dict]]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(path), num_threads=1)
    return it._get_ops_details(), it.get_tensor_details()


def op_types(path: str | os.PathLike) -> list[tuple[str, str, list[str]]]:
    """``[(op name, output tensor name, input tensor names)]`` of the file, in execution order."""
    ops, tensors = _ops(path)
    names = {d["index"]: d["name"] for d in tensors}
    return [(o["op_name"], names.get(int(o["outputs"][0]), "") if len(o["outputs"]) else "", [names.get(int(i), "") for i in o["inputs"] if i >= 0])
            for o in ops if o["op_name"] != "DELEGATE"]


def layer_tensor_map(path: str | os.PathLike, layers) -> dict[str, str]:
    """``{workbench layer: tflite tensor name}``: the output tensor of the Conv / FullyConnected op
    whose output or weight tensor's name holds the layer's module path (litert_torch names tensors
    by torch module path; a graph output keeps its signature name, so the weight's name decides)."""
    out = {}
    for op, tname, inputs in op_types(path):
        if op not in LAYER_OPS:
            continue
        for layer in layers:
            if layer not in out and any(re.search(_module_regex(layer), n) for n in [tname, *inputs[1:]]):
                out[layer] = tname
                break
    return out


def tensor_types(path: str | os.PathLike) -> dict[str, np.dtype]:
    """``{tensor name: numpy dtype}`` of every tensor of the file."""
    _, tensors = _ops(path)
    return {d["name"]: d["dtype"] for d in tensors}


_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8", 17: "int4"}


def layer_types(path: str | os.PathLike, layers) -> dict[str, dict[str, str]]:
    """``{layer: {"op", "input", "weight", "output"}}``: each layer's op and the stored types of the
    tensor it reads, its weights (``int4`` where packed 4-bit) and its output, read from the
    flatbuffer itself (the interpreters report int4 weights as int8)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    model = fb.read_model(str(path))
    graph = model.subgraphs[0]
    codes = [fb.TFL_OP_CODE_TO_NAME.get(max(c.builtinCode, c.deprecatedBuiltinCode), str(c.builtinCode)) for c in model.operatorCodes]
    mapping = layer_tensor_map(path, layers)
    by_output = {fb.get_tensor_name(graph.tensors[op.outputs[0]]): op for op in graph.operators if len(op.outputs)}

    def kind(i):
        return _TYPE_NAMES.get(graph.tensors[i].type, str(graph.tensors[i].type)) if i >= 0 else None

    out = {}
    for layer, tname in mapping.items():
        op = by_output[tname]
        code = codes[op.opcodeIndex]
        out[layer] = {"op": str(getattr(code, "value", code)), "input": kind(op.inputs[0]), "weight": kind(op.inputs[1]) if len(op.inputs) > 1 else None,
                      "output": kind(op.outputs[0])}
    return out


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


@contextlib.contextmanager
def _stderr_to_null():
    """Silence C-level stderr (TFLite Micro prints allocation failures there)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


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


# ----------------------------------------------------------------------------- the target


def peak_act_estimate_bytes(qmodel: nn.Module, example: torch.Tensor, float_model: nn.Module | None = None) -> int:
    """The workbench cost model's peak-activation estimate (``peak_act_kib``, in bytes): the largest
    layer input + output at the layer's activation bits."""
    from ..core.cost import cost_table, layer_costs, totals

    model = float_model if float_model is not None else qmodel
    costs = layer_costs(model, example)
    settings = _layer_settings(qmodel)
    wbits = {n: _nan_none(settings.get(n, {}).get("weight_bits")) for n in costs}
    abits = {n: _nan_none(settings.get(n, {}).get("act_bits")) for n in costs}
    wbits = {n: (None if v is None else int(v)) for n, v in wbits.items()}
    abits = {n: (None if v is None else int(v)) for n, v in abits.items()}
    return int(totals(cost_table(costs, wbits, abits))["peak_act_bytes"])


@register_exporter
class TFLiteInt8Target(Target):
    """``tflite-int8``: see the module docstring for how the file is built and what is carried."""

    name, suffix = "tflite-int8", ".int8.tflite"
    carries = ("int8 / int16 (A16W8) activations, 2- to 8-bit weights per layer (4-bit as INT4, 2/3/5/6/7-bit in int8 containers), "
               "float layers left float; batch 1")
    max_bits = 16
    verified_by = "ai-edge-litert and tflite-micro (eval split or first n samples; arena bytes by bisection)"
    description = "integer TFLite for microcontrollers (TFLite Micro operators), simulation's scales carried"
    requires = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro")
    runtime = "ai-edge-litert, tflite-micro"

    def support(self, qmodel):
        return support_table(qmodel)

    def check(self, qmodel):
        Target.check(self, qmodel)

    def export(self, qmodel, example, path, float_model=None, task=None, carry_scales: bool = True, calib=None, **options) -> Path:
        """:func:`export_tflite_int8` after :meth:`check` (one-line errors before any work).
        ``calib``: calibration inputs (default: ``task``'s calibration split, else ``example``).
        The export's report (carried / calibrated tensors, op plan, float ops) is kept as
        ``last_report``."""
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
        from ..export.verify import time_runs

        self.available()
        path = Path(path)
        split = task.data.eval
        x = split.x if n is None else split.x[:n]
        y = split.y if n is None else split.y[:n]
        from ..tasks.data import Split

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
        return tflite_layer_outputs(path, x, qmodel)


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


def _layers_from_names(path) -> list[str]:
    out = []
    for op, tname, inputs in op_types(path):
        if op in LAYER_OPS and len(inputs) > 1:
            last = inputs[1].split(";")[0]
            parts = [p.rsplit("_", 1)[-1] if "_" in p else p for p in last.split("/")[1:]]
            out.append(".".join(parts))
    return out
