"""Quantisation specs: global defaults plus per-layer overrides.

A spec holds parameters only (what the user asks for); :func:`workbench.core.quantize.quantize_model`
turns it into a Brevitas model. Overrides are keyed by a *selector*:

- an exact module name, ``"stack2.conv1"``;
- a glob over module names, ``"blocks.*"``;
- a layer type, ``"type:Linear"`` (``Conv1d``, ``Conv2d``, ``Linear``; ``type:depthwise`` too).

When several selectors match a layer, the more specific wins (type < glob < exact name), and
among selectors of one kind the later one wins. A selector that is a layer's exact name selects
that layer, even when it holds glob characters (``conv[0]``); one that is a layer's name and also
matches other layers as a glob (``conv[0]`` beside ``conv0``) is a SpecError naming both. Per layer: ``weight_bits`` (2-8 or 16, or
``"float"`` for unquantised), ``act_bits`` (bits of the activation the layer reads, same
choices), ``weight_granularity`` (``per_tensor`` | ``per_channel``) and ``scale_type``
(``float`` | ``po2``, power-of-two scales for fixed-point hardware), ``weight_format`` and
``act_format`` (a number format from :mod:`workbench.core.formats`: ``int``, the default, or a
minifloat such as ``fp8_e4m3``; a fixed-width format stores its own bits, so ``weight_bits`` may
be left out or must equal them), and ``act_mode``: ``static`` (the default: the activation's scale
is calibrated once) or ``dynamic`` (its scale and zero point are computed from each input at run
time, per tensor, as onnxruntime's ``quantize_dynamic`` does; 8-bit int activations only, no
calibration, the layer's bias stays float).

Embedding tables (``nn.Embedding``: a transformer's word, position and token-type embeddings) stay
float unless asked: ``embedding_bits`` (2-8; None, the default, keeps them float) quantises every
table, and an override keyed by a table's exact name or by ``type:Embedding`` sets one
(``{"model.bert.embeddings.word_embeddings": {"weight_bits": 4}}``; ``"float"`` keeps it float).
A table takes one scale per row (``weight_granularity`` ``per_channel``, axis 0), integer
weights and ``scale_type``; an activation setting or another format on it is a SpecError. Globs
never select tables (``"*": {"weight_bits": 4}`` leaves them as they are).

The two attention matmuls of a transformers encoder (``Q · Kᵀ`` and ``probs · V``) stay float
unless asked: ``attention_bits`` (2-8; None, the default, keeps them float) quantises the inputs
of both in every attention module (query, key and value signed, the softmax probabilities
unsigned; static per-tensor scales, calibrated, integer format, the spec's ``scale_type``), so
onnxruntime runs them as integer kernels (:mod:`workbench.core.attention`). A model without
transformers attention is a SpecError.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from ..infra.errors import SpecError, UnsupportedLayerError
from .formats import ALLOWED_BITS, FORMATS, INT, get_format, unknown_format_message
from ..infra.yamlio import in_file, load_yaml, loads_yaml

FLOAT = "float"
Bits = Union[StrictInt, Literal["float"]]
Granularity = Literal["per_tensor", "per_channel"]
ScaleType = Literal["float", "po2"]
ActMode = Literal["static", "dynamic"]
STATIC, DYNAMIC = "static", "dynamic"
SELECTOR_TYPES = ("Conv1d", "Conv2d", "Linear", "depthwise")
EMBEDDING_SELECTOR = "type:Embedding"  # selects every embedding table (see the module docstring)
EMBEDDING_BITS = tuple(b for b in ALLOWED_BITS if b <= 8)  # embedding tables: 2-8 bits, per-row scales
ATTENTION_BITS = EMBEDDING_BITS  # attention matmul inputs: 2-8 bits, static per-tensor scales


def _not_bool(value):
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {str(value).lower()} (a boolean is not a number)")
    return value


#: An int that is not a boolean (``true`` is not 1) and a finite float that is not a boolean (NaN,
#: infinity and ``true`` refused): the number fields of specs, recipes, targets and budgets.
Int = Annotated[int, BeforeValidator(_not_bool)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_not_bool)]


def _check_bits(value, field: str):
    if value is None or value == FLOAT:
        return value
    if value not in ALLOWED_BITS:
        raise ValueError(f"expected an integer in 2-8 or 16, or 'float'; got {short_repr(value)}")
    return value


def _check_format(value):
    if value is None:
        return value
    if not isinstance(value, str) or value not in FORMATS:
        raise ValueError(unknown_format_message(value))
    return value


def _bits_against_formats(data, fill: bool):
    """Before validation: a fixed-width format (``fp8_e4m3``) named beside bits must agree with
    them; with ``fill`` (the spec's defaults) missing bits become the format's storage bits."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for fmt_field, bits_field in (("weight_format", "weight_bits"), ("act_format", "act_bits")):
        name = data.get(fmt_field)
        if not isinstance(name, str) or name not in FORMATS:
            continue
        fmt = FORMATS[name]
        if fmt.fixed_bits is None:
            continue
        bits = data.get(bits_field)
        if bits is None:
            if fill and bits_field not in data:  # left out: filled; an explicit null stays, and the spec's type refuses it
                data[bits_field] = fmt.fixed_bits
        elif bits == FLOAT or bits != fmt.fixed_bits:
            raise ValueError(f"got {bits_field} {short_repr(bits)} beside {fmt_field} {name!r}, which stores {fmt.fixed_bits} bits; "
                             f"leave {bits_field} out or set it to {fmt.fixed_bits}")
    return data


class SpecModel(BaseModel):
    """Base of the workbench's parameter models: constructing one directly
    (``QuantSpec(weight_bits=33)``, ``PruningSpec(sparsity=1.0)``) raises the same one-line
    :class:`SpecError` naming the field as ``parse`` does, never pydantic's multi-line error.
    ``model_validate`` (used by ``parse`` and by models that nest these) is unchanged."""

    def __init__(self, /, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc)) from None

    # Not a "custom" __init__ for pydantic: validation never calls it, so nested models and
    # model_validate keep raising ValidationError with the full field path.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class _BitsAndFormats(SpecModel):
    """The checks a spec's defaults and a layer override share: bits, formats, and bits against formats."""

    _fill_format_bits: ClassVar[bool] = False  # the defaults fill missing bits from a fixed-width format

    @field_validator("weight_bits", "act_bits", mode="before", check_fields=False)
    @classmethod
    def _bits(cls, v, info):
        return _check_bits(v, info.field_name)

    @field_validator("weight_format", "act_format", mode="before", check_fields=False)
    @classmethod
    def _format(cls, v):
        return _check_format(v)

    @model_validator(mode="before")
    @classmethod
    def _formats_bits(cls, data):
        return _bits_against_formats(data, fill=cls._fill_format_bits)

    @model_validator(mode="after")
    def _dynamic_needs_int8(self):
        if getattr(self, "act_mode", None) == DYNAMIC:
            problem = dynamic_act_problem(self.act_bits, self.act_format, self.scale_type)
            if problem:
                raise ValueError(f"act_mode 'dynamic' {problem}")
        return self


