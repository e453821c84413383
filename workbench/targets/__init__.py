"""Embedded deployment targets (entries of the exporter registry): LiteRT / TFLite Micro, Arm Ethos-U via Vela, hls4ml. Target profiles (YAML) live here too.

Offered here (imported on first use): :func:`export_tflite_int8` and :func:`tflite_for_assignment`
(LiteRT), :func:`get_vela_target`, :func:`vela_layers` and :func:`vela_summary` (Ethos-U). The
targets register themselves in the exporter registry (:mod:`workbench.export.exporters`) through
the ``workbench.exporters`` entry points; deploying to them is :func:`workbench.deploy`.
"""

from ..infra.lazy import lazy_namespace

# name -> the module (in this package) that defines it
_API = {
    "export_tflite_int8": "tflite",
    "tflite_for_assignment": "tflite",
    "get_vela_target": "vela",
    "vela_layers": "vela",
    "vela_summary": "vela",
}

__getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)
