"""Where an export and the Brevitas simulation part ways: layer by layer for any deployment
target (:func:`divergence`), and quantiser by quantiser for QCDQ (:func:`quantiser_divergence`).

:func:`divergence` (``wb.divergence``) compares each quantised layer's fused output
(:func:`simulation_layer_outputs`: the tensor the next layer reads, after the activation a
runtime fuses into the layer) with the same tensor from a target: the QCDQ ONNX file in
onnxruntime (:func:`onnx_layer_outputs`) or any registered target's ``layer_outputs``. One row
per layer, in execution order: SQNR, cosine, largest difference (in output quantisation steps
too), the first layer under a SQNR threshold, and layers the target does not expose flagged.

:func:`quantiser_divergence` exports ``qmodel`` with Brevitas's own QCDQ exporter (no workbench
rewrite: their node names still name the module each QuantizeLinear came from), runs it in
onnxruntime with every activation QuantizeLinear's integer output exposed, and compares those
integers with the codes the simulation's quantiser modules produce on the same inputs (forward
hooks). One row per activation quantiser, in graph order: the fraction of codes that differ and
the largest difference. What the rows tell:

- a quantiser placed differently in export and simulation, or a different rounding mode or
  scale, shows where its inputs are still identical: codes differing by more than one step, or
  differing at the first quantisers (those that read the model input through float ops alone);
- float operations that the two runtimes compute with different last-bit rounding (LayerNorm,
  softmax, GELU, float matmuls) move a value across a rounding boundary now and then: codes one
  step apart in a small fraction of places, a fraction that grows with depth because each moved
  code moves the next layer's inputs by a whole step (:func:`quantiser_divergence` measured this on
  ``hf-bert``; the same cascade appears between the float32 simulation and the same simulation in
  float64).

The workbench's own rewrites (:func:`workbench.export.qcdq.export_qcdq`) are exact re-encodings checked
end to end (``tests/test_encoder_agreement.py``); this tool bisects placement and rounding.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np
import onnx
import torch
from brevitas import nn as qnn
from onnx import numpy_helper
from torch import nn

_LEVELS = ("disabled", "basic", "extended", "default")


def _module_of(node_name: str) -> str:
    """``/model/bert/encoder/layer.0/attention/self/query/input_quant/export_handler/QuantizeLinear``
    -> ``model.bert.encoder.layer.0.attention.self.query.input_quant``."""
    parts = node_name.strip("/").split("/")
    cut = parts.index("export_handler") if "export_handler" in parts else len(parts) - 1
    return ".".join(parts[:cut])


def _run_hooked(model: nn.Module, x, handles) -> None:
    """One eval-mode, no-grad forward of ``model`` on ``x`` with the hooks ``handles`` registered;
    the hooks are removed and the train / eval mode restored, also when the forward raises."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def quantiser_divergence(qmodel: nn.Module, x: torch.Tensor, level: str = "disabled") -> list[dict]:
    """Per activation quantiser (graph order): ``{"quantiser", "elements", "mismatch", "max_code_diff"}``,
    comparing onnxruntime (at optimisation ``level``: disabled, basic, extended or default) with the
    simulation on inputs ``x``. ``mismatch`` is the fraction of integer codes that differ. Quantisers
    the hooks cannot reach are left out."""
    import onnxruntime as ort
    from brevitas.export import export_onnx_qcdq

    from ..export.onnx_io import DYNAMIC_BATCH, OPSET, _quiet
    from ..export.verify import _LEVELS as ORT_LEVELS, as_onnx_input

    if level not in _LEVELS:
        raise ValueError(f"level {level!r}; expected one of {', '.join(_LEVELS)}")
    qmodel.eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        with _quiet():
            export_onnx_qcdq(qmodel, args=x[:1], export_path=raw, dynamo=False, opset_version=OPSET, **DYNAMIC_BATCH)
        model = onnx.load(raw)
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts = set(inits) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    modules = dict(qmodel.named_modules())
    picked = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DynamicQuantizeLinear") or node.input[0] in consts:
            continue
        name = _module_of(node.name)
        if name not in modules:
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        unsigned = node.op_type == "DynamicQuantizeLinear" or zp is not None and zp.dtype == np.uint8
        elem = onnx.TensorProto.UINT8 if unsigned else onnx.TensorProto.INT8
        graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], elem, None))
        picked.append(name)
    so = ort.SessionOptions()
    if level != "default":
        so.graph_optimization_level = ORT_LEVELS.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: as_onnx_input(x)})[1:]

    codes: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(mod, args, out):
            if hasattr(out, "scale") and out.scale is not None:
                codes[name] = torch.round(out.value / out.scale + out.zero_point).double()
        return fn

    _run_hooked(qmodel, x, [modules[n].register_forward_hook(hook(n)) for n in dict.fromkeys(picked)])
    rows = []
    for name, got in zip(picked, outs):
        sim = codes.get(name)
        if sim is None or tuple(sim.shape) != got.shape:
            continue
        diff = (torch.from_numpy(got.astype(np.float64)) - sim).abs()
        rows.append({"quantiser": name, "elements": int(diff.numel()), "mismatch": float((diff > 0).double().mean()),
                     "max_code_diff": int(diff.max()) if diff.numel() else 0})
    return rows