def dynamic_act_problem(act_bits, act_format, scale_type) -> str | None:
    """Why settings cannot take dynamic activations (None: they can; None fields are unset)."""
    if act_bits is not None and act_bits != 8:
        return f"quantises activations to 8-bit int; got act_bits {short_repr(act_bits)} (expected 8)"
    if act_format is not None and act_format != INT:
        return f"quantises activations to 8-bit int; got act_format {act_format!r} (expected 'int')"
    if scale_type is not None and scale_type != "float":
        return f"computes float scales at run time; got scale_type {scale_type!r} (expected 'float')"
    return None


class LayerSettings(_BitsAndFormats):
    """Per-layer override: every field optional, unset fields come from the spec's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight_bits: Bits | None = None
    act_bits: Bits | None = None
    weight_granularity: Granularity | None = None
    scale_type: ScaleType | None = None
    weight_format: str | None = None
    act_format: str | None = None
    act_mode: ActMode | None = None


class QuantSpec(_BitsAndFormats):
    """Global defaults plus per-layer overrides (see the module docstring for selectors)."""

    _fill_format_bits: ClassVar[bool] = True

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight_bits: Bits = 8
    act_bits: Bits = 8
    weight_granularity: Granularity = "per_channel"
    scale_type: ScaleType = "float"
    weight_format: str = INT
    act_format: str = INT
    act_mode: ActMode = STATIC
    layers: dict[str, LayerSettings] = Field(default_factory=dict)
    embedding_bits: StrictInt | None = None  # None: embedding tables stay float (the default)
    attention_bits: StrictInt | None = None  # None: attention matmuls stay float (the default)

    @field_validator("embedding_bits", mode="before")
    @classmethod
    def _embedding_bits(cls, v):
        if v is None or v == FLOAT:
            return None
        if type(v) is not int or v not in EMBEDDING_BITS:
            raise ValueError(f"expected an integer in 2-8 (embedding tables, per-row scales), or None / 'float' for float tables; got {short_repr(v)}")
        return v

    @field_validator("attention_bits", mode="before")
    @classmethod
    def _attention_bits(cls, v):
        if v is None or v == FLOAT:
            return None
        if type(v) is not int or v not in ATTENTION_BITS:
            raise ValueError(f"expected an integer in 2-8 (the inputs of both attention matmuls, static per-tensor scales), or None / 'float' for float matmuls; got {short_repr(v)}")
        return v

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(cls, obj: Any) -> "QuantSpec":
        """Validate a dict (or a QuantSpec); errors become one-line :class:`SpecError`."""
        if isinstance(obj, QuantSpec):
            return obj
        if not isinstance(obj, dict):
            raise SpecError(f"spec is a {type(obj).__name__}; expected a mapping of spec fields")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc)) from None

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> "QuantSpec":
        """A spec from YAML text, or from a file (a ``Path``, or a string ending in .yaml / .yml);
        errors name the file."""
        if isinstance(text_or_path, Path) or str(text_or_path).endswith((".yaml", ".yml")):
            path = Path(text_or_path)
            obj = load_yaml(path, "spec", SpecError)
            try:
                return cls.parse(obj)
            except SpecError as exc:
                raise SpecError(in_file(str(exc), path)) from None
        return cls.parse(loads_yaml(text_or_path, "spec", SpecError))

    @classmethod
    def uniform(cls, weight_bits: int | str = 8, act_bits: int | str = 8, **kw) -> "QuantSpec":
        return cls.parse({"weight_bits": weight_bits, "act_bits": act_bits, **kw})

    def with_layers(self, layers: dict[str, dict | LayerSettings]) -> "QuantSpec":
        """A copy with more overrides (later ones take precedence among equals)."""
        merged = {**{k: v.model_dump(exclude_none=True) for k, v in self.layers.items()}}
        for k, v in layers.items():
            merged[k] = v.model_dump(exclude_none=True) if isinstance(v, LayerSettings) else dict(v)
        return QuantSpec.parse({**self.to_dict(), "layers": merged})

    def to_dict(self) -> dict:
        d = self.model_dump(exclude={"layers"})
        for key in ("weight_format", "act_format"):  # the default stays implicit: old specs and recipes read back unchanged
            if d[key] == INT:
                del d[key]
        if d["embedding_bits"] is None:  # likewise: float tables, the default, are not written
            del d["embedding_bits"]
        if d["attention_bits"] is None:  # likewise: float attention matmuls
            del d["attention_bits"]
        if d["act_mode"] == STATIC:
            del d["act_mode"]
        d["layers"] = {k: v.model_dump(exclude_none=True) for k, v in self.layers.items()}
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def cut_text(text: str, limit: int = 300) -> str:
    """``text`` cut to about ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to about ``limit`` characters: an error never echoes a huge input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} items, " if isinstance(value, (list, tuple, dict, set)) else ""
    return f"{text[:limit]}... ({size}{len(text)} characters)"


