"""The ``tflite-int8`` deployment target: an integer TFLite flatbuffer (TFLite Micro operators)
that carries the workbench's per-layer choices, run in ai-edge-litert and in TFLite Micro.

The package: :mod:`.target` (the :class:`~.target.TFLiteInt8Target` registered in the exporter
registry; importing this package imports it, and neither torch nor a toolchain), :mod:`.layers`
(what the file carries per layer, the float carrier model), :mod:`.convert` (the conversion and
quantisation: :func:`export_tflite_int8`, :func:`tflite_for_assignment`), :mod:`.flatbuffer`
(reading the file's ops and tensors, int8 weight containers) and :mod:`.runtime` (the LiteRT and
TFLite Micro runners, arena sizing, per-layer outputs). Their names are offered here too, imported
on first access (PEP 562).

How the file is built (:func:`export_tflite_int8`):

1. A *carrier* float model: the float model with every BatchNorm the simulation folded replaced
   by an Identity, and every quantised Conv/Linear given the simulation's folded weights,
   **dequantised** (``quant_weight()``: integer codes times the Brevitas scale) and its bias. The
   weights a converter sees thus lie exactly on the simulation's grid.
2. ``litert_torch`` converts the carrier to a float ``.tflite`` (in a temporary folder).
3. ``ai_edge_quantizer`` (AEQ) quantises it with one configuration per op (:func:`op_plan`):
   weights per-channel (or per-tensor) symmetric at the layer's weight bits (8 or packed 4),
   activations int8 (asymmetric) or int16 (symmetric, A16W8: the ops writing the tensor an A16
   layer reads write int16 too, so the layer reads 16-bit data); layers the spec leaves float,
   and the pooling / reshaping ops in front of them, stay float (AEQ ``NO_QUANTIZE``). AEQ's
   weight scales are max|w| / (2^(b-1)-1) per channel, the rule of Brevitas's narrow-range
   AbsMax weight quantisers: on the carrier's weights they are the simulation's scales and codes.
4. Activation ranges are **carried** from the simulation, not re-calibrated. AEQ calibrates first
   (so every tensor has a range); then each activation tensor of the float file is matched to
   the Brevitas activation quantiser whose output it is (:func:`match_tensors`: the quantiser of
   the module the tensor is named after, or the closest output of the same size, NCHW or
   channels-last, over a few calibration samples; a quantiser shared by several tensors, as at a
   residual add, once per call) and takes that quantiser's range: unsigned ``[0, 255 s]``, signed
   ``[-128 s, 127 s]``, which AEQ's asymmetric int8 rule turns back into exactly scale ``s``.
   Outputs of ops that keep their input's scale (:data:`SAME_SCALE_OPS`: max pool, pad, reshape,
   transpose) take their input's range. Any other tensor keeps AEQ's calibrated range: the
   export's report (``calibrated``) lists them. Where the converter recomputes a scale: int16
   activations are symmetric in TFLite, so a 16-bit unsigned Brevitas range ``[0, 65535 s]``
   becomes scale ``2 s`` (one bit of resolution lost). ``carry_scales=False`` uses AEQ's own
   calibration throughout; ``benchmarks/targets_agreement.py --both`` measures both ways (AEQ's
   calibration: 73-294 output codes from the simulation, mnist1d-cnn's top-1 agreement 0.87;
   carried: 1-2 codes in ai-edge-litert, agreement 1.0).
5. AEQ writes every weight buffer inside the flatbuffer (:func:`_inline_buffers`): the external
   buffers it appends for models of 256 KiB of weights or more are not read by TFLite Micro.
6. With ``weight_container="int8"`` (what the Ethos-U targets use: Vela takes int8 weight
   tensors only) AEQ quantises every weight at 8 bits, and then :func:`write_int8_containers`
   rewrites the flatbuffer's weight tensors of the 2..7-bit layers: the simulation's integer
   codes (int8), its scales, and the bias requantised at input scale x those scales. The
   default, ``"native"``, writes 4-bit layers as packed INT4 and keeps int8 containers for the
   widths TFLite has no type for (2, 3, 5, 6, 7 bits: exact, stored at 8 bits).
   Measured (``ethos-u55-128``, exact containers, small data): kws-dscnn 31,760 flash bytes at
   8 bits, 20,624 at 4, 12,528 at 2 (cycles 100k, nearly flat); ic-resnet8 84,128 -> 44,896 ->
   19,264 bytes, 215.9k -> 189.6k cycles; ai-edge-litert's top-1 agreement with the simulation
   1.0 at every width.

What to expect (``benchmarks/targets_agreement.py``, W8A8): on the models the workbench quantises
on its fx path (digits-cnn, mnist1d-cnn, kws-dscnn, ic-resnet8, vww-mobilenet) every activation
is carried and ai-edge-litert's outputs match the simulation to 1-2 output codes. TFLite Micro's
reference kernels round requantisation differently (one code at the first layer, growing through
deep networks: about 20 codes at vww-mobilenet's output), so its top-1 agreement can sit a flip or
two under litert's. Models quantised on the per-module path (the transformers CNNs, which fx
cannot trace) quantise only each layer's input: their convolution outputs and residual sums are
float in the simulation and int8 in the file (AEQ-calibrated), so the file cannot match it bit
for bit; on near-tied logits that shows as a top-1 agreement well under 99%.

The TFLite tensor names litert_torch writes hold the torch module path
(``.../Sequential_features/torch.nn.modules.conv.Conv2d_3``): :func:`layer_tensor_map` maps each
workbench layer (quantised Conv/Linear module name) to the output tensor of its op by that path.
"""

