"""The ``hls4ml`` deployment target: the workbench's QONNX export as an hls4ml project whose C++
emulation (``ap_fixed`` arithmetic, compiled with g++) runs the eval split.

The path is Brevitas -> QONNX (:func:`workbench.export.qonnx.export_qonnx`, float weights, ``pack=False``)
-> qonnx's cleaning sequence that hls4ml documents (``cleanup_model``,
``ConvertToChannelsLastAndClean``, ``GemmToMatMul``, ``cleanup_model``) -> :func:`prepare_for_hls`
-> ``hls4ml`` (Vitis backend, ``io_parallel``, Latency strategy, reuse factor 1; the library built
with g++ ``-O2``, :data:`CXX_OPT`). ``io_stream`` compiled no faster on digits-cnn (about 20 s either
way) and ran 128 samples in 54-85 s against under a second for ``io_parallel``.

:func:`prepare_for_hls` does what hls4ml 1.3 does not do with a workbench export, each a rewrite of
the cleaned QONNX graph, never of hls4ml:

- *Quant nodes on weights and biases* are folded into float initialisers (the dequantised values,
  computed with qonnx's own ``quant``), and each layer's ``weight`` and ``bias`` precision is set in
  the hls4ml configuration from the Quant node's bits and scale. hls4ml folds a Quant on a constant
  only where the scale is one power of two for the whole tensor (``FuseQuantWithConstant``); the
  workbench's per-channel weight scales and its int32 bias Quants (scale = input scale x
  per-channel weight scale) go through ``ConstQuantToConstAlpha`` instead, which leaves a
  ``Constant`` whose ``get_input_variable`` the precision inference pass calls with no input: the
  ``IndexError`` in ``infer_precision.py`` (upstream cause; hls4ml 1.3).
- *A Transpose in front of GlobalAveragePool / GlobalMaxPool* (left by qonnx's
  ``ConvertToChannelsLastAndClean``, which does not move a Transpose through a global pool) becomes
  an Identity whose output keeps the channels-first shape: hls4ml's ONNX global-pooling parser
  assumes its input is already channels-last in memory (``data_format = 'channels_last'``) but
  reads the sizes from the channels-first shape, so a real transpose in front of it pools over the
  wrong axis (every output wrong; upstream cause, hls4ml 1.3 ``converters/onnx/pooling.py``).

- *A zero Pad left channels-first in front of qonnx's input Transpose* (DS-CNN's TF-style 'same'
  padding) is folded into the next Conv's own, asymmetric, padding (:func:`_fold_zero_pads`):
  hls4ml parses an ONNX Pad as channels-last, and the Conv after it then fails in
  ``generate_conv2d_line_buffer_fn`` (``np.split``: "array split does not result in an equal
  division"; upstream cause).

Precisions follow the explored bits per layer: weights of ``b`` bits with power-of-two scales
``2**e`` (per tensor or per channel) are ``ap_fixed<b + max(e) - min(e), b + max(e)>``: every weight
exactly, at ``b`` bits for a per-tensor scale; biases get the width their integers need at their
finest scale; activation Quant nodes (per-tensor, power-of-two scale, zero point 0) become hls4ml
``linear`` activations of ``ap_(u)fixed<b, b + e>`` with convergent rounding and saturation, which
is Brevitas's round-half-even and clamp; accumulators are left to hls4ml's precision inference,
which makes them wide enough for every sum. Float (non power-of-two) scales cannot be held by
``ap_fixed``: weights are then rounded to ``b + 8`` bits (``precisions()`` says ``exact: False``),
and activation Quant nodes become hls4ml's ``ApplyAlpha`` rescaling, which hls4ml 1.3 fails to
move through the next convolution (``ValueError: operands could not be broadcast`` in its
``move_scales`` passes: the rescale was broadcast to the tensor's shape by
``ConstQuantToConstAlpha``; upstream cause): a one-line ToolchainError naming the ApplyAlpha node
and asking for ``scale_type: po2``.

The artifact (``.hls4ml.tar.gz``) is the hls4ml project (C++ firmware, weights, the g++ build
script, the Python bridge) plus ``workbench_hls.json`` (the layer map, shapes and precisions);
:meth:`HLS4MLTarget.evaluate` unpacks it, compiles it with g++ and runs it through ctypes, so what
is measured is what was written. Compiled emulations are cached per artifact (by SHA-256) for the
life of the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..infra import children
from ..infra.errors import ExportError, ToolchainError
from ..export.exporters import DEPLOYMENT_COLUMNS, Target, register_exporter

if TYPE_CHECKING:  # annotations only: importing the target (which registers it) needs no torch
    import torch
    from torch import nn

PROJECT = "myproject"
MANIFEST = "workbench_hls.json"
IO_TYPE = "io_parallel"
#: g++ optimisation for the emulation library. hls4ml's build_lib.sh uses -O3; on kws-dscnn (2 shared
#: cores) -O2 built in 376 s where -O3 had not finished after 9 minutes, and ran 128 samples in 3.4 s.
CXX_OPT = "-O2"
STRATEGY = "Latency"
RUNTIME = "hls4ml C++ emulation (g++)"
#: hls4ml's default precision, for what the workbench's export does not fix (ApplyAlpha of float scales).
DEFAULT_PRECISION = "fixed<32,16>"
#: Fractional bits added to a global average pool's input precision for its sum and mean.
POOL_GUARD_BITS = 16
#: Extra bits for weights whose scale is not a power of two (rounded, not exact).
FLOAT_SCALE_GUARD_BITS = 8


# ----------------------------------------------------------------------------- graph preparation


def _attrs(node) -> dict:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _fixed(bits: int, integer: int, signed: bool) -> str:
    return f"{'' if signed else 'u'}fixed<{int(bits)},{int(integer)},RND_CONV,SAT>"


def _constant_precision(values: np.ndarray, scale: np.ndarray, bits: int, signed: bool, role: str) -> tuple[str, bool, int]:
    """(hls4ml precision, exact, bits) holding the dequantised ``values`` (integers times ``scale``)."""
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), values.shape)
    e = np.log2(s)
    exact = bool(np.allclose(e, np.round(e), rtol=0, atol=1e-9))
    if not exact:  # a float scale: round to bits + guard at the magnitude of the largest value
        top = float(np.abs(values).max()) or 1.0
        integer = int(np.floor(np.log2(top))) + 2
        width = int(bits) + FLOAT_SCALE_GUARD_BITS
        return _fixed(width, integer, True), False, width
    e = np.round(e).astype(int)
    lo, hi = int(e.min()), int(e.max())
    if role == "bias":  # the width its integers need at the finest scale (int32 Quants hold far fewer)
        ints = np.round(values.astype(np.float64) / 2.0 ** lo).astype(np.int64)
        width = max(int(np.abs(ints).max()).bit_length() + 1, 2)
        return _fixed(width, width + lo, True), True, width
    width = int(bits) + hi - lo
    return _fixed(width, int(bits) + hi, signed), True, width


def _weight_integers(values: np.ndarray, scale: np.ndarray, op: str, ndim: int) -> np.ndarray:
    """A folded weight's integers in PyTorch layout (``(out, in, k...)``, Linear ``(out, in)``)."""
    ints = np.round(values.astype(np.float64) / np.broadcast_to(np.asarray(scale, dtype=np.float64), values.shape)).astype(np.int64)
    if op == "MatMul" and ints.ndim == 2:
        return ints.T
    if ints.ndim >= 3:  # channels-last (out, k..., in) -> (out, in, k...)
        return np.moveaxis(ints, -1, 1)
    return ints


