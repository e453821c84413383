"""Pruning: unstructured magnitude masks (per layer or global), N:M semi-structured masks (2:4),
and structured channel pruning that physically removes channels.

Structured pruning uses Torch-Pruning's dependency graph: removing output channels of a layer
removes the matching input channels of every layer that reads them, the BatchNorm entries,
depthwise convolutions tied to them, and the channels of every other layer joined by a residual
add, so the pruned model stays consistent and smaller. Masks (unstructured, N:M) leave tensors
dense: they change what the weights are, not how big the model is, and reports say so.

:class:`PruningSpec` holds the parameters (it is also a recipe's ``pruning`` section);
:func:`prune` returns a pruned (optionally fine-tuned) copy, never touching its input.

>>> pruned = prune(task, model, PruningSpec(method="structured", sparsity=0.5, criterion="taylor"))
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
import warnings
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from ..infra.errors import PruningError, SpecError
from .quantize import QUANTISABLE
from .spec import FiniteFloat, Int, SpecModel, format_validation_error, short_repr

GLOBAL_MAX_RATIO = 0.9  # global structured ranking never takes more than this share of one layer's channels


def _is_sparsity(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < 1  # no float(): 10**400 would overflow


def _check_sparsity(sparsity: Any) -> float:
    if not _is_sparsity(sparsity):
        raise SpecError(f"sparsity: expected a value in [0, 1); got {sparsity!r}")
    return float(sparsity)


class PruningSpec(SpecModel):  # direct construction raises SpecError, as QuantSpec's does
    """What to prune and how (parameters only; a recipe's ``pruning`` section).

    - ``method``: ``structured`` (remove output channels), ``unstructured`` (zero single weights),
      ``nm`` (keep ``m - round(sparsity * m)`` of every ``m`` consecutive weights; 0.5 with m=4 is 2:4);
    - ``sparsity``: in [0, 1): share of channels (structured) or weights (masks) removed;
    - ``scope``: ``layer`` (each layer / channel group loses ``sparsity``) or ``global`` (one
      ranking across layers); default: ``layer`` for structured, ``global`` for unstructured;
    - ``criterion``: ``l1`` / ``l2`` magnitude, ``taylor`` (|weight x gradient| of the task loss
      on calibration data), ``bn_scale`` (the following BatchNorm's scale; structured only);
    - ``layers``: prune only these layers (default: every layer that can be); ``ignore``: never these;
    - ``layer_sparsity``: structured only, instead of ``sparsity`` / ``layers``: ``{layer: share}``
      prunes each named layer's channel group by its own share (per-stage widths; a group is
      pruned whole, so two layers of one group must share one value); ``sparsity`` is then unused;
    - ``finetune_epochs`` / ``finetune_lr`` / ``seed``: an optional short, seeded fine-tune
      (masks stay applied; cosine schedule from ``finetune_lr``, by default the task's learning rate).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["structured", "unstructured", "nm"] = "structured"
    sparsity: float = 0.5
    scope: Literal["layer", "global"] | None = None
    criterion: Literal["l1", "l2", "taylor", "bn_scale"] = "l1"
    m: Int = Field(4, ge=2, le=64)
    layers: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    layer_sparsity: dict[str, float] | None = None
    finetune_epochs: Int = Field(0, ge=0)
    finetune_lr: FiniteFloat | None = Field(None, gt=0)
    seed: Int = Field(0, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    calib_samples: Int = Field(256, ge=1)

    @field_validator("m", "finetune_epochs", "seed", "calib_samples", mode="before")
    @classmethod
    def _integers(cls, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):  # true, 4.0 and "4" are not integers
            raise ValueError(f"expected an integer; got {short_repr(v)}")
        return int(v)

    @field_validator("finetune_lr", mode="before")
    @classmethod
    def _rate(cls, v):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (isinstance(v, float) and not math.isfinite(v))):
            raise ValueError(f"expected a positive number or null; got {short_repr(v)}")
        return v

    @field_validator("sparsity", mode="before")
    @classmethod
    def _sparsity(cls, v):
        if not _is_sparsity(v):
            raise ValueError(f"expected a value in [0, 1); got {short_repr(v)}")
        return float(v)

    @field_validator("layer_sparsity", mode="before")
    @classmethod
    def _layer_sparsity(cls, v):
        if v is None:
            return v
        if not isinstance(v, dict) or not v:
            raise ValueError(f"expected a non-empty mapping of layer name to a share in [0, 1); got {short_repr(v)}")
        for name, share in v.items():
            if not isinstance(name, str) or not _is_sparsity(share):
                raise ValueError(f"{name}: expected a share of channels in [0, 1); got {short_repr(share)}")
        return {name: float(share) for name, share in v.items()}

    @model_validator(mode="after")
    def _consistent(self):
        if self.layer_sparsity is not None:
            if self.method != "structured":
                raise ValueError("layer_sparsity sets per-layer channel shares; it applies to method 'structured' only")
            if self.layers is not None or self.scope == "global":
                raise ValueError("layer_sparsity names each layer's share; leave layers and scope 'global' unset")
        if self.method == "nm":
            removed = self.sparsity * self.m
            if abs(removed - round(removed)) > 1e-9 or not (0 < round(removed) < self.m):
                options = ", ".join(f"{k / self.m:g}" for k in range(1, self.m))
                raise ValueError(f"N:M sparsity {self.sparsity:g} is not a whole number of weights out of m={self.m}; expected one of {options}")
        if self.criterion == "bn_scale" and self.method != "structured":
            raise ValueError("criterion 'bn_scale' ranks channels; it applies to method 'structured' only")
        if self.scope == "global" and self.method == "nm":
            raise ValueError("N:M sparsity is per group of m weights; scope 'global' does not apply")
        if self.scope == "global" and self.layers is not None:
            raise ValueError("scope 'global' ranks every layer at once; to prune only some layers use scope 'layer'")
        return self

    @property
    def resolved_scope(self) -> str:
        if self.scope is not None:
            return self.scope
        return "global" if self.method == "unstructured" else "layer"

    @property
    def n(self) -> int:
        """N of N:M: the weights kept in every group of ``m``."""
        return self.m - round(self.sparsity * self.m)

    @property
    def label(self) -> str:
        if self.method == "nm":
            return f"{self.n}:{self.m}"
        if self.layer_sparsity is not None:
            return f"{self.method} " + ",".join(f"{k}={v:g}" for k, v in self.layer_sparsity.items())
        return f"{self.method} {self.sparsity:g}"

    @classmethod
    def parse(cls, obj: Any) -> "PruningSpec":
        """A spec from a PruningSpec or a mapping; errors as :class:`SpecError` naming the field."""
        if isinstance(obj, PruningSpec):
            return obj
        if not isinstance(obj, dict):
            raise SpecError(f"pruning spec is a {type(obj).__name__}; expected a mapping with method, sparsity, ...")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc)) from None

    def to_dict(self) -> dict:
        d = self.model_dump(mode="json")
        if d["layer_sparsity"] is None:  # specs without it keep the dict (and every digest of it) they had
            del d["layer_sparsity"]
        return d


