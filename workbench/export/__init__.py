"""Artifacts: the exporter registry, the QCDQ / QONNX writers, verification against the simulation, the QONNX runner and the quantise-export-verify pipeline.

Offered here (imported on first use): the exporter registry (:class:`Exporter`, :class:`Target`,
:func:`get_exporter`, :func:`list_exporters`, :func:`register_exporter`), the ONNX writers
(:func:`export_qcdq`, :func:`export_qonnx`, :func:`export_float`), verification and latency
(:func:`verify_qcdq`, :func:`verify_qonnx`, :func:`latency_ms`, ...), the QONNX runner and the
pipeline (:class:`PTQConfig`, :func:`quantize_task`, :func:`evaluate_quantized`, :func:`export_and_verify`).
"""

from ..infra.lazy import lazy_namespace

# name -> the module (in this package) that defines it
_API = {
    "Exporter": "exporters",
    "Target": "exporters",
    "get_exporter": "exporters",
    "list_exporters": "exporters",
    "register_exporter": "exporters",
    "export_float": "onnx_io",
    "export_qcdq": "qcdq",
    "export_qonnx": "qonnx",
    "host_cpu": "verify",
    "latency_ms": "verify",
    "latency_where": "verify",
    "optimized_op_counts": "verify",
    "verify_qcdq": "verify",
    "verify_qonnx": "verify",
    "lower_qonnx": "qonnx_run",
    "qonnx_session": "qonnx_run",
    "run_qonnx": "qonnx_run",
    "PTQConfig": "pipeline",
    "evaluate_quantized": "pipeline",
    "export_and_verify": "pipeline",
    "quantize_task": "pipeline",
}

__getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)