def first_divergence(rows: list[dict]) -> dict | None:
    """The first row (graph order) whose codes differ anywhere; None when all agree."""
    return next((r for r in rows if r["mismatch"] > 0), None)


# --------------------------------------------------------------------------- per-layer view
# quantiser_divergence above bisects integer codes of one runtime; the functions below compare any
# deployment target's per-layer tensors with the simulation's, in floats, layer by layer.

#: Modules a deployment runtime fuses into the compute layer before them (conv + relu + requantise):
#: elementwise clamps and requantisers. Sigmoid, tanh, GELU and the like run as ops of their own
#: in runtimes (lookup tables, float kernels), so they end a chain.
FUSED_ACTIVATIONS = (qnn.QuantReLU, qnn.QuantIdentity, qnn.QuantHardTanh, nn.ReLU, nn.ReLU6, nn.Hardtanh)

#: The columns of :func:`divergence`, in order.
DIVERGENCE_COLUMNS = ("layer", "order", "shape", "sqnr_db", "cosine", "max_abs_diff", "max_lsb_diff", "over_threshold", "first", "missing", "note")


def _quantises_input(module) -> bool:
    """A compute layer that quantises what it reads itself (its ``input_quant``), as the workbench's
    module-by-module path places activation quantisers."""
    proxy = getattr(module, "input_quant", None)
    return isinstance(proxy, nn.Module) and bool(getattr(proxy, "is_quant_enabled", False))


def _fx_chains(qmodel: nn.Module) -> dict[str, tuple[tuple[str, str], ...]] | None:
    """On a torch.fx GraphModule: ``{layer: ((module name, "act" or "requant"), ...)}``, the steps
    fused after each layer. A step is a ``call_module`` node reading the previous node as its first
    argument where that previous node has no other reader: an activation of
    :data:`FUSED_ACTIVATIONS` (the chain goes on), or a compute layer quantising its input (the
    chain ends with that quantised input). None for a model without a graph."""
    graph = getattr(qmodel, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return None
    from ..core.quantize import QUANT_LAYERS

    modules = dict(qmodel.named_modules())
    chains: dict[str, tuple[tuple[str, str], ...]] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), QUANT_LAYERS) or node.target in chains:
            continue
        chain, cur = [], node
        while len(cur.users) == 1:
            (nxt,) = cur.users
            mod = modules.get(nxt.target) if nxt.op == "call_module" else None
            if mod is None or not nxt.args or nxt.args[0] is not cur:
                break
            if isinstance(mod, FUSED_ACTIVATIONS):
                chain.append((nxt.target, "act"))
                cur = nxt
                continue
            if isinstance(mod, QUANT_LAYERS) and _quantises_input(mod):
                chain.append((nxt.target, "requant"))
            break
        chains[node.target] = tuple(chain)
    return chains


def _as_input(qmodel: nn.Module, x) -> torch.Tensor:
    """``x`` as a batch tensor the model takes; a one-line DatasetError otherwise."""
    from ..infra.errors import DatasetError

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise DatasetError(f"inputs of type {type(x).__name__}; expected a torch tensor or numpy array of shape (N, *input_shape)")
    shape = getattr(qmodel, "workbench_input_shape", None)
    if shape is not None and (x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] == 0):
        raise DatasetError(f"inputs of shape {tuple(x.shape)}; the model takes a batch of shape (N, {', '.join(map(str, shape))}) with N >= 1")
    if shape is None and x.dim() < 2:
        raise DatasetError(f"inputs of shape {tuple(x.shape)}; expected a batch (N, ...)")
    return x


