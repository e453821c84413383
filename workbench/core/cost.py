"""Cost model: per-layer and total parameters, packed weight bytes, MACs, BOPs and peak
activation memory of a bit-width assignment, the registry of cost kinds every budget, limit,
report axis and CLI flag reads, and named hardware target profiles (YAML).

Adding a cost kind is one :func:`register_cost_kind` call (here for the built-in kinds, or in a
module of yours): target profiles, the search's budgets and limits, ``workbench search --budget
KIND=VALUE``, the search's result columns, the report's and the explorer's axes all read it.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Literal

import pandas as pd
from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from ..infra.errors import SpecError, unknown_name
from .spec import Int, SpecModel, _not_bool, format_validation_error, short_repr
from ..infra.yamlio import load_yaml

if TYPE_CHECKING:  # annotations only: the cost kinds and target profiles import without torch (``workbench costs``)
    import torch
    from torch import nn

TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"


# ----------------------------------------------------------------------------- the one formula


def packed_weight_bytes(weights: int, biases: int, bits) -> int:
    """Bytes of a layer's parameters: ``weights`` packed at ``bits`` (``None`` or ``"float"``:
    32-bit float) plus 32-bit biases. The one weight-bytes formula of the workbench (cost tables,
    ``describe``, the search, the widgets)."""
    wbits = 32 if bits is None or bits == "float" else int(bits)
    return math.ceil(weights * wbits / 8) + 4 * biases


#: The weight containers of each artifact format: (the widest bits stored in 4-bit nibbles, two a
#: byte; wider integer weights take a byte each). QCDQ ONNX (onnxruntime, opset 21): weights of
#: at most 4 bits are ONNX INT4/UINT4, wider ones int8/uint8. Integer TFLite (tflite-int8,
#: ``weight_container="native"``): 4-bit weights are INT4; 2-, 3-, 5-, 6- and 7-bit weights sit
#: in int8 tensors (TFLite has no type for them), so 2 and 3 bits are stored at 8; a depthwise
#: convolution (groups == input channels, a 1-channel input's too) keeps 4-bit weights in int8
#: (the quantiser writes no INT4 DEPTHWISE_CONV_2D).
CONTAINERS = {"onnx": range(1, 5), "tflite": range(4, 5)}

#: Per output channel, what each artifact writes besides the weight container and the 32-bit
#: biases: QCDQ a float32 scale and a uint8/int8 zero point; TFLite a float32 scale and an
#: int64 zero point in the weight tensor's quantisation table.
CHANNEL_BYTES = {"onnx": 4 + 1, "tflite": 4 + 8}


def realised_weight_bytes(fmt: str, weights: int, biases: int, channels: int, bits, depthwise: bool = False) -> int:
    """Bytes the artifact format ``fmt`` (``onnx``: the QCDQ export onnxruntime runs; ``tflite``:
    the integer TFLite file) holds for one layer at ``bits``: its weights in the format's
    container (:data:`CONTAINERS`: packed nibbles or a byte each; float: 4 bytes), 32-bit biases,
    and a scale and zero point per output channel (:data:`CHANNEL_BYTES`). The graph, names and
    tensors of no layer are the artifact's overhead, measured from a written file
    (:mod:`workbench.search.realised`)."""
    if bits is None or bits == "float":
        return 4 * weights + 4 * biases
    b = int(bits)
    nibbles = b in CONTAINERS[fmt] and not (fmt == "tflite" and depthwise)
    per_value = 4 if nibbles else 8 if b <= 8 else 16
    return math.ceil(weights * per_value / 8) + 4 * biases + CHANNEL_BYTES[fmt] * channels


class LayerCosts(dict):
    """:func:`layer_costs`'s ``{layer: LayerCost}`` with ``overhead``: per cost kind, the part of
    the whole-model figure no layer explains (a realised kind's artifact overhead: graph, names,
    tensors of no layer, measured from a written file by :mod:`workbench.search.realised`), in the
    kind's unit. A :func:`cost_table` of all of them carries it (``table.attrs["overhead"]``), so
    :meth:`CostKind.value` of a realised kind is the artifact's bytes, not only its layers'; a
    table of some layers (a plain dict) carries none."""

    def __init__(self, costs=(), overhead: dict[str, float] | None = None):
        super().__init__(costs)
        self.overhead = dict(overhead or {})


# ----------------------------------------------------------------------------- cost kinds


@dataclass(frozen=True)
class CostKind:
    """One cost a bit assignment has: its name, unit, axis label, and how it is computed.

    ``additive`` kinds are a sum over layers: ``per_layer(table)`` gets a :func:`cost_table`
    (one row per layer) and returns one value per layer (a Series); the search turns them into
    linear budget constraints. Other computed kinds give the whole model's figure with
    ``total(table)``; ``weight_dependent=False`` says the figure does not change with the weight
    bits (peak activation memory at fixed activation bits), so a limit on it is checked once,
    before a search. ``measured`` kinds (``latency_ms``) have no formula: they are axes, never
    budgets or limits. ``same_as`` names a kind this one always equals (a documented alias).
    """

    name: str
    unit: str
    label: str
    description: str
    additive: bool = True
    per_layer: Callable[[pd.DataFrame], pd.Series] | None = None
    total: Callable[[pd.DataFrame], float] | None = None
    weight_dependent: bool = True
    measured: bool = False
    same_as: str = ""
    artifact: str = ""  # a realised kind: the artifact format whose bytes it counts ("onnx", "tflite"); "" for the others

    @property
    def computed(self) -> bool:
        return not self.measured

    def layer_values(self, table: pd.DataFrame) -> pd.Series:
        """Per-layer values of an additive kind for the assignment ``table`` describes."""
        if not self.additive or self.measured:
            raise SpecError(f"cost kind {self.name!r} is not additive over layers; additive kinds are {', '.join(budget_kinds())}")
        return pd.Series(self.per_layer(table), index=table.index)

    def value(self, table: pd.DataFrame) -> float:
        """The whole model's figure for the assignment ``table`` (a :func:`cost_table`) describes."""
        if self.measured:
            raise SpecError(f"cost kind {self.name!r} is measured, not computed; computed kinds are {', '.join(computed_kinds())}")
        if self.additive:
            s = self.layer_values(table)
            extra = table.attrs.get("overhead", {}).get(self.name, 0)  # a realised kind's measured artifact overhead
            return int(s.sum()) + extra if pd.api.types.is_integer_dtype(s.dtype) and not extra else float(s.sum()) + float(extra)
        return self.total(table)

    def describe_value(self, value: float) -> str:
        return f"{value:.6g} {self.unit}"


