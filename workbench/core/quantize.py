"""Per-layer quantisation on Brevitas.

Brevitas's ``quantize`` takes class-keyed maps only. :func:`quantize_model` runs Brevitas's
graph (fx) path with the spec's defaults (it places activation quantisers, folds BatchNorm,
aligns residual adds), then gives every layer instance exactly the settings its spec asks for:

- weights: the layer's weight quantiser is rebuilt at its bits / granularity / scale type;
- activations (the tensor a layer reads): the quantiser feeding the layer is changed in place
  when every reader of it asks for the same setting, otherwise a dedicated requantiser is
  inserted in front of the layer.

Models that do not trace fall back to a per-module path (each layer quantises its own input).

Embedding tables (``nn.Embedding``) stay float unless the spec asks (``embedding_bits``, or an
override naming a table): on either path they then become :class:`RowQuantEmbedding` (Brevitas
``QuantEmbedding`` with one weight scale per table row); nothing else changes.

Attention matmuls (``attention_bits``) get their input quantisers from :mod:`workbench.core.attention`
(per-module path only: attention does not trace).
"""

from __future__ import annotations

import copy
import operator
import warnings
from dataclasses import dataclass, field

import brevitas.nn as qnn
from brevitas import config as brevitas_config
import torch
from brevitas.core.function_wrapper.ops_ste import CeilSte
from brevitas.core.restrict_val import RestrictValueType
from brevitas.graph import quantize as bq
from brevitas.quant import Int32Bias, NoneBiasQuant, NoneWeightQuant
from torch import nn

from .formats import INT
from .quantizers import act_quantizer, weight_quantizer

from typing import Any

from ..infra.errors import SpecError, UnsupportedLayerError
from ..tasks.models import run_with_hooks
from .spec import LayerQuant, QuantSpec, resolve, resolve_embeddings, without_embedding_selectors


# Brevitas traces with its own backport of torch.fx, whose classes differ from torch.fx's.
GraphModule = Any
Node = Any


class UnsupportedLayerWarning(UserWarning):
    """A layer with parameters the workbench cannot quantise is kept in float."""


QUANTISABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
QUANT_LAYERS = (qnn.QuantConv1d, qnn.QuantConv2d, qnn.QuantLinear)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)

PO2_ACT = {"restrict_scaling_type": RestrictValueType.POWER_OF_TWO, "restrict_value_float_to_int_impl": CeilSte}

# Ops that hand a quantised tensor on unchanged (shape only), so the quantiser before them is the
# one the next layer reads.
_TRANSPARENT_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute, operator.getitem}
_TRANSPARENT_METHODS = {"flatten", "reshape", "view", "squeeze", "unsqueeze", "transpose", "permute", "contiguous"}
_TRANSPARENT_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)


def _layer_weight_quant(lq: LayerQuant):
    return NoneWeightQuant if lq.weight_bits is None else weight_quantizer(lq.weight_bits, lq.weight_granularity, lq.scale_type, lq.weight_format)


def quantisable_layers(model: nn.Module) -> dict[str, tuple[str, bool]]:
    """``{name: (type name, is depthwise)}`` of the layers the workbench quantises, in order."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, QUANTISABLE):
            base = next(c for c in QUANTISABLE if isinstance(m, c))
            depthwise = isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups > 1 and m.groups == m.in_channels
            out[name] = (base.__name__, depthwise)
    return out


def unsupported_layers(model: nn.Module) -> dict[str, str]:
    """Modules holding their own parameters that the workbench cannot quantise (kept in float)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, QUANTISABLE + NORM_TYPES + QUANT_LAYERS) or not name:
            continue
        if any(True for _ in m.parameters(recurse=False)):
            out[name] = type(m).__name__
    return out