def _step(qt) -> np.ndarray | None:
    """The quantisation step (scale, broadcastable) of a Brevitas integer QuantTensor; None for float
    or minifloat tensors (no uniform step)."""
    scale = getattr(qt, "scale", None)
    if scale is None or hasattr(qt, "exponent_bit_width"):
        return None
    return scale.detach().double().cpu().numpy()


def _simulate(qmodel: nn.Module, x: torch.Tensor) -> tuple[dict, dict, dict]:
    """``(outputs, steps, exposed_by)`` of :func:`simulation_layer_outputs`: each layer's fused output,
    its quantisation step (None where it is float) and the module whose output it is
    (``<layer>.input_quant`` where the next layer's own input quantiser requantises it)."""
    from ..core.quantize import QUANT_LAYERS

    chains = _fx_chains(qmodel)
    named = list(qmodel.named_modules())
    layers = {m: n for n, m in named if isinstance(m, QUANT_LAYERS)}
    if chains is not None:
        wanted = {name for c in chains.values() for name, kind in c if kind == "act"}
        act_mods = {m: n for n, m in named if n in wanted}
    else:  # top-level activation modules only: not the ReLU inside a QuantReLU
        inside = [n for n, m in named if isinstance(m, QUANT_LAYERS + FUSED_ACTIVATIONS)]
        act_mods = {m: n for n, m in named if isinstance(m, FUSED_ACTIVATIONS) and not any(n.startswith(p + ".") for p in inside if p)}

    outputs: dict[str, np.ndarray] = {}
    steps: dict[str, np.ndarray | None] = {}
    exposed_by: dict[str, str] = {}
    open_: dict[int, tuple[str, int, object, int]] = {}  # id(tensor) -> (layer, chain position, tensor, its version)
    reading: dict[nn.Module, tuple] = {}  # module -> the open entry its input is, found before it runs
    last_quant: dict[nn.Module, object] = {}  # owner module -> the QuantTensor its output quantiser produced last

    def keep(layer, mod_name, out, step):
        value = out.value if hasattr(out, "value") and not isinstance(out, torch.Tensor) else out
        outputs[layer] = np.array(value.detach().float().cpu().numpy(), copy=True)  # a copy: later in-place ops must not reach it
        steps[layer] = step
        exposed_by[layer] = mod_name

    def quant_step(mod, out):
        if hasattr(out, "scale") and not isinstance(out, torch.Tensor):
            return _step(out)
        qt = last_quant.pop(mod, None)
        return None if qt is None else _step(qt)

    def step_allowed(entry, name, kind) -> bool:
        layer, k = entry[0], entry[1]
        if chains is None:
            return True
        return k < len(chains[layer]) and chains[layer][k] == (name, kind)

    def take(mod, args, name, kind):
        """Before ``mod`` runs: is its input an open chain's tensor itself, unchanged since it was
        written (an in-place ``h += residual`` in between bumps its version and ends the chain)?"""
        entry = open_.pop(id(args[0]), None) if args else None
        if entry is not None and entry[2] is args[0] and entry[3] == getattr(args[0], "_version", 0) and step_allowed(entry, name, kind):
            reading[mod] = entry

    def open_chain(layer, k, out):
        if chains is None or k < len(chains[layer]):
            open_[id(out)] = (layer, k, out, getattr(out, "_version", 0))

    def layer_pre_hook(mod, args):
        if _quantises_input(mod):
            take(mod, args, layers[mod], "requant")

    def layer_hook(mod, args, out):
        reading.pop(mod, None)
        name = layers[mod]
        if name in outputs:  # a layer called twice (shared weights): its first call counts
            return
        keep(name, name, out, quant_step(mod, out))
        open_chain(name, 0, out)

    def input_quant_hook(owner):
        def fn(mod, args, out):
            entry = reading.pop(owner, None)
            if entry is not None and hasattr(out, "scale"):
                keep(entry[0], f"{layers[owner]}.input_quant", out, _step(out))
        return fn

    def act_pre_hook(mod, args):
        take(mod, args, act_mods[mod], "act")

    def act_hook(mod, args, out):
        entry = reading.pop(mod, None)
        if entry is not None:
            keep(entry[0], act_mods[mod], out, quant_step(mod, out))
            open_chain(entry[0], entry[1] + 1, out)

    def proxy_hook(owner):
        def fn(mod, args, out):
            if hasattr(out, "scale"):
                last_quant[owner] = out
        return fn

    handles = []
    for mod in list(layers) + list(act_mods):
        for child in ("output_quant", "act_quant"):
            proxy = getattr(mod, child, None)
            if isinstance(proxy, nn.Module) and getattr(proxy, "is_quant_enabled", False):
                handles.append(proxy.register_forward_hook(proxy_hook(mod)))
    for mod in layers:
        if _quantises_input(mod):
            handles.append(mod.input_quant.register_forward_hook(input_quant_hook(mod)))
            handles.append(mod.register_forward_pre_hook(layer_pre_hook))
        handles.append(mod.register_forward_hook(layer_hook))
    handles += [m.register_forward_pre_hook(act_pre_hook) for m in act_mods]
    handles += [m.register_forward_hook(act_hook) for m in act_mods]
    _run_hooked(qmodel, x, handles)
    return outputs, steps, exposed_by