UNION_TAGS = ("int", "str", "float", "bool", "none")  # the branch names pydantic puts in an error location


def is_union_tag(part) -> bool:
    """True for a location part naming a union branch (``int``, ``literal['float']``,
    ``function-after[...]``), not a field or a layer (a layer named ``intro.conv`` is kept)."""
    return isinstance(part, str) and (part in UNION_TAGS or part.startswith(("literal[", "function-")))


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """First pydantic error as ``field.path: message; got VALUE`` on one line (inputs are cut to
    about 200 characters)."""
    err = exc.errors(include_url=False, include_context=False)[0]
    path = ".".join(str(p) for p in err["loc"] if not is_union_tag(p))
    if not path and not prefix and err["type"] == "value_error":  # a check across fields: its message says it all
        return cut_text(err["msg"].removeprefix("Value error, "))
    path = f"{prefix}{path}" if path else (prefix.rstrip(".") or "spec")
    msg = cut_text(err["msg"].removeprefix("Value error, "))
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    got = err.get("input")
    tail = "" if "got" in msg or err["type"] == "missing" or (err["type"] == "value_error" and not err["loc"]) else f"; got {short_repr(got)}"
    more = len(exc.errors()) - 1
    return f"{path}: {msg}{tail}" + (f" (and {more} more errors)" if more > 0 else "")