@dataclass(frozen=True)
class QuantizationPlan:
    """What :func:`quantize_model` decided: resolved settings per layer and the path it took."""

    spec: QuantSpec
    layers: dict[str, LayerQuant]
    path: str  # "fx" or "layerwise"
    unsupported: dict[str, str]
    requantised: tuple[str, ...] = ()
    embeddings: dict[str, LayerQuant] = field(default_factory=dict)  # quantised embedding tables (per-row scales)
    attention: tuple[str, ...] = ()  # attention modules whose matmul inputs are quantised (attention_bits)


def validate_spec(spec: QuantSpec | dict, model: nn.Module) -> dict[str, LayerQuant]:
    """Resolve ``spec`` against ``model`` without building anything: fails fast on bad names
    (and bad settings on embedding tables). Returns the Conv/Linear layers' settings."""
    spec, tables = QuantSpec.parse(spec), embedding_layers(model)
    resolve_embeddings(spec, tables)
    attention_layers(model, spec)
    return resolve(without_embedding_selectors(spec, tables), quantisable_layers(model), unsupported_layers(model))


def quantize_model(model: nn.Module, spec: QuantSpec | dict | None = None, *, equalize_iters: int = 0, force_layerwise: bool = False,
                   example_input: torch.Tensor | None = None) -> nn.Module:
    """A Brevitas model of ``model`` in which every layer has exactly the settings of ``spec``.

    The model must still be calibrated (:func:`workbench.core.ptq.calibrate`). The returned module
    carries its :class:`QuantizationPlan` as ``workbench_plan``. The input model is not changed.
    On the per-module path, ``example_input`` lets BatchNorm layers that directly follow a
    convolution be folded into it first (checked on that input: see :func:`fold_batchnorm`).
    """
    spec = QuantSpec() if spec is None else QuantSpec.parse(spec)
    if not isinstance(model, nn.Module):
        raise UnsupportedLayerError(f"model is a {type(model).__name__}; expected a torch.nn.Module")
    layers = quantisable_layers(model)
    unsupported = unsupported_layers(model)
    if not layers:
        kinds = ", ".join(sorted(set(unsupported.values()))) or "none with parameters"
        raise UnsupportedLayerError(f"model has no Conv1d, Conv2d or Linear layer to quantise (layers found: {kinds})")
    tables = embedding_layers(model)
    embeddings = resolve_embeddings(spec, tables)
    resolved = resolve(without_embedding_selectors(spec, tables), layers, unsupported)
    unsupported = {n: k for n, k in unsupported.items() if n not in embeddings}
    force_layerwise = force_layerwise or bool(attention_layers(model, spec))  # quantised attention lives in modules fx would inline
    for name, kind in unsupported.items():
        if name in tables:
            warnings.warn(f"layer {name} ({kind}) is kept in float (embedding_bits or layers.{name}.weight_bits quantises it)", UnsupportedLayerWarning, stacklevel=2)
        else:
            warnings.warn(f"layer {name} ({kind}) cannot be quantised by the workbench; it is kept in float", UnsupportedLayerWarning, stacklevel=2)

    src = copy.deepcopy(model).eval()
    qmodel, requantised, path = None, (), "layerwise"
    if not force_layerwise:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch deprecations inside Brevitas's tracer
                graph_model = bq.preprocess_for_quantize(src, equalize_iters=equalize_iters)
        except Exception as exc:  # tracing failed: Brevitas raises many types here
            warnings.warn(f"fx tracing failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); using the per-module path", stacklevel=2)
        else:
            try:
                qmodel = _fx_quantize(graph_model, spec)
                _unquantised_embedding_inputs(qmodel)
                requantised = _apply_layer_settings(qmodel, resolved, spec)
                path = "fx"
            except (KeyError, RuntimeError, TypeError, AttributeError) as exc:  # e.g. a layer called twice (shared weights)
                qmodel = None
                warnings.warn(f"fx tracing failed to quantise the traced graph ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                              "using the per-module path", stacklevel=2)
    if qmodel is None:
        src = copy.deepcopy(model).eval()
        if example_input is not None:
            src = fold_batchnorm(src, example_input)
        qmodel = _layerwise_quantize(src, resolved)
    quantize_embeddings(qmodel, embeddings)
    attention = ()
    if spec.attention_bits is not None:
        from .attention import quantize_attention

        attention = tuple(quantize_attention(qmodel, spec.attention_bits, spec.scale_type))
    qmodel.eval()
    qmodel.workbench_plan = QuantizationPlan(spec, resolved, path, unsupported, tuple(requantised), embeddings, attention)
    return qmodel


# ------------------------------------------------------------------------------ fx path


def _fx_quantize(graph_model: GraphModule, spec: QuantSpec) -> GraphModule:
    default = default_layer_quant(spec)
    a_bits = default.act_bits
    wq = _layer_weight_quant(default)
    bias = Int32Bias if default.int_quantised else None

    def aq(signed):
        return None if a_bits is None else act_quantizer(a_bits, signed, spec.scale_type, default.act_format)

    rqt = a_bits is not None  # a quantiser that is off hands on plain tensors

    compute_map = dict(bq.COMPUTE_LAYER_MAP)
    for cls in QUANTISABLE:
        qcls, kw = compute_map[cls]
        compute_map[cls] = (qcls, {**kw, "weight_quant": wq, "bias_quant": bias, "return_quant_tensor": rqt and default.int_quantised})
    act_map = {
        nn.ReLU: (qnn.QuantReLU, {"act_quant": aq(False), "return_quant_tensor": rqt}),
        nn.ReLU6: (qnn.QuantReLU, {"act_quant": aq(False), "max_val": 6.0, "return_quant_tensor": rqt}),
        nn.Sigmoid: (qnn.QuantSigmoid, {"act_quant": aq(False), "return_quant_tensor": rqt}),
        nn.Hardtanh: (qnn.QuantHardTanh, {"act_quant": aq(True), "max_val": lambda m: m.max_val, "min_val": lambda m: m.min_val, "return_quant_tensor": rqt}),
    }
    identity_map = {
        "signed": (qnn.QuantIdentity, {"act_quant": aq(True), "return_quant_tensor": rqt}),
        "unsigned": (qnn.QuantIdentity, {"act_quant": aq(False), "return_quant_tensor": rqt}),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if a_bits is None:  # weights only: swap the compute layers, place no activation quantiser
            from brevitas.graph.quantize_impl import layer_handler

            previous, brevitas_config.IGNORE_MISSING_KEYS = brevitas_config.IGNORE_MISSING_KEYS, True
            try:
                return layer_handler(graph_model.eval(), layer_map=compute_map, requantize_output=False, quant_identity_map={}, quant_act_map={}, unsigned_act_tuple=())
            finally:
                brevitas_config.IGNORE_MISSING_KEYS = previous
        return bq.quantize(graph_model, quant_identity_map=identity_map, compute_layer_map=compute_map, quant_act_map=act_map)


def _is_act_quantiser(module: nn.Module) -> bool:
    return hasattr(module, "act_quant") and not isinstance(module, QUANT_LAYERS)


def _is_transparent(gm: GraphModule, node: Node) -> bool:
    if node.op == "call_function":
        return node.target in _TRANSPARENT_FUNCS
    if node.op == "call_method":
        return node.target in _TRANSPARENT_METHODS
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _TRANSPARENT_MODULES)
    return False


def _is_node(obj) -> bool:
    # Brevitas traces with its own backport of torch.fx, whose Node is another class.
    return hasattr(obj, "op") and hasattr(obj, "all_input_nodes")


def _source_quantiser(gm: GraphModule, node) -> Node | None:
    """The activation-quantiser node whose output reaches ``node`` through shape-only ops."""
    while _is_node(node):
        if node.op == "call_module" and _is_act_quantiser(gm.get_submodule(node.target)):
            return node
        if not _is_transparent(gm, node):
            return None
        node = node.args[0] if node.args else None
    return None


def _apply_layer_settings(gm: GraphModule, resolved: dict[str, LayerQuant], spec: QuantSpec) -> list[str]:
    default = default_layer_quant(spec)
    # Weights: rebuild the quantiser of every layer whose settings differ from the defaults.
    for name, lq in resolved.items():
        apply_weight_settings(gm.get_submodule(name), lq, default)

    # Activations: group the layers by the quantiser they read.
    layer_nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module" and n.target in resolved}
    readers: dict[str, list[str]] = {}
    no_source: list[str] = []
    dynamic: dict[str | None, list[str]] = {}
    for name, node in layer_nodes.items():
        src = _source_quantiser(gm, node.args[0])
        if resolved[name].dynamic:
            dynamic.setdefault(None if src is None else src.target, []).append(name)
        elif src is None:
            no_source.append(name)
        else:
            readers.setdefault(src.target, []).append(name)
    other_readers = set()
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in resolved or _is_transparent(gm, node):
            continue
        for arg in node.all_input_nodes:
            src = _source_quantiser(gm, arg)
            if src is not None:
                other_readers.add(src.target)

    requantised = []
    for src_name, names in readers.items():
        wanted = {resolved[n].act_key for n in names}
        quantiser = gm.get_submodule(src_name)
        if len(wanted) == 1 and src_name not in other_readers:
            (bits, scale_type, fmt), = wanted
            if (bits, scale_type, fmt) != default.act_key:
                _set_act_quant(quantiser, bits, scale_type, fmt)
            continue
        for n in names:
            key = resolved[n].act_key
            if key == default.act_key:
                continue
            if key[0] is None or (default.act_bits is not None and key[0] > default.act_bits):
                shared = ", ".join(sorted(set(names) - {n})) or "a residual add"
                want = "float" if key[0] is None else f"{key[0]} bits"
                raise SpecError(
                    f"layers.{n}.act_bits: the activation {n} reads is also read by {shared} at {default.act_bits} bits, "
                    f"so it cannot be {want} for {n} alone; give the same act_bits to all of its readers"
                )
            _insert_requantiser(gm, layer_nodes[n], key, signed=bool(quantiser.act_quant.is_signed))
            requantised.append(n)
    for n in no_source:
        key = resolved[n].act_key
        if key != default.act_key and key[0] is not None:
            _insert_requantiser(gm, layer_nodes[n], key, signed=not input_is_nonnegative(gm, layer_nodes[n].args[0]))
            requantised.append(n)
    requantised += _apply_dynamic(gm, layer_nodes, dynamic, set(readers) | other_readers)
    gm.graph.lint()
    gm.recompile()
    return requantised


def _apply_dynamic(gm: GraphModule, layer_nodes: dict, dynamic: dict[str | None, list[str]], read_elsewhere: set[str]) -> list[str]:
    """Give each layer with ``act_mode: dynamic`` a dynamic input quantiser of its own (its bias
    stays float: :func:`apply_weight_settings` has seen to that). A static quantiser that only
    dynamic layers read is switched off, so their input is quantised once, at run time."""
    for src_name in dynamic:
        if src_name is not None and src_name not in read_elsewhere:
            quantiser = gm.get_submodule(src_name)
            _set_act_quant(quantiser, None, "float")
    out = []
    for names in dynamic.values():
        for n in names:
            _insert_requantiser(gm, layer_nodes[n], (8, "float", INT, "dynamic"), signed=False)
            out.append(n)
    return out


_NONNEGATIVE_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid)