def simulation_layer_outputs(qmodel: nn.Module, x) -> dict[str, np.ndarray]:
    """``{layer: float32 numpy array}``: for each quantised compute layer (Brevitas QuantConv1d /
    QuantConv2d / QuantLinear, named as :func:`workbench.core.describe` names them), in the order the
    forward pass runs them, its output as the next layer sees it on the batch ``x`` (NCHW / NCL /
    NC, the simulation's own layout).

    Definition (what every target's ``layer_outputs`` returns under the same keys): the layer's
    output, or, where that output is read by an activation module and by nothing else, the
    output of that activation, and so on along a chain of such modules; and where the chain's
    tensor is then quantised by the next compute layer's own input quantiser (``input_quant``,
    as the workbench's module-by-module path places them), that quantised tensor (the module
    named ``<next layer>.input_quant``). Deployment runtimes fuse conv + relu + requantise and
    expose only the fused, requantised tensor. Activation modules
    are :data:`FUSED_ACTIVATIONS` (QuantReLU, QuantIdentity, QuantHardTanh, nn.ReLU, ReLU6,
    Hardtanh: the clamps and requantisers runtimes fuse) called as modules with the previous tensor itself as their first argument;
    functional calls (``F.relu``) and anything else (pooling, reshapes, additions) end the chain.
    "Read by nothing else" is checked on the model's torch.fx graph where it has one; on a model
    without one (Hugging Face models the workbench quantises module by module) the activation must
    read the very tensor object, unmodified (an in-place ``h += residual`` in between ends the
    chain), and a tensor also read by an out-of-place addition cannot be told apart.
    A layer that runs twice (shared weights) gives its first call; one that never runs is left
    out. Values are the dequantised (real) values, ``QuantTensor.value``."""
    outputs, _, _ = _simulate(qmodel, _as_input(qmodel, x))
    return outputs


def layer_output_modules(qmodel: nn.Module, x) -> dict[str, str]:
    """``{layer: name of the module whose output is that layer's tensor}`` in
    :func:`simulation_layer_outputs` (the layer itself, the last activation fused after it, or
    ``<next layer>.input_quant``):
    what a target's ``layer_outputs`` must return under each key. ``x``: a batch (one sample is
    enough) to run the model on."""
    return _simulate(qmodel, _as_input(qmodel, x))[2]