# ---------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class LayerQuant:
    """The resolved settings of one layer (``None`` bits = float / unquantised; a format from
    :mod:`workbench.core.formats`, ``int`` by default, whose bits are its storage bits)."""

    weight_bits: int | None
    act_bits: int | None
    weight_granularity: str
    scale_type: str
    weight_format: str = INT
    act_format: str = INT
    act_mode: str = STATIC

    @property
    def weight_key(self):
        return (self.weight_bits, self.weight_granularity, self.scale_type, self.weight_format)

    @property
    def act_key(self):
        return (self.act_bits, self.scale_type, self.act_format) + ((DYNAMIC,) if self.dynamic else ())

    @property
    def dynamic(self) -> bool:
        """The activation this layer reads is quantised with a run-time scale (``act_mode: dynamic``)."""
        return self.act_mode == DYNAMIC and self.act_bits is not None

    @property
    def int_quantised(self) -> bool:
        """Weights and the input both quantised as integers with scales known before run time
        (what an int32 bias and the integer tensors handed on between layers need; a dynamic
        input's scale exists only at run time, so its layer keeps a float bias)."""
        return self.weight_bits is not None and self.act_bits is not None and self.weight_format == INT and self.act_format == INT and not self.dynamic


def _bits(v):
    return None if v == FLOAT else v


def selector_kind(selector: str, names=()) -> int:
    """0 = type, 1 = glob, 2 = exact name: the precedence order. A selector that is the exact name
    of one of ``names`` is an exact name even when it holds glob characters (``conv[0]``)."""
    if selector.startswith("type:"):
        return 0
    if selector in names:
        return 2
    if any(c in selector for c in "*?["):
        return 1
    return 2


def glob_hits(selector: str, names, where: str | None = None) -> list[str]:
    """The names a selector selects: itself when it is one of ``names`` (literal names win over
    globs), else those its glob matches. A selector that is one name literally and matches others
    as a glob (``conv[0]`` beside ``conv0``) is a one-line :class:`SpecError` naming both."""
    names = list(names)
    by_glob = [n for n in names if n != selector and fnmatch.fnmatchcase(n, selector)] if any(c in selector for c in "*?[") else []
    if selector in names:
        if by_glob:
            raise SpecError(f"{where or 'layers.' + selector}: ambiguous selector: it is the name of layer {selector!r} and, as a glob, matches "
                            f"{', '.join(map(repr, by_glob[:4]))}{'...' if len(by_glob) > 4 else ''}; rename one of the layers "
                            f"or select with a glob that matches only the layers you mean")
        return [selector]
    return by_glob


def layer_type_matches(type_name: str, is_depthwise: bool, wanted: str) -> bool:
    return wanted == type_name or (wanted == "depthwise" and is_depthwise)


