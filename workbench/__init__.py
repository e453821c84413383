"""Embedded-AI compression workbench: the headless core (no Jupyter imports).

Quick tour (``workbench.__all__`` is this tour, the error base class and the subpackages)::

    import workbench as wb
    task = wb.create_task("digits-cnn")                  # model factory + data + metric
    model = wb.load_or_train_baseline(task)              # cached float baseline
    spec = wb.QuantSpec(weight_bits=8, act_bits=8, layers={"features.3": {"weight_bits": 4}})
    qmodel = wb.quantize_task(task, model, spec)         # Brevitas model, calibrated
    wb.describe(qmodel)                                  # per-layer DataFrame
    wb.export_qcdq(qmodel, task.example_input(), "model.onnx")
    wb.verify_qcdq("model.onnx", qmodel, task)           # onnxruntime vs simulation
    wb.export.list_exporters()                           # the rest: under its subpackage

The package is layered, bottom up: :mod:`workbench.infra`, :mod:`workbench.tasks`,
:mod:`workbench.core`, :mod:`workbench.export`, :mod:`workbench.targets`,
:mod:`workbench.analysis`, :mod:`workbench.search`, :mod:`workbench.runs` and :mod:`workbench.cli`
(docs/ARCHITECTURE.md); each names what it offers (``wb.export.list_exporters``,
``wb.infra.ResultStore``, ...). Names are imported on first use, so ``import workbench`` itself is
cheap (no torch). The names this package offered before the subpackages existed still resolve, for
one release, with a DeprecationWarning naming their new place.
"""

__version__ = "0.1.0"

import os as _os
import warnings as _warnings

# onnxruntime (1.32's 1DS telemetry) writes a device id and a usage database under
# $HOME/.cache/Microsoft/DeveloperTools/.onnxruntime when its library loads; this variable, read
# then, keeps it from creating either. Set here, before any workbench module imports onnxruntime,
# and inherited by every process the workbench starts (a user's explicit setting is kept).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .infra import interrupts as _interrupts
from .infra.lazy import lazy_namespace as _lazy_namespace

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

# the tour: name -> the subpackage that offers it (or, where a function shares its module's name,
# that module), relative to this package
_API = {
    "create_task": "tasks",
    "list_tasks": "tasks",
    "make_task": "tasks",
    "register_task": "tasks",
    "Task": "tasks",
    "load_or_train_baseline": "tasks",
    "QuantSpec": "core",
    "PTQConfig": "export",
    "quantize_model": "core",
    "quantize_task": "export",
    "describe": "core.describe",
    "PruningSpec": "core",
    "prune": "core",
    "QATConfig": "core",
    "train_qat": "core",
    "export_and_verify": "export",
    "export_qcdq": "export",
    "verify_qcdq": "export",
    "sensitivity": "analysis.sensitivity",
    "SensitivityConfig": "analysis",
    "divergence": "analysis.divergence",
    "pruning_sweep": "analysis.pruning_sweep",
    "SearchConfig": "search",
    "load_target": "core",
    "Recipe": "runs",
    "load_recipe": "runs",
    "promote": "runs",
    "apply_recipe": "runs",
    "run_job": "runs",
    "deploy": "runs.deploy",
    "WorkbenchError": "infra",
}

# the subpackages, bottom up (attributes of this package, imported on first use)
_SUBPACKAGES = ("infra", "tasks", "core", "export", "targets", "analysis", "search", "runs")

# deprecated for one release: old top-level name -> where it lives now (``workbench.<place>.<name>``)
_MOVED = {
    "CalibrationError": "infra",
    "CheckpointError": "infra",
    "DatasetError": "infra",
    "ExportError": "infra",
    "OutputPathError": "infra",
    "PruningError": "infra",
    "SpecError": "infra",
    "StoreError": "infra",
    "TaskError": "infra",
    "ToolchainError": "infra",
    "UnsupportedLayerError": "infra",
    "UserCodeError": "infra",
    "ExecutorError": "infra",
    "make_executor": "infra",
    "RunDir": "infra",
    "ResultStore": "infra",
    "Tracker": "infra",
    "TrackingError": "infra",
    "TrackingWarning": "infra",
    "Split": "tasks",
    "TaskData": "tasks",
    "Metric": "tasks",
    "predict": "tasks",
    "evaluate": "tasks.evaluate",
    "load_cifar10_binary": "tasks",
    "load_image_folder": "tasks",
    "load_mnist_idx": "tasks",
    "load_npz": "tasks",
    "task_from_factory": "tasks",
    "tasks_table": "tasks",
    "LayerSettings": "core",
    "NumberFormat": "core",
    "get_format": "core",
    "list_formats": "core",
    "register_format": "core",
    "UnsupportedLayerWarning": "core",
    "quantisable_layers": "core",
    "bias_correction": "core",
    "calibrate": "core",
    "learned_rounding": "core",
    "channel_groups": "core",
    "sparsity_table": "core",
    "CostKind": "core",
    "cost_table": "core",
    "described_costs": "core",
    "get_cost_kind": "core",
    "list_cost_kinds": "core",
    "register_cost_kind": "core",
    "Exporter": "export",
    "Target": "export",
    "get_exporter": "export",
    "list_exporters": "export",
    "register_exporter": "export",
    "export_float": "export",
    "export_qonnx": "export",
    "evaluate_quantized": "export",
    "host_cpu": "export",
    "latency_ms": "export",
    "latency_where": "export",
    "optimized_op_counts": "export",
    "verify_qonnx": "export",
    "lower_qonnx": "export",
    "qonnx_session": "export",
    "run_qonnx": "export",
    "export_tflite_int8": "targets",
    "tflite_for_assignment": "targets",
    "get_vela_target": "targets",
    "vela_layers": "targets",
    "vela_summary": "targets",
    "simulation_layer_outputs": "analysis",
    "layer_statistics": "analysis",
    "weight_histogram": "analysis",
    "hessian_traces": "analysis",
    "PruningSweepConfig": "analysis",
    "recovery_table": "analysis",
    "search_accuracy_target": "search",
    "front_on": "search",
    "CostSource": "search",
    "TargetCostTable": "search",
    "build_cost_table": "search",
    "get_cost_source": "search",
    "list_cost_sources": "search",
    "measure_point": "search",
    "register_cost_source": "search",
    "WidthSearchConfig": "search",
    "width_search": "search.width_search",
    "CodeNotAllowedError": "runs",
    "RecipeError": "runs",
    "TargetTolerance": "runs",
    "run_demo": "runs",
    "deployment_table": "runs",
    "list_target_names": "runs",
}

__getattr__, __dir__, __all__ = _lazy_namespace(__name__, _API, moved=_MOVED, also=("__version__", *_SUBPACKAGES))
