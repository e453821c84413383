"""The base of the workbench's option models (:class:`~workbench.export.pipeline.PTQConfig`,
:class:`~workbench.core.qat.QATConfig`, :class:`~workbench.analysis.sensitivity.SensitivityConfig`,
:class:`~workbench.analysis.pruning_sweep.PruningSweepConfig`, :class:`~workbench.search.config.SearchConfig`).

Each is declared once, as a frozen pydantic model holding parameters only; a recipe embeds
``PTQConfig`` and ``QATConfig`` as they are. Constructing one directly raises a one-line
:class:`~workbench.infra.errors.SpecError` naming the field (``ptq.weight_rounding: expected one of
...; got 'x'``, ``weight_bits[1]: ...``); an unknown field names the closest known ones. Nested in
a recipe, the same checks give the same message under the recipe's field path.

Small annotated types (:func:`integer`, :func:`number`, :data:`Flag`, :func:`choice`) keep the
checks of the former dataclasses: no booleans where integers are expected, no strings where numbers
are, NaN and infinity refused, numpy scalars accepted as plain numbers.
"""

from __future__ import annotations

import difflib
import math
import numbers
import types
import typing
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError

from ..infra.errors import SpecError
from .spec import SpecModel, cut_text, format_validation_error, is_union_tag



def _parts(loc) -> list:
    return [p for p in loc if not is_union_tag(p)]


def _dotted(parts, prefix: str) -> str:
    return prefix + ".".join(str(p) for p in parts)


def _bracketed(parts, prefix: str) -> str:
    text = prefix.rstrip(".")
    for p in parts:
        text = f"{text}[{p}]" if isinstance(p, int) and text else (f"{text}.{p}" if text else str(p))
    return text