# ----------------------------------------------------------------------------- layers and scores


def prunable_layers(model: nn.Module, layers: list[str] | None = None) -> dict[str, nn.Module]:
    """``{name: module}`` of the Conv1d / Conv2d / Linear layers, or of ``layers`` (checked)."""
    found = {name: m for name, m in model.named_modules() if isinstance(m, QUANTISABLE)}
    if layers is None:
        return found
    missing = [n for n in layers if n not in found]
    if missing:
        close = difflib.get_close_matches(missing[0], list(found), n=3, cutoff=0.4)
        raise SpecError(f"layers.{missing[0]}: no such prunable layer" + (f"; closest: {', '.join(close)}" if close else ""))
    return {n: found[n] for n in layers}


def task_gradients(task, model: nn.Module, n_samples: int = 256) -> None:
    """Fill ``.grad`` of ``model``'s parameters with the task loss's gradient on calibration data
    (eval mode: BatchNorm statistics are not changed)."""
    from ..infra.determinism import fixed_threads
    from ..tasks.evaluate import task_loss

    split = task.data.calib
    x = split.x[:n_samples]
    y = None if split.y is None else split.y[:n_samples]
    model.eval()
    model.zero_grad(set_to_none=True)
    with fixed_threads():  # gradient sums split over another thread count differ in the last bits, and so can the ranking
        task_loss(task, model(x), x, y).backward()