def prepare_for_hls(qonnx_path: str | os.PathLike, qmodel: nn.Module | None = None):
    """The cleaned, channels-last QONNX graph hls4ml can take, and what the rewrites found.

    Returns ``(model, info)``: a qonnx ``ModelWrapper`` and ``{"precisions": {onnx node: {"weight" |
    "bias": precision}}, "layers": {onnx node: workbench layer}, "table": [rows of :func:`precisions`],
    "rewrites": [notes]}``. The layer names come from matching each folded weight's integers with the
    layer's own (:func:`workbench.export.verify.match_layer_weights`), not from node names."""
    from onnx import helper, numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.general.quant import quant
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    from ..export.verify import match_layer_weights

    model = cleanup_model(ModelWrapper(str(qonnx_path)))
    model = model.transform(ConvertToChannelsLastAndClean())
    model = model.transform(GemmToMatMul())
    model = cleanup_model(model)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}

    def readers(tensor):
        return [n for n in graph.node if tensor in n.input]

    precisions: dict[str, dict[str, str]] = {}
    rows: dict[str, dict] = {}
    weight_ints: dict[str, np.ndarray] = {}
    notes = []
    folded = 0
    for node in list(graph.node):
        if node.op_type != "Quant" or node.input[0] not in inits:
            continue
        x, scale, zeropt, bits = (numpy_helper.to_array(inits[i]) for i in node.input)
        at = _attrs(node)
        signed, narrow = bool(at.get("signed", 1)), bool(at.get("narrow", 0))
        y = np.asarray(quant(x, scale, zeropt, bits, signed, narrow, at.get("rounding_mode", "ROUND")), dtype=np.float32)
        if np.any(np.asarray(zeropt) != 0):
            raise ExportError(f"hls4ml target: Quant node {node.name!r} has a non-zero zero point; hls4ml's ap_fixed weights take zero point 0 only")
        for reader in readers(node.output[0]):
            slot = list(reader.input).index(node.output[0])
            owner, role = reader.name, ("weight" if slot == 1 else "bias")
            if reader.op_type == "Add":  # MatMul + Add(bias) after GemmToMatMul: the bias of the MatMul
                other = next((producers.get(i) for i in reader.input if i != node.output[0]), None)
                if other is None or other.op_type != "MatMul":
                    raise ExportError(f"hls4ml target: a quantised constant is added at node {reader.name!r} that does not follow a MatMul; "
                                      "hls4ml takes constants as Conv/MatMul weights and biases only")
                owner, role = other.name, "bias"
            prec, exact, width = _constant_precision(y, scale, int(bits), signed, role)
            precisions.setdefault(owner, {})[role] = prec
            row = rows.setdefault(owner, {"node": owner, "layer": None})
            row.update({f"{role}_bits": int(bits), f"{role}_precision": prec, f"{role}_exact": exact})
            if role == "weight":
                weight_ints[owner] = _weight_integers(y, scale, reader.op_type, y.ndim)
        graph.node.remove(node)
        graph.initializer.append(numpy_helper.from_array(y, node.output[0]))
        folded += 1
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:  # the folded Quants' scale / zero point / bits
        graph.initializer.remove(t)
    if folded:
        notes.append(f"{folded} Quant node(s) on weights/biases folded into initialisers (hls4ml 1.3 cannot fold per-channel or bias Quants)")

    # Transpose -> global pooling: an Identity that keeps the channels-first shape (see module docstring).
    shapes = {}
    for node in list(graph.node):
        if node.op_type != "Transpose":
            continue
        rs = readers(node.output[0])
        if not rs or not all(r.op_type in ("GlobalAveragePool", "GlobalMaxPool") for r in rs):
            continue
        shapes[node.output[0]] = model.get_tensor_shape(node.output[0])
        idx = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(idx, helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        notes.append(f"Transpose {node.name!r} in front of a global pool made an Identity (hls4ml pools channels-last data)")
    for name, shape in shapes.items():
        model.set_tensor_shape(name, shape)

    # Global average pools: sum and mean POOL_GUARD_BITS finer than the quantised input (hls4ml's
    # default precision can be coarser than the input's own LSB).
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type != "GlobalAveragePool":
            continue
        src = producers.get(node.input[0])
        while src is not None and src.op_type in ("Identity", "Transpose"):
            src = producers.get(src.input[0])
        shape = model.get_tensor_shape(node.input[0])
        if src is None or src.op_type != "Quant" or shape is None or src.input[1] not in inits:
            continue
        sc = numpy_helper.to_array(inits[src.input[1]]).astype(np.float64).ravel()
        e = np.log2(sc)
        if sc.size != 1 or not np.allclose(e, np.round(e)):
            continue
        b, sat = int(numpy_helper.to_array(inits[src.input[3]])), _attrs(src)
        grow = int(np.ceil(np.log2(max(int(np.prod(shape[2:])), 2)))) + 1
        integer = b + int(np.round(e[0])) + grow
        prec = f"fixed<{b + grow + POOL_GUARD_BITS + 1},{integer + 1}>"
        precisions.setdefault(node.name, {}).update({"accum": prec, "result": prec})
    out_scale = None
    last = producers.get(graph.output[0].name)
    if last is not None and last.op_type == "Quant" and last.input[1] in inits:
        sc = numpy_helper.to_array(inits[last.input[1]]).astype(np.float64).ravel()
        out_scale = float(sc.min()) if sc.size else None
    notes += _fold_zero_pads(model)
    layers = {}
    if qmodel is not None and weight_ints:
        matched = match_layer_weights(qmodel, weight_ints)
        layers = {node: layer for layer, node in matched.items()}
        for node, row in rows.items():
            row["layer"] = layers.get(node)
    return model, {"precisions": precisions, "layers": layers, "table": list(rows.values()), "rewrites": notes, "output_scale": out_scale}


def _fold_zero_pads(model) -> list[str]:
    """A zero Pad (channels-first, spatial axes only) that reaches a Conv through Transpose /
    zero-point-0 Quant / Identity nodes alone becomes the Conv's own (possibly asymmetric) padding.

    hls4ml 1.3 parses an ONNX Pad as channels-last, so a Pad left channels-first in front of
    qonnx's input Transpose (DS-CNN's TF-style 'same' ZeroPad2d) gives the next Conv the wrong
    input size: ``np.split`` fails in ``generate_conv2d_line_buffer_fn`` (upstream cause). Quant of
    zero is zero, so moving the zeros into the Conv changes no value."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    notes = []
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        at = _attrs(pad)
        if at.get("mode", "constant") != "constant" or len(pad.input) < 2 or pad.input[1] not in inits:
            continue
        if len(pad.input) > 2 and pad.input[2] and (pad.input[2] not in inits or np.any(numpy_helper.to_array(inits[pad.input[2]]) != 0)):
            continue
        pads = [int(v) for v in numpy_helper.to_array(inits[pad.input[1]])]
        rank = len(pads) // 2
        begin, end = pads[:rank], pads[rank:]
        if rank < 3 or any(begin[:2]) or any(end[:2]):
            continue
        node, chain = pad, []
        while True:
            readers = [n for n in graph.node if node.output[0] in n.input]
            if len(readers) != 1:
                break
            node = readers[0]
            if node.op_type == "Quant" and node.input[2] in inits and np.all(numpy_helper.to_array(inits[node.input[2]]) == 0):
                chain.append(node)
            elif node.op_type in ("Transpose", "Identity"):
                chain.append(node)
            else:
                break
        if node.op_type != "Conv" or node is pad:
            continue
        conv_pads = list(_attrs(node).get("pads", [0] * (2 * (rank - 2))))
        k = rank - 2
        new = [conv_pads[i] + begin[2 + i] for i in range(k)] + [conv_pads[k + i] + end[2 + i] for i in range(k)]
        for a in node.attribute:
            if a.name == "pads":
                del a.ints[:]
                a.ints.extend(new)
                break
        else:
            from onnx import helper

            node.attribute.append(helper.make_attribute("pads", new))
        first = chain[0] if chain else node
        first.input[0] = pad.input[0]
        graph.node.remove(pad)
        shape = list(model.get_tensor_shape(pad.input[0]))
        for n in chain:  # the unpadded shapes along the chain
            if n.op_type == "Transpose":
                shape = [shape[i] for i in _attrs(n)["perm"]]
            model.set_tensor_shape(n.output[0], shape)
        notes.append(f"zero Pad {pad.name!r} folded into the padding of Conv {node.name!r} (hls4ml reads ONNX Pad as channels-last)")
    if notes:
        used = {i for n in graph.node for i in n.input}
        for t in [t for t in graph.initializer if t.name not in used]:
            graph.initializer.remove(t)
    return notes


def _hls_config(model, precisions: dict, input_precision: str) -> dict:
    import hls4ml

    cfg = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vitis", default_precision=DEFAULT_PRECISION)
    names = cfg["LayerName"]
    for node, prec in precisions.items():
        names.setdefault(node, {}).setdefault("Precision", {}).update(prec)
    names.setdefault("global_in", {}).setdefault("Precision", {})["result"] = input_precision
    for name, layer in names.items():
        layer["Trace"] = True
    cfg["Model"]["Strategy"] = STRATEGY
    return cfg


@contextlib.contextmanager
def _hls4ml_quiet():
    """hls4ml prints its topology; keep it off the caller's stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def build_project(qmodel: nn.Module, example: torch.Tensor, out_dir: str | os.PathLike) -> tuple[object, dict]:
    """Export ``qmodel`` to QONNX, prepare it (:func:`prepare_for_hls`) and write the hls4ml project
    into ``out_dir`` (traced layers on). Returns ``(hls_model, manifest)``; raises one-line
    ExportError / ToolchainError."""
    from ..export.qonnx import export_qonnx

    out_dir = Path(out_dir)
    qonnx_path = out_dir.parent / f"{out_dir.name}.qonnx.onnx"
    export_qonnx(qmodel, example, qonnx_path, pack=False)
    model, info = prepare_for_hls(qonnx_path, qmodel)
    unsupported = _unsupported_nodes(model)
    if unsupported:
        raise ExportError(f"target 'hls4ml' cannot take {len(unsupported)} node(s): " + "; ".join(f"{n} ({why})" for n, why in unsupported.items()))
    try:
        import hls4ml

        with _hls4ml_quiet():
            cfg = _hls_config(model, info["precisions"], "fixed<48,16>")
            hls_model = hls4ml.converters.convert_from_onnx_model(model.model, output_dir=str(out_dir), project_name=PROJECT, io_type=IO_TYPE,
                                                                   backend="Vitis", hls_config=cfg)
            hls_model.config.trace_output = True
            hls_model.write()
        build = out_dir / "build_lib.sh"
        build.write_text(build.read_text().replace('CFLAGS="-O3 -fPIC"', f'CFLAGS="{CXX_OPT} -fPIC"'))
    except (ExportError, ToolchainError):
        raise
    except Exception as exc:  # hls4ml's own failure: one line, with its node where it says
        where = _failing_node(exc)
        hint = ("; this node rescales a float (non power-of-two) quantiser scale, which hls4ml 1.3 cannot move through the next layer: "
                "quantise with scale_type 'po2' for this target") if "ApplyAlpha" in where else ""
        raise ToolchainError(f"hls4ml failed to convert the QONNX export: {type(exc).__name__}: {_first_line(exc)}{where}{hint}") from None
    layers_map = info["layers"]
    traced = {}
    for layer in hls_model.get_layers():
        if layer.get_attr("function_cpp", None) and layer.get_attr("trace", False):
            traced[layer.name] = [int(s) for s in layer.get_output_variable().shape]
    manifest = {
        "project": PROJECT,
        "input_shape": [int(s) for s in hls_model.get_input_variables()[0].shape],
        "output_shape": [int(s) for s in hls_model.get_output_variables()[0].shape],
        "input_layout": "channels_last",
        "traced": traced,
        "trace_layers": _trace_layer_names(hls_model, layers_map),
        "precisions": info["table"],
        "layer_types": {layer.name: {t: str(v.precision) for t, v in layer.types.items()} for layer in hls_model.get_layers()},
        "rewrites": info["rewrites"],
        "output_scale": info["output_scale"],
        "hls4ml_version": hls4ml.__version__,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    qonnx_path.unlink(missing_ok=True)
    return hls_model, manifest


def _trace_layer_names(hls_model, layers_map: dict) -> dict:
    """``{hls4ml layer: workbench layer}`` for the layers that compute a workbench layer
    (``Conv2D_Conv_0`` comes from ONNX node ``Conv_0``, ``Dense_MatMul_0`` from ``MatMul_0``)."""
    out = {}
    for layer in hls_model.get_layers():
        for node, wb_layer in layers_map.items():
            if layer.name == node or (layer.name.endswith(f"_{node}") and layer.name.split("_", 1)[0] in (
                    "Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "Dense", "PointwiseConv1D", "PointwiseConv2D")):
                out[layer.name] = wb_layer
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:240]


def _failing_node(exc: BaseException) -> str:
    tb = exc.__traceback__
    node = None
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("node") or tb.tb_frame.f_locals.get("self")
        if getattr(obj, "name", None) and hasattr(obj, "class_name"):
            node = f"{obj.name} ({obj.class_name})"
        tb = tb.tb_next
    return f" at node {node}" if node else ""


def _unsupported_nodes(model) -> dict[str, str]:
    """ONNX nodes of the prepared graph that hls4ml's ONNX frontend has no handler for, or Quant
    nodes it cannot map (unsigned narrow range, rounding other than ROUND / FLOOR)."""
    from hls4ml.converters.onnx_to_hls import get_supported_onnx_layers

    known = set(get_supported_onnx_layers()) | {"Identity", "Dropout"}
    out = {}
    for node in model.graph.node:
        if node.op_type not in known:
            out[node.name] = f"op {node.op_type} has no hls4ml ONNX handler"
        elif node.op_type == "Quant":
            at = _attrs(node)
            if at.get("narrow", 0) and not at.get("signed", 1):
                out[node.name] = "unsigned narrow-range Quant (hls4ml maps narrow range to signed AP_SAT_SYM only)"
            if at.get("rounding_mode", "ROUND") not in ("ROUND", "FLOOR"):
                out[node.name] = f"rounding mode {at.get('rounding_mode')} (hls4ml takes ROUND and FLOOR)"
    return out


# ----------------------------------------------------------------------------- compiled emulation


def _compile_project(project: Path) -> float:
    """Compile the project's C++ emulation library with g++ (hls4ml's ``build_lib.sh``); seconds."""
    if shutil.which("g++") is None:
        raise ToolchainError("target 'hls4ml' needs g++ to compile the C++ emulation; install g++ (e.g. apt-get install g++)")
    t = time.perf_counter()
    proc = children.run(["bash", "build_lib.sh"], cwd=project)  # bash, g++ and cc1plus die with this run
    if proc.returncode != 0:
        err = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "")
        raise ToolchainError(f"g++ failed to compile the hls4ml emulation in {project.name}: {err.strip()[:300]}")
    return time.perf_counter() - t


class Emulation:
    """A compiled hls4ml project loaded with ctypes: ``predict(x)`` (channels-last inputs, one row
    per sample) and ``trace(x)`` (``{hls4ml layer: array}``), as hls4ml's own ``ModelGraph.predict``
    / ``trace`` call its bridge. ``compile_seconds`` says what g++ took."""

    def __init__(self, project: Path):
        self.project = Path(project)
        self.manifest = json.loads((self.project / MANIFEST).read_text())
        libs = sorted((self.project / "firmware").glob(f"{PROJECT}-*.so"))
        self.compile_seconds = None
        if not libs:
            self.compile_seconds = _compile_project(self.project)
            libs = sorted((self.project / "firmware").glob(f"{PROJECT}-*.so"))
        self.lib = ctypes.cdll.LoadLibrary(str(libs[-1]))
        self.fn = getattr(self.lib, f"{PROJECT}_float")
        self.fn.restype = None
        ptr = np.ctypeslib.ndpointer(ctypes.c_float, flags="C_CONTIGUOUS")
        self.fn.argtypes = [ptr, ptr]
        self.in_size = int(np.prod(self.manifest["input_shape"]))
        self.out_size = int(np.prod(self.manifest["output_shape"]))

    def _rows(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
        if x.shape[1] != self.in_size:
            raise ExportError(f"hls4ml emulation takes {self.in_size} values per sample ({self.manifest['input_shape']}); got {x.shape[1]}")
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self._rows(x)
        out = np.zeros((len(x), self.out_size), dtype=np.float32)
        for i in range(len(x)):
            y = np.zeros(self.out_size, dtype=np.float32)
            self.fn(np.ascontiguousarray(x[i]), y)
            out[i] = y
        return out

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        class TraceData(ctypes.Structure):
            _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.c_void_p)]

        x = self._rows(x)
        sizes = {k: tuple(v) for k, v in self.manifest["traced"].items()}
        collect = self.lib.collect_trace_output
        collect.argtypes, collect.restype = [ctypes.POINTER(TraceData)], None
        alloc = self.lib.allocate_trace_storage
        alloc.argtypes, alloc.restype = [ctypes.c_size_t], None
        free = self.lib.free_trace_storage
        free.argtypes, free.restype = None, None
        data = (TraceData * len(sizes))()
        out = {k: [] for k in sizes}
        alloc(ctypes.sizeof(ctypes.c_float))
        try:
            for i in range(len(x)):
                y = np.zeros(self.out_size, dtype=np.float32)
                self.fn(np.ascontiguousarray(x[i]), y)
                collect(data)
                for t in data:
                    name = t.name.decode()
                    arr = np.ctypeslib.as_array(ctypes.cast(t.data, ctypes.POINTER(ctypes.c_float)), shape=sizes[name])
                    out[name].append(np.copy(arr))
        finally:
            free()
        return {k: np.asarray(v) for k, v in out.items() if v}


_EMULATIONS: dict[str, tuple[tempfile.TemporaryDirectory, Emulation]] = {}
#: Compiled emulations kept at once (each holds a loaded library and its project folder).
MAX_CACHED = 8


def _remember(path: Path, tmp: tempfile.TemporaryDirectory, emu: Emulation) -> None:
    from ..infra.fileio import sha256_file

    key = sha256_file(path)
    while len(_EMULATIONS) >= MAX_CACHED:
        _EMULATIONS.pop(next(iter(_EMULATIONS)))  # the loaded library stays mapped; its folder goes
    _EMULATIONS[key] = (tmp, emu)


def load_emulation(path: str | os.PathLike) -> Emulation:
    """The artifact at ``path`` unpacked into a temporary folder and compiled with g++; cached per
    artifact content (SHA-256) for the life of the process."""
    from ..infra.fileio import sha256_file

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"hls4ml artifact {str(path)!r} does not exist; expected a {HLS4MLTarget.suffix} file written by export()")
    key = sha256_file(path)
    if key in _EMULATIONS:
        return _EMULATIONS[key][1]
    tmp = children.temp_dir("wb-hls4ml-")
    try:
        with tarfile.open(path, "r:gz") as tar:
            tar.extractall(tmp.name, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        tmp.cleanup()
        raise ExportError(f"hls4ml artifact {str(path)!r} is not a readable .tar.gz ({_first_line(exc)}); expected a file written by export()") from None
    project = Path(tmp.name) / PROJECT
    if not (project / MANIFEST).is_file():
        tmp.cleanup()
        raise ExportError(f"hls4ml artifact {str(path)!r} holds no {PROJECT}/{MANIFEST}; expected a file written by export()")
    try:
        emu = Emulation(project)
    except BaseException:
        tmp.cleanup()
        raise
    _remember(path, tmp, emu)
    return emu


def _channels_last(x: torch.Tensor | np.ndarray) -> np.ndarray:
    import torch

    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.ndim >= 3 else x


def _channels_first(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if a.ndim >= 3 else a


# ----------------------------------------------------------------------------- the target


@register_exporter
class HLS4MLTarget(Target):
    name, suffix = "hls4ml", ".hls4ml.tar.gz"
    carries = "integers of any width as ap_fixed / ap_int per layer (exact for power-of-two scales), batch 1"
    max_bits = None
    verified_by = "hls4ml's C++ emulation compiled with g++ (eval split)"
    description = "an hls4ml (Vitis HLS) project from the QONNX export, for FPGAs; C++ emulation checked against the simulation"
    requires = ("hls4ml", "qonnx")
    runtime = RUNTIME
    needs_float_model = False

    def support(self, qmodel: nn.Module):
        """One row per quantised layer: hls4ml takes Conv1d / Conv2d (plain or depthwise) and
        Linear with integer weights and activations; minifloat formats, grouped (not depthwise)
        convolutions, dilation and other layer types are named with the reason."""
        import torch
        from torch import nn

        import pandas as pd

        from ..core.describe import describe

        example = None
        shape = getattr(qmodel, "workbench_input_shape", None)
        if shape is not None:
            example = torch.zeros((1, *shape), dtype=getattr(qmodel, "workbench_input_dtype", torch.float32))
        table = describe(qmodel, example)
        modules = dict(qmodel.named_modules())
        plan = getattr(qmodel, "workbench_plan", None)
        settings = plan.layers if plan is not None else {}
        rows = []
        for r in table.itertuples():
            m = modules.get(r.layer)
            reason = ""
            if getattr(settings.get(r.layer), "act_mode", "static") == "dynamic":
                reason = "act_mode 'dynamic': hls4ml takes static activation scales only (ap_fixed types fixed at compile time)"
            elif r.type.startswith("Embedding") or "kept in float" in r.type:
                reason = f"{r.type}: hls4ml's ONNX frontend has no such layer"
            elif settings.get(r.layer) is not None and settings[r.layer].scale_type != "po2" and (settings[r.layer].weight_bits or settings[r.layer].act_bits):
                reason = ("float scales: ap_fixed holds power-of-two scales only, and hls4ml 1.3 fails to move a float rescale "
                          "(ApplyAlpha) through the next layer; quantise with scale_type: po2")
            elif r.weight_format not in (None, "int") or r.act_format not in (None, "int"):
                reason = f"number format {r.weight_format if r.weight_format not in (None, 'int') else r.act_format}: hls4ml takes integers (ap_fixed), not minifloats"
            elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
                if m.groups not in (1, m.in_channels) or (m.groups > 1 and m.out_channels != m.in_channels):
                    reason = f"grouped convolution (groups={m.groups}): hls4ml takes plain (groups=1) and depthwise convolutions only"
                elif any(d != 1 for d in m.dilation):
                    reason = f"dilation {tuple(m.dilation)}: hls4ml's convolutions take dilation 1 only"
            elif not isinstance(m, nn.Linear):
                reason = f"{type(m).__name__}: hls4ml's ONNX frontend takes Conv and Gemm/MatMul layers"
            rows.append({"layer": r.layer, "op": r.type, "supported": not reason, "reason": reason or None})
        return pd.DataFrame(rows, columns=["layer", "op", "supported", "reason"])

    def export(self, qmodel, example, path, float_model=None, task=None, **options) -> Path:
        """Write the hls4ml project, with its C++ emulation compiled once as a check (so an artifact
        that g++ cannot build is never written), as a ``.tar.gz`` at ``path`` (atomically)."""
        from ..infra.fileio import atomic_target

        self.check(qmodel)
        path = Path(path)
        tmp = children.temp_dir("wb-hls4ml-")
        try:
            project = Path(tmp.name) / PROJECT
            build_project(qmodel, example, project)
            seconds = _compile_project(project)
            manifest = json.loads((project / MANIFEST).read_text())
            manifest["compile_seconds"] = round(seconds, 2)
            (project / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            with atomic_target(path) as part:
                with tarfile.open(part, "w:gz") as tar:
                    tar.add(project, arcname=PROJECT, filter=_without_build_products)
            emu = Emulation(project)  # the library g++ just built: evaluate() in this process reuses it
            emu.compile_seconds = seconds
        except BaseException:
            tmp.cleanup()
            raise
        _remember(path, tmp, emu)
        return path

    def evaluate(self, path, qmodel, task, n: int | None = None, sim_outputs=None, **options) -> list[dict]:
        """One row: the compiled emulation on the first ``n`` eval samples (all: None) against the
        simulation: top-1 ``agreement``, ``max_lsb_diff`` (largest output difference in output
        LSBs, the output quantiser's scale; None where the output is not quantised), ``metric``."""
        import torch

        from ..tasks.evaluate import predict
        from ..tasks.metrics import output_agreement

        self.available()
        emu = load_emulation(path)
        split = task.data.eval if n is None else task.data.eval.head(n)
        out = torch.from_numpy(emu.predict(_channels_last(split.x)))
        sim = predict(qmodel, split.x) if sim_outputs is None else torch.as_tensor(sim_outputs)[: len(split.x)].float()
        cmp = output_agreement(out, sim, task.kind)
        lsb = emu.manifest.get("output_scale")
        diff = float((out - sim).abs().max())
        row = {k: None for k in DEPLOYMENT_COLUMNS}
        row.update({
            "target": self.name, "runtime": RUNTIME, "metric": task.score(out, split), "agreement": cmp["agreement"],
            "max_lsb_diff": (diff / lsb) if lsb else None, "samples": len(split.x), "file_bytes": Path(path).stat().st_size,
            "unsupported": None, "artifact": Path(path).name,
            "latency_source": "none: hls4ml estimates latency only from HLS synthesis reports, not from the C++ emulation",
        })
        return [row]

    def layer_outputs(self, path_or_model, x, qmodel: nn.Module | None = None) -> dict:
        """``{workbench layer: output}`` (NCHW, float) of the Conv / Linear layers as the emulation
        computes them, from hls4ml's trace: the sum before the activation and its quantiser, except
        where hls4ml fused the following quantiser into the layer's result type (the last Dense
        feeding the output quantiser): there the quantised value. ``path_or_model``:
        an artifact path (or a quantised model, exported to a temporary artifact first)."""
        import torch
        from torch import nn

        if isinstance(path_or_model, nn.Module):
            qmodel = path_or_model
            with children.temp_dir("wb-hls4ml-") as tmp:
                art = self.export(qmodel, torch.as_tensor(x)[:1], Path(tmp) / f"model{self.suffix}")
                emu = load_emulation(art)
        else:
            emu = load_emulation(path_or_model)
        traced = emu.trace(_channels_last(x))
        names = emu.manifest["trace_layers"]
        return {names[k]: _channels_first(v) for k, v in traced.items() if k in names}


def _without_build_products(info: tarfile.TarInfo):
    name = info.name
    if name.endswith((".so", ".o")) or "/.git" in name:
        return None
    return info


def precisions(path: str | os.PathLike) -> "pd.DataFrame":  # noqa: F821
    """Per quantised layer of an artifact: ``layer``, ``node`` (ONNX), weight / bias bits,
    ``weight_precision``, ``bias_precision`` (hls4ml types) and whether each is ``exact``."""
    import pandas as pd

    with tarfile.open(path, "r:gz") as tar:
        manifest = json.load(tar.extractfile(f"{PROJECT}/{MANIFEST}"))
    return pd.DataFrame(manifest["precisions"])
