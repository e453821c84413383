"""The Brevitas quantisers of a number format (:mod:`workbench.core.formats`): weights, static and dynamic activations."""

from __future__ import annotations

from .formats import INT, get_format


def weight_quantizer(bits: int, granularity: str, scale_type: str, fmt: str = INT):
    """The Brevitas weight quantiser of number format ``fmt`` (:mod:`workbench.core.formats`)."""
    return get_format(fmt).weight_quantizer(bits, granularity, scale_type)


def act_quantizer(bits: int, signed: bool, scale_type: str, fmt: str = INT, dynamic: bool = False):
    """The Brevitas activation quantiser of number format ``fmt`` (:mod:`workbench.core.formats`);
    ``dynamic``: :func:`dynamic_act_quantizer` (8-bit int only, checked by the spec)."""
    return dynamic_act_quantizer() if dynamic else get_format(fmt).act_quantizer(bits, signed, scale_type)


def dynamic_act_quantizer():
    """Per-tensor uint8 activations whose scale and zero point come from each input's min and max
    at run time (nothing to calibrate): what onnxruntime's DynamicQuantizeLinear computes, and
    Brevitas exports a quantiser of this kind as DynamicQuantizeLinear. Per-token (per-row)
    dynamic scales have no integer kernel in ONNX / onnxruntime, so the workbench does not offer
    them."""
    from brevitas_examples.common.generative.quantizers import ShiftedUint8DynamicActPerTensorFloat

    return ShiftedUint8DynamicActPerTensorFloat.let(int_quant=_round_then_shift_int_quant())


def _round_then_shift_int_quant():
    """Brevitas's IntQuant rounding as onnxruntime's QuantizeLinear / DynamicQuantizeLinear round:
    ``round(x / scale) + zero_point``. Brevitas computes ``round(x / scale + zero_point)``, which in
    float32 differs where ``x / scale`` lies within a rounding error of a half-integer (the sum is
    rounded to float32 before it is rounded to an integer): about 2 codes in 100,000 with zero
    points near 128, enough to start the runtime's codes drifting from the simulation's through
    the layers. Identical results for a zero point of 0 (every static quantiser here)."""
    from brevitas.core.quant.int_base import IntQuant

    class RoundThenShiftIntQuant(IntQuant):
        def to_int(self, scale, zero_point, bit_width, x):
            x = self.input_view_impl(x)
            y = self.float_to_int_impl(x / scale) + zero_point
            return self.tensor_clamp_impl(y, min_val=self.min_int(bit_width), max_val=self.max_int(bit_width))

    return RoundThenShiftIntQuant