COST_KINDS: dict[str, CostKind] = {}
_BUILTIN: set[str] = set()


def register_cost_kind(kind: CostKind) -> CostKind:
    """Add ``kind`` to :data:`COST_KINDS` (re-registering a kind of yours under the same name, as a
    re-run notebook cell does, replaces it; a built-in name cannot be taken). Returns ``kind``."""
    if not isinstance(kind, CostKind):
        raise SpecError(f"register_cost_kind expects a CostKind; got {type(kind).__name__}")
    if not isinstance(kind.name, str) or not kind.name.isidentifier():
        raise SpecError(f"cost kind name {kind.name!r}; expected a short identifier such as 'flash_kib'")
    if kind.name in _BUILTIN:
        raise SpecError(f"cost kind {kind.name!r} is built in; register yours under another name")
    if kind.measured:
        if kind.per_layer is not None or kind.total is not None:
            raise SpecError(f"cost kind {kind.name!r}: a measured kind has no per_layer or total formula")
    elif kind.additive and not callable(kind.per_layer):
        raise SpecError(f"cost kind {kind.name!r}: an additive kind needs per_layer(table) -> one value per layer")
    elif not kind.additive and not callable(kind.total):
        raise SpecError(f"cost kind {kind.name!r}: a non-additive kind needs total(table) -> the model's figure")
    if kind.same_as and kind.same_as not in COST_KINDS:
        raise SpecError(f"cost kind {kind.name!r}: same_as {kind.same_as!r} is not a registered cost kind")
    COST_KINDS[kind.name] = kind
    return kind


def _unknown_kind(name, known=None) -> str:
    return unknown_name("cost kind", name, COST_KINDS if known is None else known, listed="expected one of")


def get_cost_kind(name: str) -> CostKind:
    """The registered cost kind ``name`` (one-line SpecError naming the closest and the known ones otherwise)."""
    if not isinstance(name, str) or name not in COST_KINDS:
        raise SpecError(_unknown_kind(name))
    return COST_KINDS[name]


def budget_kinds() -> list[str]:
    """Names of the kinds a search can budget (additive, computed)."""
    return [k.name for k in COST_KINDS.values() if k.additive and not k.measured]


def computed_kinds() -> list[str]:
    return [k.name for k in COST_KINDS.values() if not k.measured]