def resolve(spec: QuantSpec, layers: dict[str, tuple[str, bool]], unsupported: dict[str, str] | None = None) -> dict[str, LayerQuant]:
    """Resolve ``spec`` against a model's quantisable layers ``{name: (type name, is_depthwise)}``.

    Raises :class:`SpecError` for selectors matching nothing (with the closest valid names) and
    :class:`UnsupportedLayerError` for exact names of layers the workbench cannot quantise.
    """
    unsupported = unsupported or {}
    names = list(layers)
    matches: dict[str, list[str]] = {}
    known = {*layers, *unsupported}  # exact names: they win over globs
    for sel in spec.layers:
        kind = selector_kind(sel, known)
        if kind == 0:
            wanted = sel[len("type:") :]
            if wanted not in SELECTOR_TYPES:
                raise SpecError(f"layers.{sel}: unknown layer type {wanted!r}; expected one of {', '.join('type:' + t for t in SELECTOR_TYPES)}")
            hit = [n for n in names if layer_type_matches(layers[n][0], layers[n][1], wanted)]
            if not hit:
                present = sorted({t for t, _ in layers.values()})
                raise SpecError(f"layers.{sel}: the model has no {wanted} layer; it has {', '.join(present)}")
        elif kind == 1:
            hit = glob_hits(sel, names)
            if not hit:
                raise SpecError(f"layers.{sel}: pattern matches no quantisable layer; layers are {', '.join(names[:8])}{'...' if len(names) > 8 else ''}")
        else:
            if sel in unsupported:
                raise UnsupportedLayerError(f"layers.{sel}: {unsupported[sel]} layers cannot be quantised by the workbench; it stays in float")
            if sel not in layers:
                close = difflib.get_close_matches(sel, names, n=3, cutoff=0.4)
                hint = f"closest: {', '.join(close)}" if close else f"layers are {', '.join(names[:8])}{'...' if len(names) > 8 else ''}"
                raise SpecError(f"layers.{sel}: no such quantisable layer; {hint}")
            hit = glob_hits(sel, names)  # literal names win over globs; literal and glob at once is an error naming both
        matches[sel] = hit

    ordered = sorted(spec.layers, key=lambda s: selector_kind(s, known))  # stable: dict order within a kind
    resolved = {}
    for name in names:
        w, a, g, s = spec.weight_bits, spec.act_bits, spec.weight_granularity, spec.scale_type
        wf, af, mode = spec.weight_format, spec.act_format, spec.act_mode
        where = {"weight": "the spec's defaults", "act": "the spec's defaults", "mode": "the spec's defaults"}
        for sel in ordered:
            if name in matches[sel]:
                o = spec.layers[sel]
                for what, fmt_name, bits in (("weight", o.weight_format, o.weight_bits), ("act", o.act_format, o.act_bits)):
                    if fmt_name is not None:
                        where[what] = f"layers.{sel}"
                        fixed = get_format(fmt_name).fixed_bits
                        if bits is None and fixed is not None:
                            bits = fixed
                    if what == "weight":
                        wf = fmt_name or wf
                        w = bits if bits is not None else w
                    else:
                        af = fmt_name or af
                        a = bits if bits is not None else a
                g = o.weight_granularity or g
                s = o.scale_type or s
                if o.act_mode is not None:
                    mode, where["mode"] = o.act_mode, f"layers.{sel}"
        for what, fmt_name, bits in (("weight", wf, w), ("act", af, a)):
            fmt = get_format(fmt_name)
            if bits == FLOAT or fmt.fixed_bits is None:
                if fmt.fixed_bits is None and bits not in (FLOAT, None) and bits not in fmt.bits:
                    raise SpecError(f"layers.{name}.{what}_bits is {bits}; {what}_format {fmt_name!r} takes {', '.join(map(str, fmt.bits))}")
            elif bits != fmt.fixed_bits:
                raise SpecError(f"layers.{name}.{what}_bits is {bits} but its {what}_format {fmt_name!r} (from {where[what]}) stores {fmt.fixed_bits} bits; "
                                f"name {what}_format 'int' beside {what}_bits {bits} in the override")
            if bits != FLOAT and s not in fmt.scale_types:
                raise SpecError(f"layers.{name}: scale_type {s!r} does not apply to {what}_format {fmt_name!r}; it takes scale_type {', '.join(fmt.scale_types)}")
        if mode == DYNAMIC and a != FLOAT:
            problem = dynamic_act_problem(a, af, s)
            if layers[name][0] != "Linear":
                problem = (f"applies to Linear layers only (onnxruntime runs dynamic activations as MatMulInteger); {name} is a {layers[name][0]}: "
                           "select the Linear layers, e.g. layers: {'type:Linear': {act_mode: dynamic}}")
            if problem:
                raise SpecError(f"layers.{name}.act_mode is 'dynamic' (from {where['mode']}), which {problem}")
        resolved[name] = LayerQuant(_bits(w), _bits(a), g, s, INT if w == FLOAT else wf, INT if a == FLOAT else af,
                                    DYNAMIC if mode == DYNAMIC and a != FLOAT else STATIC)
    return resolved