# The walk from a layer node to its fused tensor: first the layer's own arithmetic (a bias Add, the
# Cast and scale Mul after ConvInteger / MatMulInteger), then only what FUSED_ACTIVATIONS export to
# (Relu, Clip, Max / Min clamps) and requantisation (QuantizeLinear, DequantizeLinear).
_LAYER_ARITHMETIC = {"Cast", "Mul", "Add"}
_FUSED_OPS = {"Relu", "Clip", "Max", "Min", "QuantizeLinear", "DequantizeLinear", "Identity"}
_LAYER_OPS = ("Conv", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm")


def _node_module(name: str) -> tuple[str, ...]:
    """The module paths a layer node's name can stand for, most likely first.

    torch writes one scope per called module, each the child's name within the nearest called
    ancestor: ``/features.0/Conv`` -> ``features.0``; ``/model/encoder/stages.0/layer/layer.0/conv/Conv``
    -> ``model.encoder.stages.0.layer.0.conv`` (``layer.0`` replaces the ``layer`` it extends);
    the workbench's rewrites append to a node's name (``.../Conv/ConvInteger``)."""
    parts = [p for p in name.strip("/").split("/") if p not in ("e", "export_handler")]
    while parts and parts[-1].split("_")[0] in _LAYER_OPS:  # the op parts: Conv, Conv/ConvInteger, MatMul_1
        parts.pop()
    if not parts:
        return ()
    path: list[str] = []
    for p in parts:
        if path and p.startswith(path[-1] + "."):
            path[-1] = p
        else:
            path.append(p)
    return tuple(dict.fromkeys((".".join(path), ".".join(parts), parts[-1])))


def _fused_tensor(layer_node, consumers, outputs, const) -> tuple[str, object]:
    """Walk from a layer node's output through single-reader elementwise nodes (other inputs
    constant): the layer's own arithmetic, then fused clamps and requantisers. Returns the tensor
    name and the QuantizeLinear whose scale decodes it (None when it is float)."""
    t = layer_node.output[0]
    quant, fused = None, False
    while t not in outputs:
        users = consumers.get(t, [])
        if len(users) != 1:
            break
        n = users[0]
        if n.op_type in _FUSED_OPS:
            fused = True
        elif n.op_type not in _LAYER_ARITHMETIC or fused:
            break
        if n.input[0] != t or any(i and not const(i) for i in n.input[1:]):
            break
        if n.op_type == "QuantizeLinear":
            quant = n
        elif n.op_type == "DequantizeLinear":
            quant = None
        elif n.op_type != "Clip" and quant is not None:  # an op on integer codes other than a clamp: stop at the codes
            break
        t = n.output[0]
    return t, quant


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def onnx_layer_outputs(onnx_path, x, qmodel: nn.Module, level: str | None = None) -> dict[str, np.ndarray]:
    """The tensors of :func:`simulation_layer_outputs` (same keys, same definition) from a QCDQ ONNX
    file (:func:`workbench.export.qcdq.export_qcdq`) run in onnxruntime on ``x``, as float32 arrays.

    How each layer's tensor is found (:func:`divergence` says which in ``attrs["matched_by"]``):

    - ``"node name"``: the layer's node (Conv, Gemm, MatMul, ConvInteger, ...; the export keeps
      their names: ``/features.0/Conv`` for ``features.0``; where torch names a scope by the
      attribute alone, ``/conv1/Conv``, ``/conv1_1/Conv``, ... are the first, second, ... layer
      named ``*.conv1`` in the order the forward pass runs them); from its output the walk follows, while the
      tensor has a single reader, first the layer's own arithmetic (a bias Add; Cast and Mul by
      constants after ConvInteger), then what the fused activations and requantisers export to
      (Relu, Clip, Max / Min, QuantizeLinear, DequantizeLinear), and stops before anything else
      (Tanh, GELU, pooling, reshapes, a residual Add, the next layer) or where the tensor is read
      twice. That tensor is added
      to the graph's outputs; where it holds integer codes (a QuantizeLinear read by several
      DequantizeLinear, or followed by a Flatten) it is decoded with that QuantizeLinear's scale
      and zero point, exactly as the DequantizeLinear would.
    - ``"shape+cosine"``: where no node carries the layer's name, every float tensor of the graph
      with the simulation tensor's shape is a candidate and the one closest to it (cosine) wins.
      A layer left without a candidate is left out (``divergence`` flags it missing).

    ``level``: onnxruntime's graph optimisation level (``disabled``, ``basic``, ``extended``,
    ``default``; None: the level :func:`workbench.export.verify.session` uses for the file, ``extended``,
    where QDQ fuses into integer kernels). Exposing a tensor as a graph output keeps onnxruntime
    from fusing the nodes around it away, so a few QDQ groups may run as float ops rather than
    integer kernels; both compute the same integers but for rare float-rounding ties."""
    x = _as_input(qmodel, x)
    return _onnx_outputs(onnx_path, x, simulation_layer_outputs(qmodel, x), level)[0]


def _onnx_outputs(onnx_path, x: torch.Tensor, sim: dict, level: str | None) -> tuple[dict, dict]:
    """``(outputs, matched_by)`` of :func:`onnx_layer_outputs` given the simulation's tensors."""
    import onnxruntime as ort

    from ..export.onnx_graph import _constant
    from ..export.verify import _LEVELS as ORT_LEVELS, as_onnx_input, optimization_level

    level = level or optimization_level(onnx_path)
    if level not in _LEVELS:
        raise ValueError(f"level {level!r}; expected one of {', '.join(_LEVELS)}")
    model = onnx.load(str(onnx_path))
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # types are then guessed below
        pass
    graph = model.graph
    inits = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    producers = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    types = {v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.output) + list(graph.input)}

    by_name: dict[str, object] = {}
    taken: dict[str, int] = {}
    for n in graph.node:
        if n.op_type not in _LAYER_OPS or not n.name:
            continue
        paths = _node_module(n.name)
        layer = next((p for p in paths if p in sim and p not in by_name), None)
        if layer is None and len(paths) == 1:  # one scope named by attribute alone, numbered in call order: conv1, conv1_1, ...
            m = re.fullmatch(r"(.+?)(?:_(\d+))?", paths[-1])
            same = [k for k in sim if k.rsplit(".", 1)[-1] == m.group(1)]
            k = int(m.group(2) or 0)
            if k < len(same) and same[k] not in by_name:
                layer = same[k]
        if layer is not None:
            by_name[layer] = n
    picked: dict[str, tuple[str, object]] = {}
    for layer, node in by_name.items():
        picked[layer] = _fused_tensor(node, consumers, outputs, lambda i: i in inits)
    matched_by = {layer: "node name" for layer in picked}
    lost = [layer for layer in sim if layer not in picked]
    candidates = []
    if lost:
        float_ids = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
        candidates = [o for n in graph.node for o in n.output if o and o not in inits and types.get(o) in float_ids]

    wanted = list(dict.fromkeys([t for t, _ in picked.values()] + candidates))
    for t in wanted:
        if t not in outputs:
            elem = types.get(t)
            if elem is None or elem == onnx.TensorProto.UNDEFINED:
                q = producers.get(t)
                elem = onnx.TensorProto.FLOAT if q is None or q.op_type != "QuantizeLinear" else onnx.TensorProto.UINT8
            graph.output.append(onnx.helper.make_tensor_value_info(t, elem, None))
    so = ort.SessionOptions()
    if level != "default":
        so.graph_optimization_level = ORT_LEVELS[level]
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: as_onnx_input(x)})))

    result: dict[str, np.ndarray] = {}
    for layer in sim:
        if layer in picked:
            t, quant = picked[layer]
            v = values[t]
            if quant is not None:  # integer codes: decode as the DequantizeLinear would
                scale = _constant(graph, quant.input[1]).astype(np.float32)
                zp = _constant(graph, quant.input[2]) if len(quant.input) > 2 and quant.input[2] else None
                zp = np.zeros((), np.int32) if zp is None else zp.astype(np.int32)
                if scale.ndim == 1 and scale.size > 1:
                    axis = next((a.i for a in quant.attribute if a.name == "axis"), 1) % v.ndim
                    shape = [1] * v.ndim
                    shape[axis] = -1
                    scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.ndim else zp
                v = ((v.astype(np.int32) - zp) * scale).astype(np.float32)
            result[layer] = np.asarray(v, dtype=np.float32)
            continue
        best = None
        for t in candidates:
            v = values.get(t)
            if v is not None and v.shape == sim[layer].shape:
                c = _cosine(v, sim[layer])
                if best is None or c > best[0]:
                    best = (c, t)
        if best is not None:
            result[layer] = np.asarray(values[best[1]], dtype=np.float32)
            matched_by[layer] = "shape+cosine"
    return result, {k: matched_by[k] for k in result}