def input_is_nonnegative(gm: GraphModule, node) -> bool:
    """Whether ``node``'s value comes straight (through shape-only ops) from a ReLU-like op, so an
    unsigned quantiser fits it."""
    while _is_node(node):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), _NONNEGATIVE_MODULES):
            return True
        if node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu, torch.sigmoid):
            return True
        if not _is_transparent(gm, node):
            return False
        node = node.args[0] if node.args else None
    return False


def apply_weight_settings(layer: nn.Module, lq: LayerQuant, default: LayerQuant) -> None:
    """Give a Brevitas layer built at ``default`` settings the weight (and bias) quantisers of ``lq``."""
    if lq.weight_key != default.weight_key:
        inj = _layer_weight_quant(lq)
        layer.weight_quant = inj.proxy_class(layer, inj)
    both = lq.int_quantised
    if both != default.int_quantised:
        inj = Int32Bias if both else NoneBiasQuant  # an int32 bias needs integer input and weight scales
        layer.bias_quant = inj.proxy_class(layer, inj)
    if not both and not layer.output_quant.is_quant_enabled:
        layer.return_quant_tensor = False  # a float (or minifloat) product is no integer quantised tensor


def default_layer_quant(spec: QuantSpec) -> LayerQuant:
    w = None if spec.weight_bits == "float" else spec.weight_bits
    a = None if spec.act_bits == "float" else spec.act_bits
    return LayerQuant(w, a, spec.weight_granularity, spec.scale_type, INT if w is None else spec.weight_format, INT if a is None else spec.act_format)


