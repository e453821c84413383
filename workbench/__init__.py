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

import os as _os
import warnings as _warnings

# onnxruntime (1.32's 1DS telemetry) writes a device id and a usage database under
# $HOME/.cache/Microsoft/DeveloperTools/.onnxruntime when its library loads; this variable, read
# then, keeps it from creating either. Set here, before any workbench module imports onnxruntime,
# and inherited by every process the workbench starts (a user's explicit setting is kept).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from . import interrupts as _interrupts

if _interrupts.is_workbench_command():  # Ctrl-C during the command's imports: exit 130, one line
    _interrupts.exit_while_loading()

# Brevitas warns at import about an optional CUDA package that a CPU workbench never needs.
_warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")


def _quiet_optional_imports() -> None:
    """transformers imports torchao when it is installed (the [targets] extra brings it), and
    torchao then logs that its CUDA kernels are missing and registers enums torch warns about:
    noise on a CPU workbench. Those two loggers are raised to ERROR unless the user set a level."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)


_quiet_optional_imports()

from .baseline import load_or_train_baseline
from .data import Split, TaskData
from .describe import describe
from .divergence import divergence, simulation_layer_outputs
from .errors import (
    CalibrationError,
    CheckpointError,
    DatasetError,
    ExportError,
    OutputPathError,
    ToolchainError,
    PruningError,
    SpecError,
    StoreError,
    TaskError,
    UnsupportedLayerError,
    UserCodeError,
    WorkbenchError,
)
from .evaluate import evaluate, predict
from .export import export_float, export_qcdq, export_qonnx
from .exporters import Exporter, Target, get_exporter, list_exporters, register_exporter
from .formats import NumberFormat, get_format, list_formats, register_format
from .job import apply_recipe, run_demo, run_job
from .loaders import load_cifar10_binary, load_image_folder, load_mnist_idx, load_npz
from .metrics import Metric
from .pipeline import PTQConfig, evaluate_quantized, export_and_verify, quantize_task
from .ptq import bias_correction, calibrate, learned_rounding
from .layer_stats import layer_statistics, weight_histogram
from .quantize import UnsupportedLayerWarning, quantisable_layers, quantize_model
from .pruning import PruningSpec, channel_groups, prune, sparsity_table
from .pruning_sweep import PruningSweepConfig, pruning_sweep
from .qat import QATConfig, train_qat
from .recovery import recovery_table
from .sensitivity import SensitivityConfig, hessian_traces, sensitivity
from .store import ResultStore
from .executors import ExecutorError, make_executor
from .tracking import Tracker, TrackingError, TrackingWarning
from .spec import LayerSettings, QuantSpec
from .outdir import RunDir
from .recipe import CodeNotAllowedError, Recipe, RecipeError, TargetTolerance, load_recipe, promote
from .deploy import deploy, deployment_table, list_target_names
from .cost import CostKind, cost_table, described_costs, get_cost_kind, list_cost_kinds, load_target, register_cost_kind
from .cost_tables import CostSource, TargetCostTable, build_cost_table, get_cost_source, list_cost_sources, measure_point, register_cost_source
from .search import SearchConfig, front_on, search, search_accuracy_target
from .width_search import WidthSearchConfig, width_search
from .tasks import Task, create_task, list_tasks, make_task, register_task, task_from_factory, tasks_table
from .qonnx_run import lower_qonnx, qonnx_session, run_qonnx
from .verify import host_cpu, latency_ms, latency_where, optimized_op_counts, verify_qcdq, verify_qonnx
from .tflite import export_tflite_int8, tflite_for_assignment
from .vela import get_vela_target, vela_layers, vela_summary  # registers one Ethos-U target per Vela accelerator config

__all__ = [
    "__version__",
    "CalibrationError", "CheckpointError", "CodeNotAllowedError", "DatasetError", "ExportError", "OutputPathError", "ToolchainError", "PruningError", "RecipeError", "SpecError",
    "StoreError", "TaskError", "UnsupportedLayerError", "UserCodeError",
    "WorkbenchError", "UnsupportedLayerWarning",
    "Task", "TaskData", "Split", "Metric", "create_task", "list_tasks", "make_task", "register_task", "task_from_factory", "tasks_table",
    "load_or_train_baseline", "evaluate", "predict",
    "QuantSpec", "LayerSettings", "PTQConfig", "quantize_model", "quantisable_layers", "quantize_task", "calibrate", "bias_correction", "learned_rounding",
    "describe", "evaluate_quantized", "divergence", "simulation_layer_outputs",
    "export_qcdq", "export_qonnx", "export_float", "verify_qcdq", "verify_qonnx", "run_qonnx", "qonnx_session", "lower_qonnx", "optimized_op_counts", "latency_ms", "latency_where", "host_cpu", "export_and_verify",
    "Exporter", "register_exporter", "get_exporter", "list_exporters", "NumberFormat", "register_format", "get_format", "list_formats",
    "load_mnist_idx", "load_cifar10_binary", "load_npz", "load_image_folder",
    "run_job", "run_demo", "RunDir", "apply_recipe", "Recipe", "load_recipe", "promote", "cost_table", "described_costs", "load_target", "SearchConfig", "search", "search_accuracy_target", "front_on",
    "CostKind", "register_cost_kind", "get_cost_kind", "list_cost_kinds",
    "CostSource", "TargetCostTable", "build_cost_table", "get_cost_source", "list_cost_sources", "measure_point", "register_cost_source",
    "SensitivityConfig", "sensitivity", "hessian_traces", "layer_statistics", "weight_histogram", "ResultStore",
    "PruningSpec", "prune", "channel_groups", "sparsity_table", "PruningSweepConfig", "pruning_sweep", "WidthSearchConfig", "width_search",
    "QATConfig", "train_qat", "recovery_table",
    "ExecutorError", "make_executor", "Tracker", "TrackingError", "TrackingWarning",
    "Target", "TargetTolerance", "deploy", "deployment_table", "list_target_names",
    "get_vela_target", "vela_layers", "vela_summary", "export_tflite_int8", "tflite_for_assignment",
]