# ---------------------------------------------------------------------------- embedding tables


def is_embedding_selector(selector: str, embeddings) -> bool:
    """Whether a ``layers`` key addresses embedding tables: ``type:Embedding`` or a table's exact name."""
    return selector == EMBEDDING_SELECTOR or selector in embeddings


def without_embedding_selectors(spec: QuantSpec, embeddings) -> QuantSpec:
    """``spec`` less its overrides of embedding tables (what :func:`resolve` reads)."""
    keep = {k: v for k, v in spec.layers.items() if not is_embedding_selector(k, embeddings)}
    if len(keep) == len(spec.layers):
        return spec
    return QuantSpec.parse({**spec.to_dict(), "layers": {k: v.model_dump(exclude_none=True) for k, v in keep.items()}})


def _check_embedding_override(sel: str, o: LayerSettings) -> None:
    for field in ("act_bits", "act_format", "act_mode"):
        if getattr(o, field) is not None:
            raise SpecError(f"layers.{sel}.{field}: an embedding table reads no activation to quantise; set weight_bits (2-8 or 'float') and scale_type only")
    if o.weight_granularity not in (None, "per_channel"):
        raise SpecError(f"layers.{sel}.weight_granularity is {o.weight_granularity!r}; an embedding table takes one scale per row: 'per_channel' (or leave it out)")
    if o.weight_format not in (None, INT):
        raise SpecError(f"layers.{sel}.weight_format is {o.weight_format!r}; an embedding table takes integer weights: 'int' (or leave it out)")
    if o.weight_bits is not None and o.weight_bits != FLOAT and o.weight_bits not in EMBEDDING_BITS:
        raise SpecError(f"layers.{sel}.weight_bits is {o.weight_bits}; an embedding table takes 2-8 bits (per-row scales) or 'float'")


def resolve_embeddings(spec: QuantSpec, embeddings) -> dict[str, LayerQuant]:
    """The embedding tables ``spec`` quantises, ``{name: LayerQuant}`` (per-row integer weights,
    no activation), from ``embedding_bits`` and the overrides keyed ``type:Embedding`` (first) or
    by a table's exact name (they win). Tables left float are absent. Bad settings on a table are
    one-line :class:`SpecError`."""
    names = list(embeddings)
    if EMBEDDING_SELECTOR in spec.layers and not names:
        raise SpecError(f"layers.{EMBEDDING_SELECTOR}: the model has no Embedding layer")
    ordered = [s for s in spec.layers if s == EMBEDDING_SELECTOR] + [s for s in spec.layers if s != EMBEDDING_SELECTOR and s in embeddings]
    for sel in ordered:
        _check_embedding_override(sel, spec.layers[sel])
    out = {}
    for name in names:
        bits, scale_type = spec.embedding_bits, spec.scale_type
        for sel in ordered:
            if sel in (EMBEDDING_SELECTOR, name):
                o = spec.layers[sel]
                bits = bits if o.weight_bits is None else _bits(o.weight_bits)
                scale_type = o.scale_type or scale_type
        if bits is not None:
            out[name] = LayerQuant(bits, None, "per_channel", scale_type, INT, INT)
    return out


def assignment_spec(assignment: dict[str, int], act_bits: int | str = 8, base: QuantSpec | None = None) -> QuantSpec:
    """``base`` (default: an 8-bit spec) with the per-layer weight bit-widths of ``assignment`` and ``act_bits``."""
    base = base or QuantSpec()
    return QuantSpec.parse({**base.to_dict(), "act_bits": act_bits, "layers": {k: {"weight_bits": v} for k, v in assignment.items()}})