# What an activation quantiser holds besides its quantiser: the nonlinearity it fuses (QuantReLU's
# ReLU) and its bounds; kept when the quantiser is replaced by one of another format.
_ACT_KEEP = ("act_impl", "max_val", "min_val")


def _set_act_quant(quantiser: nn.Module, bits: int | None, scale_type: str, fmt: str = INT) -> None:
    proxy = quantiser.act_quant
    old = proxy.quant_injector
    if bits is None:
        inj = old.let(tensor_quant=None)
        quantiser.act_quant = type(proxy)(quantiser, inj)
        quantiser.return_quant_tensor = False
        return
    current_int = not hasattr(proxy, "exponent_bit_width") and "exponent_bit_width" not in old
    if fmt == INT and current_int:
        extra = PO2_ACT if scale_type == "po2" else {"restrict_scaling_type": RestrictValueType.FP}
        inj = old.let(bit_width=bits, **extra)
        quantiser.act_quant = type(proxy)(quantiser, inj)
    else:  # another format: a new quantiser around the same nonlinearity
        inj = act_quantizer(bits, bool(proxy.is_signed), scale_type, fmt)
        inj = inj.let(**{k: getattr(old, k) for k in _ACT_KEEP if k in old})
        quantiser.act_quant = inj.proxy_class(quantiser, inj)
    quantiser.return_quant_tensor = True