def budget_kind(name: str) -> CostKind:
    """``name`` as a search budget: registered, computed and additive (one-line SpecError otherwise)."""
    kind = get_cost_kind(name)
    if kind.measured or not kind.additive:
        why = "measured, not computed" if kind.measured else "not additive over layers"
        raise SpecError(f"budget kind {name!r} is {why}; a search budgets one of {', '.join(budget_kinds())}")
    return kind


def list_cost_kinds() -> pd.DataFrame:
    """The registered cost kinds: name, unit, label, additive, computed, weight_dependent, same_as, description."""
    cols = ["name", "unit", "label", "additive", "computed", "weight_dependent", "same_as", "description"]
    return pd.DataFrame([{"name": k.name, "unit": k.unit, "label": k.label, "additive": k.additive and not k.measured, "computed": not k.measured,
                          "weight_dependent": k.weight_dependent, "same_as": k.same_as, "description": k.description}
                         for k in COST_KINDS.values()], columns=cols)


def cost_values(table: pd.DataFrame) -> dict[str, float]:
    """Every computed cost kind of the assignment ``table`` (a :func:`cost_table`) describes; a
    realised kind only where the table carries its artifact's measured overhead (a search that
    budgets or limits it), so a realised column is always a whole file's bytes."""
    known = table.attrs.get("overhead", {})
    return {name: kind.value(table) for name, kind in COST_KINDS.items() if not kind.measured and (not kind.artifact or name in known)}


def _builtin(kind: CostKind) -> None:
    register_cost_kind(kind)
    _BUILTIN.add(kind.name)


_builtin(CostKind("weight_kib", "KiB", "theoretical packed weight KiB",
                  "theoretical: weights packed at exactly their bits plus 32-bit biases, in KiB; no artifact stores 2-, 3-, 5-, 6- "
                  "or 7-bit weights so (they sit in 4- or 8-bit containers): the realised kinds onnx_kib and tflite_kib count "
                  "what a file holds", per_layer=lambda t: t["weight_bytes"] / 1024))
_builtin(CostKind("flash_kib", "KiB", "flash KiB",
                  "what a microcontroller keeps in flash: the packed weights and 32-bit biases, in KiB; the same figure as "
                  "weight_kib (code, scales and zero-points are not counted)", per_layer=lambda t: t["weight_bytes"] / 1024, same_as="weight_kib"))
_builtin(CostKind("bops", "BOPs", "BOPs", "bit operations: MACs x weight bits x activation bits (float counts as 32 bits)",
                  per_layer=lambda t: t["bops"]))
_builtin(CostKind("macs", "MACs", "MACs", "multiply-accumulates per sample (the same at any bits)", per_layer=lambda t: t["macs"]))
_builtin(CostKind("onnx_kib", "KiB", "realised ONNX file KiB",
                  "realised: bytes of the QCDQ ONNX file onnxruntime runs, in KiB: per layer its weights in their containers (at "
                  "most 4 bits: INT4, two a byte; 5-8 bits: a byte each), 32-bit biases, a scale and zero point per channel; the "
                  "file's overhead (graph, names, other tensors) measured once from a written file",
                  per_layer=lambda t: t["onnx_bytes"] / 1024, artifact="onnx"))
_builtin(CostKind("tflite_kib", "KiB", "realised TFLite file KiB",
                  "realised: bytes of the integer TFLite file tflite-int8 deploys, in KiB: per layer its weights in their "
                  "containers (4 bits: INT4, two a byte; 2, 3, 5-8 bits: int8, a byte each), 32-bit biases, a scale and zero point "
                  "per channel; the file's overhead measured once from a written file (needs the [targets] extra)",
                  per_layer=lambda t: t["tflite_bytes"] / 1024, artifact="tflite"))
_builtin(CostKind("peak_act_kib", "KiB", "peak activation KiB",
                  "activation RAM when layers run one at a time: the largest layer input + output at the activation bits, in KiB",
                  additive=False, total=lambda t: float(t["act_bytes"].max() / 1024) if len(t) else 0.0, weight_dependent=False))
_builtin(CostKind("ram_kib", "KiB", "RAM KiB", "what a microcontroller needs in RAM for activations: the same figure as peak_act_kib",
                  additive=False, total=lambda t: float(t["act_bytes"].max() / 1024) if len(t) else 0.0, weight_dependent=False,
                  same_as="peak_act_kib"))