def apply_threshold(table, threshold_db: float):
    """A copy of a :func:`divergence` table with ``over_threshold`` (``sqnr_db`` below
    ``threshold_db``; missing rows never are) and ``first`` (the first such row in layer order)
    recomputed, and ``attrs`` ``threshold_db`` / ``first_layer`` set to match."""
    threshold_db = _check_threshold(threshold_db)
    out = table.copy()
    sqnr = out["sqnr_db"].astype(float)
    over = (sqnr < threshold_db).fillna(False).astype(bool)
    out["over_threshold"] = over
    first = np.zeros(len(out), dtype=bool)
    hits = np.flatnonzero(over.to_numpy())
    if len(hits):
        first[hits[0]] = True
    out["first"] = first
    out.attrs = dict(table.attrs)
    out.attrs["threshold_db"] = threshold_db
    out.attrs["first_layer"] = str(out["layer"].iloc[hits[0]]) if len(hits) else None
    return out


def _check_threshold(threshold_db) -> float:
    from ..infra.errors import SpecError

    if isinstance(threshold_db, bool) or not isinstance(threshold_db, (int, float, np.integer, np.floating)) or not np.isfinite(threshold_db):
        raise SpecError(f"threshold_db {threshold_db!r}; expected a finite number of decibels, such as 30.0")
    return float(threshold_db)