def weight_scores(model: nn.Module, criterion: str = "l1", layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Per-weight importance of each layer: |w| (l1 and l2 rank single weights alike) or
    |w x grad| (taylor; call :func:`task_gradients` first)."""
    out = {}
    for name, m in prunable_layers(model, layers).items():
        w = m.weight.detach()
        if criterion == "taylor":
            if m.weight.grad is None:
                raise PruningError(f"{name}: criterion 'taylor' needs gradients; none were computed")
            out[name] = (w * m.weight.grad.detach()).abs()
        elif criterion in ("l1", "l2"):
            out[name] = w.abs()
        else:
            raise SpecError(f"criterion {criterion!r} does not score single weights; expected l1, l2 or taylor")
    return out


def _scores(model, layers, scores):
    return weight_scores(model, "l1", layers) if scores is None else {n: scores[n] for n in prunable_layers(model, layers)}


def unstructured_masks(model: nn.Module, sparsity: float, scope: str = "global", layers: list[str] | None = None,
                       scores: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks (1 = kept) zeroing the least important weights (magnitude unless ``scores``).

    ``scope="layer"``: each layer loses ``sparsity`` of its weights; ``"global"``: one threshold
    across all layers, so the total hits ``sparsity`` and sensitive layers keep more.
    """
    sparsity = _check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise SpecError(f"scope {scope!r}; expected 'global' or 'layer'")
    imp = _scores(model, layers, scores)
    masks = {}
    if scope == "layer":
        for name, s in imp.items():
            flat = s.flatten()
            k = int(round(sparsity * flat.numel()))
            mask = torch.ones_like(flat)
            if k:
                mask[torch.argsort(flat, stable=True)[:k]] = 0
            masks[name] = mask.view_as(s)
        return masks
    flat = torch.cat([s.flatten() for s in imp.values()])
    k = int(round(sparsity * flat.numel()))
    keep = torch.ones_like(flat)
    if k:
        keep[torch.argsort(flat, stable=True)[:k]] = 0
    offset = 0
    for name, s in imp.items():
        masks[name] = keep[offset : offset + s.numel()].view_as(s)
        offset += s.numel()
    return masks


def nm_masks(model: nn.Module, n: int = 2, m: int = 4, layers: list[str] | None = None,
             scores: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """N:M masks: in every group of ``m`` consecutive weights along a layer's reduction dimension
    (input features, or input channels x kernel), keep the ``n`` most important. A tail shorter
    than ``m`` stays dense; layers whose reduction dimension is shorter than ``m`` are left out."""
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise SpecError(f"N:M sparsity needs integers 0 < n < m; got {n}:{m}")
    masks = {}
    for name, s in _scores(model, layers, scores).items():
        w = s.reshape(s.shape[0], -1)
        length = w.shape[1] - w.shape[1] % m
        if length == 0:
            continue
        groups = w[:, :length].reshape(w.shape[0], -1, m)
        order = torch.argsort(groups, dim=-1, stable=True)
        keep = torch.ones_like(groups)
        keep.scatter_(-1, order[..., : m - n], 0)
        mask = torch.ones_like(w)
        mask[:, :length] = keep.reshape(w.shape[0], length)
        masks[name] = mask.view_as(s)
    return masks


def _mask_in_place(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for name, mask in masks.items():
            w = model.get_submodule(name).weight
            w.mul_(mask.to(w.dtype))
    return model


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with the masked weights set to zero (the input model is unchanged)."""
    return _mask_in_place(copy.deepcopy(model), masks)


def sparsity_table(model: nn.Module) -> pd.DataFrame:
    """Per prunable layer: weights, zeros, sparsity, and dense float32 bytes (unchanged by masks)."""
    rows = []
    for name, m in prunable_layers(model).items():
        w = m.weight.detach()
        zeros = int((w == 0).sum())
        rows.append({"layer": name, "weights": w.numel(), "zeros": zeros, "sparsity": zeros / w.numel(), "dense_bytes": 4 * w.numel()})
    df = pd.DataFrame(rows)
    df.attrs["global_sparsity"] = float(df["zeros"].sum() / max(1, df["weights"].sum())) if len(df) else math.nan
    return df


# ----------------------------------------------------------------------------- structured (Torch-Pruning)


def _tp():
    import torch_pruning as tp  # imported on use: keeps `import workbench` fast

    return tp


def _out_channel_fn(tp, module: nn.Module):
    return tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels


def _forward(model: nn.Module, x: torch.Tensor):
    """One batched call (Torch-Pruning's default first tries ``model(*x)``, an unbatched call)."""
    return model(x)


def dependency_graph(model: nn.Module, example: torch.Tensor):
    """Torch-Pruning's dependency graph of ``model``; a model it cannot trace raises :class:`PruningError`."""
    tp = _tp()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=_forward)
    except Exception as exc:  # Torch-Pruning raises anything from assertion errors to KeyErrors
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise PruningError(f"Torch-Pruning cannot trace {type(model).__name__} ({type(exc).__name__}: {first}); structured pruning needs a "
                           f"model whose forward pass autograd can follow; use method 'unstructured' or 'nm' instead") from None


def _group_layers(graph, group, names: dict) -> list[str]:
    """Prunable layers whose OUTPUT channels a Torch-Pruning group removes."""
    out = []
    for dep, _ in group:
        mod = dep.target.module
        if mod in names and graph.is_out_channel_pruning_fn(dep.handler) and names[mod] not in out:
            out.append(names[mod])
    return out


def channel_groups(model: nn.Module, example: torch.Tensor) -> pd.DataFrame:
    """One row per prunable layer: its output channels, the layers pruned together with it
    (``group``: residual adds and depthwise convolutions tie channels together) and, where it
    cannot be pruned, why (``refused``; empty when it can). Layers whose channels reach the model's output are refused."""
    tp = _tp()
    model = model.eval()
    layers = prunable_layers(model)
    names = {m: n for n, m in layers.items()}
    graph = dependency_graph(model, example)
    with torch.no_grad():
        out_shape = tuple(model(example).shape)
    rows, verdict, order = [], {}, list(layers)
    for name, mod in layers.items():
        channels = mod.out_channels if not isinstance(mod, nn.Linear) else mod.out_features
        if mod not in graph.module2node:
            rows.append({"layer": name, "channels": channels, "group": name,
                         "refused": "Torch-Pruning's trace does not reach it (does the forward pass detach tensors or leave autograd?)"})
            continue
        group = graph.get_pruning_group(mod, _out_channel_fn(tp, mod), idxs=[0])
        members = sorted(_group_layers(graph, group, names), key=order.index)  # in network order
        key = tuple(sorted(members))
        if key not in verdict:
            verdict[key] = _try_one_channel(model, example, name, out_shape) if channels > 1 else "it has a single output channel"
        rows.append({"layer": name, "channels": channels, "group": ", ".join(members), "refused": verdict[key] or ""})
    return pd.DataFrame(rows)


def _try_one_channel(model: nn.Module, example: torch.Tensor, layer: str, out_shape: tuple) -> str | None:
    """Prune one channel of ``layer`` on a copy: None when the model still runs with the same output shape."""
    tp = _tp()
    trial = copy.deepcopy(model)
    graph = dependency_graph(trial, example)
    mod = trial.get_submodule(layer)
    group = graph.get_pruning_group(mod, _out_channel_fn(tp, mod), idxs=[0])
    if not graph.check_pruning_group(group):
        return "Torch-Pruning's dependency check refuses its channel group"
    group.prune()
    try:
        with torch.no_grad():
            shape = tuple(trial(example).shape)
    except Exception as exc:
        return f"the pruned model no longer runs ({type(exc).__name__})"
    if shape != out_shape:
        return f"its channels are the model's output (shape {out_shape[1:]}); pruning them would change what the model computes"
    return None


def _importance(criterion: str):
    tp = _tp()
    return {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1), "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "taylor": lambda: tp.importance.GroupTaylorImportance(), "bn_scale": lambda: tp.importance.BNScaleImportance()}[criterion]()


def _prune_structured(task, model: nn.Module, spec: PruningSpec, example: torch.Tensor) -> nn.Module:
    tp = _tp()
    groups = channel_groups(model, example).set_index("layer")
    if spec.layer_sparsity is not None:
        return _prune_per_layer(task, model, spec, example, groups)
    wanted = list(prunable_layers(model, spec.layers))
    ignore = set(prunable_layers(model, spec.ignore))
    if spec.layers is not None:
        for name in wanted:
            if groups.loc[name, "refused"]:
                raise PruningError(f"{name}: cannot be pruned: {groups.loc[name, 'refused']}")
    targets = [n for n in wanted if n not in ignore and not groups.loc[n, "refused"]]
    if spec.resolved_scope == "layer":
        for name in targets:
            channels = int(groups.loc[name, "channels"])
            if int(channels * (1 - spec.sparsity)) < 1:  # Torch-Pruning keeps int(C * (1 - sparsity)) channels
                raise PruningError(f"{name}: pruning {spec.sparsity:g} of its {channels} output channels would remove every channel; "
                                   f"expected a sparsity of at most {1 - 1 / channels:.3g}")
    if spec.sparsity == 0:
        return model
    if not targets:
        why = "; ".join(f"{n}: {groups.loc[n, 'refused']}" for n in wanted if groups.loc[n, "refused"]) or "every layer is ignored"
        raise PruningError(f"no layer of {type(model).__name__} can be pruned ({why})")
    members = {m for n in targets for m in groups.loc[n, "group"].split(", ")}  # a group is pruned whole or not at all
    ignored = [model.get_submodule(n) for n in groups.index if n not in members]
    if spec.criterion == "taylor":
        task_gradients(task, model, spec.calib_samples)
    before = sum(p.numel() for p in model.parameters())
    kwargs: dict[str, Any] = {"importance": _importance(spec.criterion), "ignored_layers": ignored, "forward_fn": _forward}
    if spec.layers is not None:
        # every layer of a target's channel group: Torch-Pruning reads the ratio of whichever layer it meets first
        kwargs.update(pruning_ratio=0.0, pruning_ratio_dict={model.get_submodule(m): spec.sparsity for m in sorted(members)})
    elif spec.resolved_scope == "global":
        kwargs.update(pruning_ratio=spec.sparsity, global_pruning=True, max_pruning_ratio=GLOBAL_MAX_RATIO)
    else:
        kwargs.update(pruning_ratio=spec.sparsity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.BasePruner(model, example, **kwargs).step()
    model.zero_grad(set_to_none=True)
    if sum(p.numel() for p in model.parameters()) == before:
        raise PruningError(f"Torch-Pruning removed no channel of {type(model).__name__} at sparsity {spec.sparsity:g} with criterion "
                           f"'{spec.criterion}': every channel scored alike, or its dependency graph found nothing to prune")
    return model


def _prune_per_layer(task, model: nn.Module, spec: PruningSpec, example: torch.Tensor, groups: pd.DataFrame) -> nn.Module:
    """Structured pruning with a share per layer's channel group (``spec.layer_sparsity``)."""
    tp = _tp()
    try:
        layers = {n: spec.layer_sparsity[n] for n in prunable_layers(model, list(spec.layer_sparsity))}
    except SpecError as exc:
        raise SpecError("layer_sparsity." + str(exc).removeprefix("layers.")) from None
    ratio: dict[str, float] = {}
    for name, share in layers.items():
        if groups.loc[name, "refused"]:
            raise PruningError(f"{name}: cannot be pruned: {groups.loc[name, 'refused']}")
        channels = int(groups.loc[name, "channels"])
        if int(channels * (1 - share)) < 1:  # Torch-Pruning keeps int(C * (1 - share)) channels
            raise PruningError(f"layer_sparsity.{name}: pruning {share:g} of its {channels} output channels would remove every channel; "
                               f"expected at most {1 - 1 / channels:.3g}")
        for member in groups.loc[name, "group"].split(", "):
            if member in ratio and ratio[member] != share:
                raise SpecError(f"layer_sparsity.{name}: {share:g}, but {member} of its channel group ({groups.loc[name, 'group']}) "
                                f"has {ratio[member]:g}; expected one share per channel group")
            ratio[member] = share
    ratio = {m: r for m, r in ratio.items() if r > 0}
    if not ratio:
        return model
    ignored = [model.get_submodule(n) for n in groups.index if n not in ratio]
    if spec.criterion == "taylor":
        task_gradients(task, model, spec.calib_samples)
    kwargs: dict[str, Any] = {"importance": _importance(spec.criterion), "ignored_layers": ignored, "forward_fn": _forward, "pruning_ratio": 0.0,
                              "pruning_ratio_dict": {model.get_submodule(m): r for m, r in sorted(ratio.items())}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.BasePruner(model, example, **kwargs).step()
    model.zero_grad(set_to_none=True)
    return model


# ----------------------------------------------------------------------------- one entry point


def pruning_masks(task, model: nn.Module, spec: PruningSpec) -> dict[str, torch.Tensor]:
    """The keep-masks an unstructured or N:M spec gives ``model``."""
    layers = [n for n in prunable_layers(model, spec.layers) if n not in set(prunable_layers(model, spec.ignore))]
    scores = None
    if spec.criterion == "taylor":
        probe = copy.deepcopy(model)
        task_gradients(task, probe, spec.calib_samples)
        scores = weight_scores(probe, "taylor", layers)
    if spec.method == "nm":
        return nm_masks(model, spec.n, spec.m, layers, scores)
    return unstructured_masks(model, spec.sparsity, spec.resolved_scope, layers, scores)


def prune(task, model: nn.Module, spec: PruningSpec | dict, *, progress: bool = False) -> nn.Module:
    """A pruned copy of ``model`` (the input is unchanged), fine-tuned when the spec asks.

    Structured pruning returns a smaller model of the same class; masks return a model whose
    pruned weights are zero (and stay zero through fine-tuning)."""
    from ..tasks.baseline import train_float

    spec = PruningSpec.parse(spec)
    pruned = copy.deepcopy(model).eval()
    after_step = None
    if spec.method == "structured":
        pruned = _prune_structured(task, pruned, spec, task.example_input())
    else:
        masks = pruning_masks(task, pruned, spec)
        _mask_in_place(pruned, masks)
        after_step = lambda m: _mask_in_place(m, masks)  # noqa: E731
    if spec.finetune_epochs:
        train_float(pruned, task, spec.seed, spec.finetune_epochs, progress, lr=spec.finetune_lr, after_step=after_step, desc=f"fine-tune {spec.label}")
    for p in pruned.parameters():
        p.grad = None
    return pruned.eval()
