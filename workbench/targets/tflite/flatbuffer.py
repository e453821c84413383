"""Reading and rewriting a ``.tflite`` flatbuffer: its ops and tensor types, the workbench layer
each op's output belongs to (:func:`layer_tensor_map`), and the 2..7-bit layers' weights
rewritten as int8 containers (:func:`write_int8_containers`)."""

from __future__ import annotations

import os
import re

import numpy as np
import torch
from torch import nn

from ...infra.errors import ExportError
from .layers import CONTAINER_BITS, LAYER_OPS, _layer_settings, _module_regex, _nan_none


# ----------------------------------------------------------------------------- int8 containers


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


def _layers_from_names(path) -> list[str]:
    out = []
    for op, tname, inputs in op_types(path):
        if op in LAYER_OPS and len(inputs) > 1:
            last = inputs[1].split(";")[0]
            parts = [p.rsplit("_", 1)[-1] if "_" in p else p for p in last.split("/")[1:]]
            out.append(".".join(parts))
    return out