def _compare(sim: np.ndarray, got, step) -> dict:
    """One row's numbers: sqnr_db, cosine, max_abs_diff, max_lsb_diff and a note."""
    nan = float("nan")
    row = {"sqnr_db": nan, "cosine": nan, "max_abs_diff": nan, "max_lsb_diff": nan, "note": ""}
    got = np.asarray(got, dtype=np.float64)
    sim = sim.astype(np.float64)
    notes = []
    if got.shape != sim.shape and got.ndim == sim.ndim >= 3 and got.shape[1:] == (*sim.shape[2:], sim.shape[1]):
        got = np.moveaxis(got, -1, 1)  # a channels-last runtime (TFLite): compare in the simulation's layout
        notes.append("channels-last, compared in channels-first")
    if got.shape != sim.shape and got.ndim == sim.ndim and 0 < got.shape[0] < sim.shape[0] and got.shape[1:] == sim.shape[1:]:
        sim = sim[: got.shape[0]]
        notes.append(f"first {got.shape[0]} of the samples")
    if got.shape != sim.shape:
        row.update(sqnr_db=-np.inf, note=f"shape {tuple(got.shape)}, the simulation's {tuple(sim.shape)}")
        return row
    if not np.isfinite(got).all():
        row.update(sqnr_db=-np.inf, note="; ".join(notes + ["non-finite values"]))
        return row
    diff = sim - got
    signal, noise = float(np.mean(sim ** 2)), float(np.mean(diff ** 2))
    with np.errstate(divide="ignore"):
        sqnr = np.inf if noise == 0 else (-np.inf if signal == 0 else 10 * np.log10(signal / noise))
    row.update(sqnr_db=float(sqnr), cosine=_cosine(sim, got), max_abs_diff=float(np.abs(diff).max()) if diff.size else 0.0)
    if step is not None and diff.size:
        row["max_lsb_diff"] = float(np.round(np.max(np.abs(diff) / step), 3))  # float32 values: steps to 3 decimals
    row["note"] = "; ".join(notes)
    return row


