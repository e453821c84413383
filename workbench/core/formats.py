"""Number formats as a registry: how a tensor is quantised.

A :class:`NumberFormat` names a kind of number (``int``: integers of 2-8 or 16 bits, today's
default; ``fp8_e4m3`` / ``fp8_e5m2``: OCP FP8 minifloats on Brevitas's float quantisers), the
Brevitas quantisers that simulate it for weights and activations, the bits it stores, and which
exporters (:mod:`workbench.export.exporters`) can carry it. A spec picks one per layer beside the bits::

    {"layers": {"stack2.conv1": {"weight_format": "fp8_e4m3"}}}

The spec (:mod:`workbench.core.spec`), :func:`workbench.core.quantize.quantize_model`, ``describe()``, the
cost model, sensitivity sweeps, the widgets and the CLI all read :data:`FORMATS`; the allowed
integer widths live here (:data:`ALLOWED_BITS`) and nowhere else.

Adding a format::

    register_format(NumberFormat(
        name="fp8_e4m3_fnuz", kind="minifloat", bits=(8,), exponent_bits=4, mantissa_bits=3,
        weight_quant=lambda bits, granularity, scale_type: ...,   # a Brevitas weight quantiser
        act_quant=lambda bits, signed, scale_type: ...,           # a Brevitas activation quantiser
        exporters=("qcdq",), description="..."))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..infra.errors import SpecError, unknown_name

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
INT = "int"
KINDS = ("int", "minifloat")


@dataclass(frozen=True)
class NumberFormat:
    """One number format.

    ``bits``: the widths it can be stored at (``int``: 2-8 and 16; a minifloat: its one fixed
    width); ``exponent_bits`` / ``mantissa_bits``: a minifloat's layout (None for ``int``);
    ``weight_quant(bits, granularity, scale_type)`` and ``act_quant(bits, signed, scale_type)``:
    the Brevitas quantisers (injectors) for a weight or an activation; ``scale_types``: the scale
    types it supports (``float`` and/or ``po2``); ``exporters``: names of the exporters that can
    carry it (None: every exporter); ``description``: one line.
    """

    name: str
    kind: str
    bits: tuple[int, ...]
    weight_quant: Callable = field(repr=False, compare=False)
    act_quant: Callable = field(repr=False, compare=False)
    exponent_bits: int | None = None
    mantissa_bits: int | None = None
    scale_types: tuple[str, ...] = ("float", "po2")
    exporters: tuple[str, ...] | None = None
    description: str = ""

    @property
    def fixed_bits(self) -> int | None:
        """The storage bits of a fixed-width format (a minifloat); None when the width is chosen (``int``)."""
        return self.bits[0] if len(self.bits) == 1 else None

    def storage_bits(self, bits: int | None) -> int | None:
        """Bits one value takes in memory at the chosen width ``bits``."""
        return self.fixed_bits if self.fixed_bits is not None and bits is not None else bits

    def carried_by(self, exporter: str) -> bool:
        return self.exporters is None or exporter in self.exporters

    def weight_quantizer(self, bits: int, granularity: str, scale_type: str):
        return self.weight_quant(bits, granularity, scale_type)

    def act_quantizer(self, bits: int, signed: bool, scale_type: str):
        return self.act_quant(bits, signed, scale_type)


FORMATS: dict[str, NumberFormat] = {}


def register_format(fmt: NumberFormat) -> NumberFormat:
    """Add ``fmt`` to :data:`FORMATS` (re-registering an equal entry replaces it); returns it.

    Usable as a function or as a decorator of a function returning a NumberFormat."""
    if callable(fmt) and not isinstance(fmt, NumberFormat):
        fmt = fmt()
    if not isinstance(fmt, NumberFormat):
        raise SpecError(f"register_format expects a NumberFormat; got {type(fmt).__name__}")
    if not isinstance(fmt.name, str) or not fmt.name.isidentifier() or fmt.name == "float":
        raise SpecError(f"format name {fmt.name!r}; expected a short identifier such as 'fp8_e4m3' (not 'float')")
    if fmt.kind not in KINDS:
        raise SpecError(f"format {fmt.name!r}: kind {fmt.kind!r}; expected one of {', '.join(KINDS)}")
    if not fmt.bits or any(b not in ALLOWED_BITS for b in fmt.bits):
        raise SpecError(f"format {fmt.name!r}: bits {fmt.bits!r}; expected widths among {', '.join(map(str, ALLOWED_BITS))}")
    FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> tuple[str, ...]:
    return tuple(FORMATS)


def unknown_format_message(name) -> str:
    return unknown_name("number format", name, FORMATS, cutoff=0.5)


def fixed_width_formats() -> list[str]:
    """Names of the registered formats with fixed storage bits (``fp8_e4m3``, ...): the formats a
    sweep or a dropdown offers beside the integer bit-widths."""
    return [n for n, f in FORMATS.items() if f.fixed_bits is not None]


def get_format(name: str) -> NumberFormat:
    """The registered format ``name``; a one-line :class:`SpecError` naming the closest and the known ones otherwise."""
    if not isinstance(name, str) or name not in FORMATS:
        raise SpecError(unknown_format_message(name))
    return FORMATS[name]


def format_of(name: str | None) -> NumberFormat:
    return get_format(INT if name is None else name)


def minifloat_name(exponent_bits: int, mantissa_bits: int) -> str:
    """The registered minifloat with this layout, or a descriptive name (``fp8_e4m3``) if none is."""
    for fmt in FORMATS.values():
        if fmt.kind == "minifloat" and (fmt.exponent_bits, fmt.mantissa_bits) == (exponent_bits, mantissa_bits):
            return fmt.name
    return f"fp{1 + exponent_bits + mantissa_bits}_e{exponent_bits}m{mantissa_bits}"


def list_formats():
    """The registered formats as a DataFrame: name, kind, bits, exponent_bits, mantissa_bits,
    scale_types, exporters, description."""
    import pandas as pd

    cols = ["name", "kind", "bits", "exponent_bits", "mantissa_bits", "scale_types", "exporters", "description"]
    rows = [{"name": f.name, "kind": f.kind, "bits": ", ".join(map(str, f.bits)), "exponent_bits": f.exponent_bits,
             "mantissa_bits": f.mantissa_bits, "scale_types": ", ".join(f.scale_types),
             "exporters": "all" if f.exporters is None else ", ".join(f.exporters), "description": f.description} for f in FORMATS.values()]
    return pd.DataFrame(rows, columns=cols).astype({"exponent_bits": "Int64", "mantissa_bits": "Int64"})


# --------------------------------------------------------------------------- built-in entries


def _int_weight(bits: int, granularity: str, scale_type: str):
    from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat
    from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint, Int8WeightPerTensorFixedPoint

    table = {
        ("per_tensor", "float"): Int8WeightPerTensorFloat,
        ("per_channel", "float"): Int8WeightPerChannelFloat,
        ("per_tensor", "po2"): Int8WeightPerTensorFixedPoint,
        ("per_channel", "po2"): Int8WeightPerChannelFixedPoint,
    }
    return table[(granularity, scale_type)].let(bit_width=bits)


def _int_act(bits: int, signed: bool, scale_type: str):
    from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat
    from brevitas.quant.fixed_point import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    table = {
        (True, "float"): Int8ActPerTensorFloat,
        (False, "float"): Uint8ActPerTensorFloat,
        (True, "po2"): Int8ActPerTensorFixedPoint,
        (False, "po2"): Uint8ActPerTensorFixedPoint,
    }
    return table[(signed, scale_type)].let(bit_width=bits)


register_format(NumberFormat(
    name=INT, kind="int", bits=ALLOWED_BITS, weight_quant=_int_weight, act_quant=_int_act,
    description="integers with a float or power-of-two scale (2-8 or 16 bits); the default"))


def _fp8(exponent: int, mantissa: int):
    def weight(bits, granularity, scale_type):
        import brevitas.quant as q

        return getattr(q, f"Fp8e{exponent}m{mantissa}OCPWeightPer{'Channel' if granularity == 'per_channel' else 'Tensor'}Float")

    def act(bits, signed, scale_type):
        import brevitas.quant as q

        return getattr(q, f"Fp8e{exponent}m{mantissa}OCPActPerTensorFloat")

    return weight, act


for _e, _m, _what in ((4, 3, "more precision, range +-448"), (5, 2, "more range, +-57344")):
    _w, _a = _fp8(_e, _m)
    register_format(NumberFormat(
        name=f"fp8_e{_e}m{_m}", kind="minifloat", bits=(8,), weight_quant=_w, act_quant=_a, exponent_bits=_e, mantissa_bits=_m,
        scale_types=("float",), exporters=("qcdq",),
        description=f"OCP FP8 E{_e}M{_m} with a float scale ({_what}); QCDQ at opset 19, run by onnxruntime"))