def _insert_requantiser(gm: GraphModule, node: Node, key, signed: bool) -> None:
    bits, scale_type, fmt = key[:3]
    name = node.target.replace(".", "_") + "_input_requant"
    gm.add_submodule(name, qnn.QuantIdentity(act_quant=act_quantizer(bits, signed, scale_type, fmt, dynamic=key[3:] == ("dynamic",)),
                                             return_quant_tensor=True))
    src = node.args[0]
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (src,))
    node.replace_input_with(src, new)


# ------------------------------------------------------------------------ per-module path


_QUANT_CLASS = {nn.Conv1d: qnn.QuantConv1d, nn.Conv2d: qnn.QuantConv2d, nn.Linear: qnn.QuantLinear}


def build_quant_layer(module: nn.Module, lq: LayerQuant, input_quant: bool = False, input_signed: bool = True) -> nn.Module:
    """A Brevitas layer computing ``module`` (Conv1d/Conv2d/Linear) at the settings ``lq``.

    With ``input_quant`` the layer quantises its own input at ``lq.act_bits``; otherwise it
    expects its input already quantised (or float when ``lq.act_bits`` is None).
    """
    from brevitas.graph.base import ModuleToModuleByInstance

    base = next(c for c in QUANTISABLE if isinstance(module, c))
    kwargs = {
        "weight_quant": _layer_weight_quant(lq),
        "bias_quant": Int32Bias if lq.int_quantised else None,
        "return_quant_tensor": False,
    }
    if input_quant:
        kwargs["input_quant"] = None if lq.act_bits is None else act_quantizer(lq.act_bits, input_signed, lq.scale_type, lq.act_format, lq.dynamic)
    previous, brevitas_config.IGNORE_MISSING_KEYS = brevitas_config.IGNORE_MISSING_KEYS, True  # quantiser state is new
    try:
        return ModuleToModuleByInstance(module, _QUANT_CLASS[base], **kwargs).init_new_module(old_module=module)
    finally:
        brevitas_config.IGNORE_MISSING_KEYS = previous