from __future__ import annotations

import importlib as _importlib

from .target import TFLiteInt8Target

# name -> the module that defines it; imported on first access, so that registering the target
# (importing this package) imports neither torch nor a toolchain
_NAMES = {
    'LAYER_OPS': 'workbench.targets.tflite.layers',
    'ACT_BITS': 'workbench.targets.tflite.layers',
    'CALIB_SAMPLES': 'workbench.targets.tflite.layers',
    'MATCH_SAMPLES': 'workbench.targets.tflite.layers',
    'MATCH_TOLERANCE': 'workbench.targets.tflite.layers',
    'NAME_TOLERANCE': 'workbench.targets.tflite.layers',
    '_one_line': 'workbench.targets.tflite.layers',
    '_quiet': 'workbench.targets.tflite.layers',
    '_module_regex': 'workbench.targets.tflite.layers',
    'quant_layers': 'workbench.targets.tflite.layers',
    '_layer_settings': 'workbench.targets.tflite.layers',
    '_nan_none': 'workbench.targets.tflite.layers',
    'support_table': 'workbench.targets.tflite.layers',
    '_dynamic_layers': 'workbench.targets.tflite.layers',
    'carrier_model': 'workbench.targets.tflite.layers',
    '_weight_quantised': 'workbench.targets.tflite.layers',
    'quiet_toolchain_logs': 'workbench.targets.tflite.layers',
    '_set_module': 'workbench.targets.tflite.layers',
    'convert_float': 'workbench.targets.tflite.convert',
    'sim_quantisers': 'workbench.targets.tflite.convert',
    'quantiser_range': 'workbench.targets.tflite.convert',
    '_layouts': 'workbench.targets.tflite.convert',
    'float_tensors': 'workbench.targets.tflite.convert',
    'tensor_module': 'workbench.targets.tflite.convert',
    'match_tensors': 'workbench.targets.tflite.convert',
    'SAME_SCALE_OPS': 'workbench.targets.tflite.convert',
    'PASS_OPS': 'workbench.targets.tflite.convert',
    'op_plan': 'workbench.targets.tflite.convert',
    '_recipe': 'workbench.targets.tflite.convert',
    'export_tflite_int8': 'workbench.targets.tflite.convert',
    'WEIGHT_CONTAINERS': 'workbench.targets.tflite.layers',
    'CONTAINER_BITS': 'workbench.targets.tflite.layers',
    'container_layers': 'workbench.targets.tflite.flatbuffer',
    'write_int8_containers': 'workbench.targets.tflite.flatbuffer',
    'tflite_for_assignment': 'workbench.targets.tflite.convert',
    '_inline_buffers': 'workbench.targets.tflite.convert',
    '_ops': 'workbench.targets.tflite.flatbuffer',
    'op_types': 'workbench.targets.tflite.flatbuffer',
    'layer_tensor_map': 'workbench.targets.tflite.flatbuffer',
    'tensor_types': 'workbench.targets.tflite.flatbuffer',
    '_TYPE_NAMES': 'workbench.targets.tflite.flatbuffer',
    'layer_types': 'workbench.targets.tflite.flatbuffer',
    '_qparams': 'workbench.targets.tflite.runtime',
    '_quantise_input': 'workbench.targets.tflite.runtime',
    '_dequantise': 'workbench.targets.tflite.runtime',
    'LiteRTRunner': 'workbench.targets.tflite.runtime',
    'MicroRunner': 'workbench.targets.tflite.runtime',
    '_stderr_to_null': 'workbench.targets.tflite.layers',
    'micro_allocations': 'workbench.targets.tflite.runtime',
    'micro_arena_bytes': 'workbench.targets.tflite.runtime',
    'peak_act_estimate_bytes': 'workbench.targets.tflite.runtime',
    'TFLiteInt8Target': 'workbench.targets.tflite.target',
    '_plain': 'workbench.targets.tflite.runtime',
    'tflite_layer_outputs': 'workbench.targets.tflite.runtime',
    '_layer_shapes': 'workbench.targets.tflite.runtime',
    '_layers_from_names': 'workbench.targets.tflite.flatbuffer',
}


def __getattr__(name: str):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})


__all__ = ["TFLiteInt8Target", "export_tflite_int8", "tflite_for_assignment", "layer_tensor_map", "micro_arena_bytes", "peak_act_estimate_bytes",
           "LiteRTRunner", "MicroRunner"]