_builtin(CostKind("latency_ms", "ms", "latency p50 (ms)",
                  "p50 latency of one inference, batch 1, measured, not computed: onnxruntime on this CPU (one thread, the QCDQ "
                  "export) on a search's front points, or a deployment target's own with a cost table (workbench.search.cost_tables: "
                  "Vela's cycles at its clock, onnxruntime's profile)",
                  measured=True))
_builtin(CostKind("cycles", "cycles", "NPU cycles",
                  "cycles of one inference as the target's compiler counts them (Vela for the Arm Ethos-U): measured per target "
                  "(workbench.search.cost_tables), not computed", measured=True))


# ----------------------------------------------------------------------------- target profiles


class TargetProfile(SpecModel):
    """A hardware target: the bit-widths it runs, its default cost kind and its budgets.

    ``budgets`` maps cost kinds to hard limits (a number: a search under this profile never
    returns a point over it) or ``null`` (the kind applies, with no fixed limit).
    ``weight_encoding`` (optional): how a QCDQ export for this target stores int8 weights, ``u8``,
    ``s8`` or ``auto`` (s8 where the exporting host's CPU has VNNI or is ARM, else u8); a job
    given this target and no encoding of its own uses it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    weight_bits: list[Int]
    act_bits: list[Int]
    cost: str = "weight_kib"
    budgets: dict[str, Annotated[float, BeforeValidator(_not_bool)] | None] = Field(default_factory=dict)  # NaN / inf: the check below
    weight_encoding: Literal["u8", "s8", "auto"] | None = None

    @field_validator("weight_bits", "act_bits", mode="before")
    @classmethod
    def _bits(cls, v):
        from .formats import FORMATS

        allowed = {b for f in FORMATS.values() for b in f.bits}  # the widths the number-format registry knows
        # integers only: 8.0, "8" and true are not bit-widths (no silent coercion); each width once
        expected = "expected a non-empty list of bit-widths in 2-8 or 16"
        if not isinstance(v, list) or not v:
            raise ValueError(f"{expected}; got {short_repr(v)}")
        for i, b in enumerate(v):
            integer = isinstance(b, numbers.Integral) and not isinstance(b, bool)
            if not (integer and b in allowed) or b in v[:i]:
                why = "is not an integer" if not integer else "is not one" if b not in allowed else "is given twice"
                raise ValueError(f"{expected}; got {short_repr(v)} (item {i}: {short_repr(b, 60)} {why})")
        return sorted(int(b) for b in v)

    @field_validator("name", "description", "cost", mode="before")
    @classmethod
    def _text(cls, v, info):
        if not isinstance(v, str) or (info.field_name == "name" and not v.strip()):
            raise ValueError(f"expected {'a non-empty name' if info.field_name == 'name' else 'text'}; got {short_repr(v)}")
        return v

    @field_validator("budgets", mode="before")
    @classmethod
    def _budget_values(cls, v):
        if not isinstance(v, dict):
            raise ValueError(f"expected a mapping of cost kind to a limit or null; got {short_repr(v)}")
        for name, value in v.items():
            if not isinstance(name, str):
                raise ValueError(f"expected cost kind names as keys; got {short_repr(name)}")
            if value is not None and not isinstance(value, (int, float)):  # "5" is text, not a limit
                raise ValueError(f"{name}: expected a positive limit or null; got {short_repr(value)}")
        return v

    @field_validator("cost")
    @classmethod
    def _cost(cls, v):
        if v not in COST_KINDS:
            raise ValueError(_unknown_kind(v))
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v):
        for name, value in v.items():
            if name not in COST_KINDS:
                raise ValueError(f"{_unknown_kind(name)}; got {short_repr(v)}")
            if value is None:
                continue
            if COST_KINDS[name].measured:
                raise ValueError(f"{name} is measured, not computed: a profile may name it (null) but not limit it; got {short_repr(v)}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive limit or null; got {short_repr(v)}")
        return v

    @property
    def limits(self) -> dict[str, float]:
        """The budgets with a value: hard limits."""
        return {k: float(v) for k, v in self.budgets.items() if v is not None}


def _registered() -> dict[str, Path]:
    """``{name: file}`` of the registered profiles: the regular ``*.yaml`` files of
    :data:`TARGETS_DIR` whose real path stays inside it (a symlink pointing out is not one)."""
    root = TARGETS_DIR.resolve()
    out = {}
    for path in sorted(TARGETS_DIR.glob("*.yaml")):
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real.parent == root and real.is_file():
            out[path.stem] = real
    return out


def list_targets() -> list[str]:
    """Names of the registered target profiles (the files of :data:`TARGETS_DIR`)."""
    return sorted(_registered())


TARGET_FILE_HINT = "a profile of your own is a file given on the command line (--target-file PATH; Python: target_file=PATH)"


def _unknown_target(value, files_ok: bool) -> str:
    known = ", ".join(list_targets())
    return f"unknown target {short_repr(value)}; expected one of {known}" + (" or a YAML file" if files_ok else f" (a registered profile); {TARGET_FILE_HINT}")


def target_path(name) -> Path:
    """The file of the registered profile ``name``: a name only (``mcu``), never a path, so a
    value read from a recipe cannot reach a file outside :data:`TARGETS_DIR` (``../x``, ``/etc/x``,
    ``a/b`` and symlinks pointing out are not registered names); one-line SpecError otherwise."""
    found = _registered().get(name) if isinstance(name, str) else None
    if found is None:
        raise SpecError(_unknown_target(name, files_ok=False))
    return found


def parse_target(obj, where: str = "target") -> TargetProfile:
    """A validated :class:`TargetProfile` from a parsed YAML document (a mapping); one-line
    SpecError prefixed by ``where`` otherwise."""
    if isinstance(obj, TargetProfile):
        return obj
    if not isinstance(obj, dict):
        raise SpecError(f"{where}: the file holds {_kind(obj)}; expected a mapping with name, weight_bits, act_bits, cost, budgets")
    try:
        return TargetProfile.model_validate(obj)
    except ValidationError as exc:
        raise SpecError(f"{where}: " + format_validation_error(exc)) from None


def _load_file(path: Path) -> TargetProfile:
    if not path.exists():
        raise SpecError(f"target file {str(path)!r} does not exist")
    return parse_target(load_yaml(path, "target", SpecError), f"target {path}")


def load_target(name_or_path: str | Path | TargetProfile) -> TargetProfile:
    """A profile the caller names: a registered one by name (``cpu-int8-ort``, ``fpga-dataflow``,
    ``mcu``: :func:`list_targets`), or a YAML file the caller gives (a ``Path``, or a string
    ending in .yaml / .yml: a command-line option or a Python argument, never a recipe's field;
    see :func:`recipe_target`). Any other string is an unknown name (one-line SpecError listing
    the registered ones): a name is never joined to a folder."""
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    if isinstance(name_or_path, os.PathLike):
        return _load_file(Path(name_or_path))
    if isinstance(name_or_path, str) and name_or_path in list_targets():
        return _load_file(target_path(name_or_path))
    if isinstance(name_or_path, str) and name_or_path.lower().endswith((".yaml", ".yml")):
        return _load_file(Path(name_or_path))
    raise SpecError(_unknown_target(name_or_path, files_ok=True))


def recipe_target(value: str, target_file: str | os.PathLike | None = None) -> TargetProfile:
    """The profile a recipe's ``target:`` names: a registered name, or, only when the user gives
    that file on the command line (``--target-file PATH``) or in Python (``target_file=PATH``),
    the profile in that file; the recipe's value must then name it (the file's path, its stem or
    the profile's ``name``). A recipe never makes the workbench read a file by itself."""
    if target_file is None:
        return load_target(target_path(value))
    path = Path(target_file)
    profile = _load_file(path)
    same = isinstance(value, str) and (value in (profile.name, path.stem) or _same_file(value, path))
    if not same:
        raise SpecError(f"the recipe names target {short_repr(value)}; --target-file {path} holds profile {profile.name!r}: "
                        f"expected the file of the profile the recipe names")
    return profile