def _layerwise_quantize(model: nn.Module, resolved: dict[str, LayerQuant]) -> nn.Module:
    """Fallback for models fx cannot trace: each layer quantises its own input (signed)."""
    from brevitas.graph.utils import set_module

    for name, lq in resolved.items():
        set_module(model, build_quant_layer(model.get_submodule(name), lq, input_quant=True), name)
    return model


def _conv_bn_pairs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, BatchNorm) names where the BatchNorm reads exactly the convolution's output tensor."""
    outputs: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    calls: dict[str, int] = {}
    keep = []  # hold the tensors so their ids stay unique during the pass
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            def conv_hook(mod, args, out, name=name):
                calls[name] = calls.get(name, 0) + 1
                outputs[id(out)] = name
                keep.append(out)

            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            def bn_hook(mod, args, name=name):
                calls[name] = calls.get(name, 0) + 1
                source = outputs.get(id(args[0]))
                if source is not None:
                    pairs.append((source, name))

            hooks.append(m.register_forward_pre_hook(bn_hook))
    run_with_hooks(model, example_input, hooks)
    return [(c, b) for c, b in pairs if calls.get(c) == 1 and calls.get(b) == 1]


def _fold_pairs(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """A copy of ``model`` with each (conv, BatchNorm) pair folded, computed in float64 and stored
    in the convolution's dtype (the BatchNorm becomes an Identity)."""
    from brevitas.graph.utils import set_module

    folded = copy.deepcopy(model)
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
            var, mean = bn.running_var.double(), bn.running_mean.double()
            scale = 1.0 / torch.sqrt(var + bn.eps)
            if bn.affine:
                scale = scale * bn.weight.double()
            shift = bn.bias.double() if bn.affine else torch.zeros_like(mean)
            bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
            weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
            conv.weight.copy_(weight.to(conv.weight.dtype))
            new_bias = ((bias - mean) * scale + shift).to(conv.weight.dtype)
            if conv.bias is None:
                conv.bias = nn.Parameter(new_bias)
            else:
                conv.bias.copy_(new_bias)
            set_module(folded, nn.Identity(), bn_name)
    return folded


def _output_tensor(out) -> torch.Tensor:
    return out.value if hasattr(out, "value") else out


def fold_batchnorm(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """``model`` with every eval-mode BatchNorm that reads a convolution's output folded into that
    convolution (the BatchNorm becomes an Identity). The fold is checked in float64 against the
    original on ``example_input`` (float32 rounding of the folded weights alone grows through a deep
    network, e.g. MobileNetV2's 52 folds, past any tolerance a float32 comparison could use);
    when they differ (the convolution's output was also read elsewhere) the original is returned
    unchanged."""
    model = model.eval()
    pairs = _conv_bn_pairs(model, example_input)
    if not pairs:
        return model
    folded = _fold_pairs(model, pairs)
    ref_model = copy.deepcopy(model).double()
    folded64 = _fold_pairs(ref_model, pairs)
    x64 = example_input.double() if example_input.is_floating_point() else example_input
    with torch.no_grad():
        ref, out = _output_tensor(ref_model(x64)), _output_tensor(folded64(x64))
    if not torch.allclose(out, ref, rtol=1e-7, atol=1e-9 * float(ref.abs().max().clamp(min=1.0))):
        return model
    return folded


# ------------------------------------------------------------------------ attention matmuls


def attention_layers(model: nn.Module, spec: QuantSpec) -> list[str]:
    """The attention modules whose matmul inputs ``spec`` quantises (``attention_bits``; empty
    when it is None). A model without transformers attention is a one-line :class:`SpecError`."""
    if spec.attention_bits is None:
        return []
    from .attention import attention_modules

    found = list(attention_modules(model))
    if not found:
        raise SpecError(f"attention_bits: {type(model).__name__} has no transformers attention module (one whose forward calls "
                        "ALL_ATTENTION_FUNCTIONS); expected a Hugging Face transformers model, or attention_bits left out")
    return found


# ------------------------------------------------------------------------ embedding tables


def embedding_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{name: (rows, dim)}`` of the model's embedding tables (``nn.Embedding``), in order."""
    return {name: (m.num_embeddings, m.embedding_dim) for name, m in model.named_modules() if isinstance(m, nn.Embedding)}


class RowQuantEmbedding(qnn.QuantEmbedding):
    """Brevitas ``QuantEmbedding`` with one weight scale per table row (per-channel on axis 0).

    Brevitas's own forward hands the quantised table to its ``F.embedding`` handler, which takes
    per-tensor scales only; this one gathers rows of the dequantised table (the same values).
    Exported as ``int table -> DequantizeLinear(axis 0) -> Gather``, which
    :func:`workbench.export.rewrites.gather_quantized_rows` turns into a gather of integer rows."""

    def forward(self, inp):
        from brevitas.quant_tensor import _unpack_quant_tensor

        weight = _unpack_quant_tensor(self.quant_weight())
        return torch.nn.functional.embedding(inp, weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse)


def build_quant_embedding(module: nn.Embedding, lq: LayerQuant) -> RowQuantEmbedding:
    """A :class:`RowQuantEmbedding` holding ``module``'s table, at ``lq.weight_bits`` with one scale per row."""
    new = RowQuantEmbedding(module.num_embeddings, module.embedding_dim, padding_idx=module.padding_idx, max_norm=module.max_norm,
                            norm_type=module.norm_type, scale_grad_by_freq=module.scale_grad_by_freq, sparse=module.sparse,
                            weight_quant=weight_quantizer(lq.weight_bits, "per_channel", lq.scale_type, INT), return_quant_tensor=False,
                            device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(module.weight)
    new.train(module.training)
    return new


def _unquantised_embedding_inputs(gm: GraphModule) -> int:
    """Give every embedding table (fx path) its token ids unquantised: Brevitas places an input
    quantiser on the graph's input, which would turn integer ids into a quantised float tensor
    (and send ``F.embedding`` round Brevitas's handler forever). The quantiser is bypassed for
    the table, and dropped when nothing else reads it. Returns the number of tables rewired."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.Embedding) or not node.args:
            continue
        src = node.args[0]
        if _is_node(src) and src.op == "call_module" and _is_act_quantiser(gm.get_submodule(src.target)):
            node.replace_input_with(src, src.args[0])
            if not src.users:
                gm.graph.erase_node(src)
                gm.delete_submodule(src.target)
            count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count


def quantize_embeddings(model: nn.Module, embeddings: dict[str, LayerQuant]) -> nn.Module:
    """Swap each table named in ``embeddings`` for a :class:`RowQuantEmbedding` (in place)."""
    from brevitas.graph.utils import set_module

    for name, lq in embeddings.items():
        module = model.get_submodule(name)
        if not isinstance(module, RowQuantEmbedding):
            set_module(model, build_quant_embedding(module, lq), name)
    return model