def divergence(qmodel: nn.Module, x, target_outputs: dict | None = None, *, target: str = "qcdq", artifact=None,
               threshold_db: float = 30.0):
    """Where a deployment target's per-layer tensors part from the simulation's: one row per
    quantised layer, in the order the forward pass runs them (:func:`simulation_layer_outputs`).

    ``target_outputs``: ``{layer: array}`` from a target's ``layer_outputs`` (keys as
    :func:`simulation_layer_outputs` names them; channels-last arrays are moved to channels-first,
    and a batch of the first n samples is compared with those). Without it, they are computed:
    for ``target="qcdq"`` by :func:`onnx_layer_outputs` on the ONNX file ``artifact`` (None:
    :func:`workbench.export.qcdq.export_qcdq` writes one to a temporary folder); for another target
    by ``workbench.export.exporters.get_exporter(target).layer_outputs(artifact, x, qmodel=qmodel)``
    (``qmodel`` passed where its signature takes it). With ``target_outputs`` given, ``target``
    only labels the table. ``target_outputs`` must come from the same inputs ``x``.

    Columns (:data:`DIVERGENCE_COLUMNS`): ``layer``, ``order`` (0, 1, ...), ``shape`` (the
    simulation's), ``sqnr_db`` (10 log10 of the simulation's mean square over the mean square
    difference; inf where equal; -inf where the target's tensor has another shape or non-finite
    values), ``cosine``, ``max_abs_diff``, ``max_lsb_diff`` (the largest difference in steps of
    that layer's output quantiser; NaN where the simulation's tensor is float), ``over_threshold``
    (``sqnr_db < threshold_db``), ``first`` (True on the first row over the threshold), ``missing``
    (the target does not expose that layer: its numbers are NaN, and it is never over the
    threshold) and ``note``. ``attrs``: ``threshold_db``, ``target``, ``first_layer`` (None when
    no layer is over), ``exposed_by`` ({layer: the module whose output is compared}) and, for
    QCDQ files, ``matched_by`` ({layer: "node name" or "shape+cosine"}).

    Errors, each one line: :class:`~workbench.infra.errors.DatasetError` for ``x`` not of the model's
    input shape; :class:`~workbench.infra.errors.SpecError` for ``target_outputs`` that is not a dict
    of arrays or names layers the model does not have, or a bad ``threshold_db``;
    :class:`~workbench.infra.errors.ExportError` for an unknown target, a target without
    ``layer_outputs``, or a missing artifact.
    """
    import pandas as pd

    from ..infra.errors import ExportError, SpecError
    from ..core.quantize import QUANT_LAYERS

    threshold_db = _check_threshold(threshold_db)
    x = _as_input(qmodel, x)
    known = [n for n, m in qmodel.named_modules() if isinstance(m, QUANT_LAYERS)]
    matched_by = None
    if target_outputs is not None:
        if not isinstance(target_outputs, dict):
            raise SpecError(f"target_outputs of type {type(target_outputs).__name__}; expected a dict {{layer name: array}} from a target's layer_outputs")
        unknown = [k for k in target_outputs if k not in known]
        if unknown:
            raise SpecError(f"target_outputs name {len(unknown)} layer(s) the model does not have: {', '.join(map(repr, unknown[:5]))}; "
                            f"its quantised layers are {', '.join(known)}")
    if not isinstance(target, str):
        raise ExportError(f"target {target!r}; expected the name of a registered export target such as 'qcdq'")
    sim, steps, exposed_by = _simulate(qmodel, x)
    if target_outputs is None:
        if target == "qcdq":
            if artifact is None:
                from ..export.qcdq import export_qcdq

                with tempfile.TemporaryDirectory() as tmp:
                    path = export_qcdq(qmodel, x[:1], os.path.join(tmp, "model.onnx"))
                    target_outputs, matched_by = _onnx_outputs(path, x, sim, None)
            else:
                if not os.path.isfile(artifact):
                    raise ExportError(f"artifact {str(artifact)!r} is not a file; expected the QCDQ ONNX file that export_qcdq wrote")
                target_outputs, matched_by = _onnx_outputs(artifact, x, sim, None)
        else:
            target_outputs = _target_outputs(target, artifact, x, qmodel)
            unknown = [k for k in target_outputs if k not in known]
            if unknown:
                raise ExportError(f"target {target!r}: layer_outputs named {len(unknown)} tensor(s) that are not layers of the model: "
                                  f"{', '.join(map(repr, unknown[:5]))}; expected keys as simulation_layer_outputs names them")

    rows = []
    for order, (layer, s) in enumerate(sim.items()):
        row = {"layer": layer, "order": order, "shape": tuple(s.shape)}
        if layer in target_outputs:
            try:
                got = np.asarray(target_outputs[layer], dtype=np.float64)
            except (TypeError, ValueError):
                raise SpecError(f"target_outputs[{layer!r}] of type {type(target_outputs[layer]).__name__}; expected a numeric array") from None
            row.update(_compare(s, got, steps.get(layer)), missing=False)
        else:
            row.update(sqnr_db=np.nan, cosine=np.nan, max_abs_diff=np.nan, max_lsb_diff=np.nan, missing=True, note=f"not exposed by {target}")
        rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c in DIVERGENCE_COLUMNS if c not in ("over_threshold", "first")])
    table = table.astype({"sqnr_db": float, "cosine": float, "max_abs_diff": float, "max_lsb_diff": float, "missing": bool})
    table.attrs = {"target": target, "exposed_by": dict(exposed_by)}
    if matched_by is not None:
        table.attrs["matched_by"] = matched_by
    table = apply_threshold(table, threshold_db)
    return table[list(DIVERGENCE_COLUMNS)]


def _target_outputs(target: str, artifact, x: torch.Tensor, qmodel: nn.Module) -> dict:
    """``get_exporter(target).layer_outputs(artifact, x, qmodel=qmodel)``, with one-line errors."""
    import inspect

    from ..infra.errors import ExportError
    from ..export.exporters import get_exporter

    exporter = get_exporter(target)
    fn = getattr(exporter, "layer_outputs", None)
    if fn is None:
        raise ExportError(f"target {target!r} does not expose intermediate tensors (no layer_outputs); pass target_outputs= or pick another target")
    if artifact is None or not os.path.exists(artifact):
        raise ExportError(f"target {target!r}: artifact {artifact if artifact is None else str(artifact)!r} does not exist; "
                          f"expected the file (or folder) its exporter wrote")
    params = inspect.signature(fn).parameters
    takes_model = "qmodel" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        out = fn(artifact, x, qmodel=qmodel) if takes_model else fn(artifact, x)
    except NotImplementedError:
        raise ExportError(f"target {target!r} does not expose intermediate tensors (its layer_outputs is not implemented); pass target_outputs= "
                          f"or pick another target") from None
    if not isinstance(out, dict):
        raise ExportError(f"target {target!r}: layer_outputs returned {type(out).__name__}; expected a dict {{layer name: array}}")
    return out