def _same_file(value: str, path: Path) -> bool:
    try:
        return Path(value).resolve() == path.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def _kind(obj) -> str:
    return "nothing (an empty document)" if obj is None else f"a {type(obj).__name__}"


# ----------------------------------------------------------------------------- per-layer facts


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs: the facts the cost of any bit assignment is computed from."""

    layer: str
    weights: int
    biases: int
    macs: int
    in_elems: int
    out_elems: int
    channels: int = 0  # output channels (per-channel scales and zero points of an artifact)
    depthwise: bool = False  # a convolution with groups == input channels (TFLite: DEPTHWISE_CONV_2D)


def layer_costs(model: nn.Module, example_input: torch.Tensor) -> dict[str, LayerCost]:
    """Per-layer weight / bias counts, MACs and activation sizes, from one forward pass."""
    import torch

    from ..tasks.models import layer_macs
    from .quantize import QUANTISABLE

    found: dict[str, LayerCost] = {}
    hooks = []
    for name, m in model.named_modules():
        if not isinstance(m, QUANTISABLE):
            continue

        def hook(mod, args, out, name=name):
            found[name] = LayerCost(name, mod.weight.numel(), 0 if mod.bias is None else mod.bias.numel(), layer_macs(mod, out),
                                    int(args[0][0].numel()), int(out[0].numel()), int(mod.weight.shape[0]),
                                    getattr(mod, "groups", 0) == getattr(mod, "in_channels", -1))

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
    return LayerCosts({name: found[name] for name, m in model.named_modules() if name in found})


def embedding_costs(model: nn.Module) -> dict[str, LayerCost]:
    """Per embedding table (``nn.Embedding``, quantised or not): its ``rows x dim`` weights as a
    :class:`LayerCost` (no bias, no MACs, no activation counted). :func:`layer_costs` (what the
    search's budgets and limits read) holds only the layers the search chooses bits for
    (Conv/Linear) and leaves tables out, float or quantised; price them with
    ``cost_table(embedding_costs(model), {name: bits})`` (None: float, 32 bits; per-row scales
    are not counted, as for every layer). ``describe()`` and the summary's ``weight_bytes_*``
    count them: float tables at 32 bits, quantised ones at their bits."""
    from torch import nn

    return {name: LayerCost(name, m.weight.numel(), 0, 0, 0, 0) for name, m in model.named_modules() if isinstance(m, nn.Embedding)}


def weight_bytes(c: LayerCost, wbits: int | None) -> int:
    return packed_weight_bytes(c.weights, c.biases, wbits)


def cost_table(costs: dict[str, LayerCost], weight_bits: dict[str, int | None], act_bits: dict[str, int | None] | int | None = 8) -> pd.DataFrame:
    """Per layer: params, packed weight bytes, MACs, BOPs and activation bytes (input + output) of an assignment.

    Float (None) counts as 32 bits. ``act_bits`` is one width for every layer or a per-layer map.
    ``onnx_bytes`` / ``tflite_bytes``: what each artifact format holds for the layer
    (:func:`realised_weight_bytes`). The cost kinds (:data:`COST_KINDS`) are computed from this
    table; ``costs`` a :class:`LayerCosts` with an overhead puts it in ``table.attrs["overhead"]``.
    """
    rows = []
    for name, c in costs.items():
        w = weight_bits.get(name, 8)
        a = act_bits.get(name, 8) if isinstance(act_bits, dict) else act_bits
        wb, ab = (32 if w is None else w), (32 if a is None else a)
        realised = {f"{fmt}_bytes": realised_weight_bytes(fmt, c.weights, c.biases, c.channels, w, c.depthwise) for fmt in CONTAINERS}
        rows.append({"layer": name, "weight_bits": w, "act_bits": a, "params": c.weights + c.biases, "weight_bytes": weight_bytes(c, w),
                     "macs": c.macs, "bops": c.macs * wb * ab, "act_bytes": math.ceil((c.in_elems + c.out_elems) * ab / 8), **realised})
    table = pd.DataFrame(rows, columns=["layer", "weight_bits", "act_bits", "params", "weight_bytes", "macs", "bops", "act_bytes",
                                        *(f"{fmt}_bytes" for fmt in CONTAINERS)])
    if isinstance(costs, LayerCosts) and costs.overhead:
        table.attrs["overhead"] = dict(costs.overhead)
    return table


def totals(table: pd.DataFrame) -> dict:
    """Whole-model figures: sums, peak activation memory (largest layer input + output), and
    every computed cost kind of the registry."""
    out = {"params": int(table["params"].sum()), "weight_bytes": int(table["weight_bytes"].sum()),
           "peak_act_bytes": int(table["act_bytes"].max()) if len(table) else 0}
    return {**out, **cost_values(table)}


def described_costs(costs: dict[str, LayerCost], described: pd.DataFrame) -> dict:
    """:func:`totals` (params, packed weight bytes, MACs, BOPs, peak activation bytes and every
    computed cost kind) of the bit assignment a :func:`~workbench.core.describe.describe` table records:
    its ``weight_bits`` and ``act_bits`` per layer of ``costs`` (:func:`layer_costs`; NaN: float)."""

    def bits(v):
        return None if v is None or pd.isna(v) else int(v)

    rows = described.set_index("layer")
    known = [name for name in costs if name in rows.index]
    weight = {name: bits(rows.at[name, "weight_bits"]) for name in known}
    act = {name: bits(rows.at[name, "act_bits"]) for name in known}
    return totals(cost_table({name: costs[name] for name in known}, weight, act))