def _is_model(t) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _core(t):
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X (the model, where a union holds one)."""
    while True:
        origin = typing.get_origin(t)
        if origin is Annotated:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            t = next((a for a in args if _is_model(a)), args[0])
        else:
            return t


def _model_at(model: type[BaseModel], parts: list) -> type[BaseModel] | None:
    """The model class the field path ``parts`` leads to (None where it leads elsewhere)."""
    current: Any = model
    for part in parts:
        current = _core(current)
        origin, args = typing.get_origin(current), typing.get_args(current)
        if _is_model(current):
            if str(part) not in current.model_fields:
                return None
            current = current.model_fields[str(part)].annotation
        elif origin is dict and len(args) == 2:
            current = args[1]
        elif origin in (list, set, frozenset) and args:
            current = args[0]
        elif origin is tuple and args:
            current = args[0] if args[-1] is Ellipsis else (args[part] if isinstance(part, int) and part < len(args) else None)
        else:
            return None
    current = _core(current)
    return current if _is_model(current) else None


def format_error(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    """:func:`workbench.core.spec.format_validation_error`, with indices written ``field[1]`` and, for
    an unknown field of ``model`` (or of a model nested in it), the closest known field names."""
    text = format_validation_error(exc, prefix)
    err = exc.errors(include_url=False, include_context=False)[0]
    parts = _parts(err["loc"])
    dotted, bracketed = _dotted(parts, prefix), _bracketed(parts, prefix)
    if parts and dotted != bracketed and text.startswith(dotted + ":"):
        text = bracketed + text[len(dotted):]
        dotted = bracketed
    if err["type"] == "extra_forbidden" and model is not None and parts:
        owner = _model_at(model, parts[:-1])
        if owner is not None:
            names = list(owner.model_fields)
            close = difflib.get_close_matches(str(parts[-1]), names, n=3, cutoff=0.6)
            hint = f"closest: {', '.join(close)}" if close else f"expected one of {', '.join(names)}"
            more = len(exc.errors()) - 1
            text = f"{dotted}: unknown field; {hint}" + (f" (and {more} more errors)" if more > 0 else "")
    return cut_text(text, 600)


class OptionModel(SpecModel):
    """A frozen set of options (parameters only). ``section`` is the name a recipe gives it; a
    direct construction's errors then read as the recipe's do (``qat.epochs: ...``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    section: ClassVar[str] = ""

    def __init__(self, /, **data: Any):
        try:
            BaseModel.__init__(self, **data)
        except ValidationError as exc:
            raise SpecError(format_error(exc, type(self), f"{self.section}." if self.section else "")) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def to_dict(self) -> dict:
        """Field name -> value (nested models as their own ``to_dict``), in declaration order:
        what sweep fingerprints, checkpoints and run summaries record."""
        return {name: (v.to_dict() if hasattr(v, "to_dict") else v) for name, v in ((n, getattr(self, n)) for n in type(self).model_fields)}


# ------------------------------------------------------------------------- checked field types


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    try:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def integer(lo: int, hi: int | None = None, expected: str | None = None) -> Any:
    """An int in ``[lo, hi]`` (numpy integers become ints; booleans, floats and strings are refused)."""
    expected = expected or (f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}")

    def check(v):
        if not (_is_int(v) and lo <= v and (hi is None or v <= hi)):
            raise ValueError(f"expected {expected}")
        return int(v)

    return Annotated[int, Field(ge=lo, le=hi), BeforeValidator(check)]


def number(expected: str, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None) -> Any:
    """A finite float within the bounds given (ints and numpy scalars become floats)."""

    def check(v):
        ok = _is_real(v) and (gt is None or v > gt) and (ge is None or v >= ge) and (lt is None or v < lt) and (le is None or v <= le)
        if not ok:
            raise ValueError(f"expected {expected}")
        return float(v)

    return Annotated[float, Field(gt=gt, ge=ge, lt=lt, le=le), BeforeValidator(check)]


def _flag(v):
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


Flag = Annotated[bool, BeforeValidator(_flag)]


def choice(options: tuple[str, ...]) -> Any:
    """One of ``options`` (a Literal in the JSON schema), refused as ``expected one of a, b, c``."""

    def check(v):
        if not isinstance(v, str) or v not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return v

    return Annotated[typing.Literal[options], BeforeValidator(check)]  # type: ignore[valid-type]


def distinct(values, what: str):
    """``values`` when none repeats, else ``ValueError('expected distinct WHAT; got ... (V twice)')``:
    every list option refuses a repeated value (``--weight-bits 4,4,4`` would repeat every row)."""
    seen, twice = set(), []
    for v in values:
        key = (type(v) is str, v)  # 8 and '8' differ; 0.5 and 0.50 are one value
        try:
            if key in seen and v not in twice:
                twice.append(v)
            seen.add(key)
        except TypeError:  # unhashable: the field's own check refuses it
            return values
    if twice:
        counts = ", ".join(f"{v!r} given {sum(1 for x in values if (type(x) is str, x) == (type(v) is str, v))} times" for v in twice[:3])
        raise ValueError(f"expected distinct {what}, each given once; got {cut_text(repr(list(values)), 120)} ({counts})")
    return values


def names(expected: str = "a list of layer names or globs") -> Any:
    """A tuple of distinct strings, given as a list or tuple (a single string is refused)."""

    def check(v):
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or not all(isinstance(n, str) for n in v):
            raise ValueError(f"expected {expected}")
        return tuple(distinct(v, "names"))

    return Annotated[tuple[str, ...], BeforeValidator(check)]


def raw(schema_type: Any) -> Any:
    """Kept exactly as given (checked by a model validator elsewhere); ``schema_type`` documents it
    in the JSON schema. For fields whose value enters a sweep fingerprint unconverted."""
    return Annotated[schema_type, PlainValidator(lambda v: v, json_schema_input_type=schema_type)]


__all__ = ["OptionModel", "format_error", "integer", "number", "Flag", "choice", "names", "raw", "distinct"]
