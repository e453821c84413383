"""Embedded-AI compression workbench: the headless core (no Jupyter imports).

Quick tour::

    import workbench as wb
    task = wb.create_task("digits-cnn")                  # model factory + data + metric
    model = wb.load_or_train_baseline(task)              # cached float baseline
    spec = wb.QuantSpec(weight_bits=8, act_bits=8, layers={"features.3": {"weight_bits": 4}})
    qmodel = wb.quantize_task(task, model, spec)         # Brevitas model, calibrated
    wb.describe(qmodel)                                  # per-layer DataFrame
    wb.export_qcdq(qmodel, task.example_input(), "model.onnx")
    wb.verify_qcdq("model.onnx", qmodel, task)           # onnxruntime vs simulation
"""

__version__ = "0.1.0"

import warnings as _warnings

# Brevitas warns at import about an optional CUDA package that a CPU workbench never needs.
_warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")

_LAZY = {
    "load_or_train_baseline": "baseline",
    "Split": "data",
    "TaskData": "data",
    "describe": "describe",
    "CalibrationError": "errors",
    "DatasetError": "errors",
    "ExportError": "errors",
    "OutputPathError": "errors",
    "SpecError": "errors",
    "TaskError": "errors",
    "UnsupportedLayerError": "errors",
    "WorkbenchError": "errors",
    "evaluate": "evaluate",
    "predict": "evaluate",
    "export_float": "export",
    "export_qcdq": "export",
    "export_qonnx": "export",
    "run_demo": "job",
    "run_job": "job",
    "load_cifar10_binary": "loaders",
    "load_image_folder": "loaders",
    "load_mnist_idx": "loaders",
    "load_npz": "loaders",
    "Metric": "metrics",
    "PTQConfig": "pipeline",
    "evaluate_quantized": "pipeline",
    "export_and_verify": "pipeline",
    "quantize_task": "pipeline",
    "bias_correction": "ptq",
    "calibrate": "ptq",
    "layer_statistics": "layer_stats",
    "weight_histogram": "layer_stats",
    "UnsupportedLayerWarning": "quantize",
    "quantisable_layers": "quantize",
    "quantize_model": "quantize",
    "SensitivityConfig": "sensitivity",
    "hessian_traces": "sensitivity",
    "sensitivity": "sensitivity",
    "ResultStore": "store",
    "LayerSettings": "spec",
    "QuantSpec": "spec",
    "Task": "tasks",
    "create_task": "tasks",
    "list_tasks": "tasks",
    "make_task": "tasks",
    "register_task": "tasks",
    "tasks_table": "tasks",
    "latency_ms": "verify",
    "optimized_op_counts": "verify",
    "verify_qcdq": "verify",
    "verify_qonnx": "verify",
}


def __getattr__(name: str):
    """Load the public API on first use, so ``import workbench`` stays fast (PEP 562)."""
    import importlib
    import importlib.util

    module = _LAZY.get(name)
    if module is None:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: wb.data, wb.search, ...
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "CalibrationError", "DatasetError", "ExportError", "OutputPathError", "SpecError", "TaskError", "UnsupportedLayerError",
    "WorkbenchError", "UnsupportedLayerWarning",
    "Task", "TaskData", "Split", "Metric", "create_task", "list_tasks", "make_task", "register_task", "tasks_table",
    "load_or_train_baseline", "evaluate", "predict",
    "QuantSpec", "LayerSettings", "PTQConfig", "quantize_model", "quantisable_layers", "quantize_task", "calibrate", "bias_correction",
    "describe", "evaluate_quantized",
    "export_qcdq", "export_qonnx", "export_float", "verify_qcdq", "verify_qonnx", "optimized_op_counts", "latency_ms", "export_and_verify",
    "load_mnist_idx", "load_cifar10_binary", "load_npz", "load_image_folder",
    "run_job", "run_demo",
    "SensitivityConfig", "sensitivity", "hessian_traces", "layer_statistics", "weight_histogram", "ResultStore",
]
