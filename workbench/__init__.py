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

The package is layered, bottom up: :mod:`workbench.infra`, :mod:`workbench.tasks`,
:mod:`workbench.core`, :mod:`workbench.export`, :mod:`workbench.targets`,
:mod:`workbench.analysis`, :mod:`workbench.search`, :mod:`workbench.runs` and :mod:`workbench.cli`
(docs/ARCHITECTURE.md). Names are imported on first use, so ``import workbench`` itself is cheap.
"""

__version__ = "0.1.0"

import importlib as _importlib
import os as _os
import warnings as _warnings

# onnxruntime (1.32's 1DS telemetry) writes a device id and a usage database under
# $HOME/.cache/Microsoft/DeveloperTools/.onnxruntime when its library loads; this variable, read
# then, keeps it from creating either. Set here, before any workbench module imports onnxruntime,
# and inherited by every process the workbench starts (a user's explicit setting is kept).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .infra import interrupts as _interrupts

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

# name -> the module that defines it; imported on first access (PEP 562)
_API = {
    'divergence': 'workbench.analysis.divergence',
    'simulation_layer_outputs': 'workbench.analysis.divergence',
    'layer_statistics': 'workbench.analysis.layer_stats',
    'weight_histogram': 'workbench.analysis.layer_stats',
    'PruningSweepConfig': 'workbench.analysis.pruning_sweep',
    'pruning_sweep': 'workbench.analysis.pruning_sweep',
    'recovery_table': 'workbench.analysis.recovery',
    'SensitivityConfig': 'workbench.analysis.sensitivity',
    'hessian_traces': 'workbench.analysis.sensitivity',
    'sensitivity': 'workbench.analysis.sensitivity',
    'CostKind': 'workbench.core.cost',
    'cost_table': 'workbench.core.cost',
    'described_costs': 'workbench.core.cost',
    'get_cost_kind': 'workbench.core.cost',
    'list_cost_kinds': 'workbench.core.cost',
    'load_target': 'workbench.core.cost',
    'register_cost_kind': 'workbench.core.cost',
    'describe': 'workbench.core.describe',
    'NumberFormat': 'workbench.core.formats',
    'get_format': 'workbench.core.formats',
    'list_formats': 'workbench.core.formats',
    'register_format': 'workbench.core.formats',
    'PruningSpec': 'workbench.core.pruning',
    'channel_groups': 'workbench.core.pruning',
    'prune': 'workbench.core.pruning',
    'sparsity_table': 'workbench.core.pruning',
    'bias_correction': 'workbench.core.ptq',
    'calibrate': 'workbench.core.ptq',
    'learned_rounding': 'workbench.core.ptq',
    'QATConfig': 'workbench.core.qat',
    'train_qat': 'workbench.core.qat',
    'UnsupportedLayerWarning': 'workbench.core.quantize',
    'quantisable_layers': 'workbench.core.quantize',
    'quantize_model': 'workbench.core.quantize',
    'LayerSettings': 'workbench.core.spec',
    'QuantSpec': 'workbench.core.spec',
    'Exporter': 'workbench.export.exporters',
    'Target': 'workbench.export.exporters',
    'get_exporter': 'workbench.export.exporters',
    'list_exporters': 'workbench.export.exporters',
    'register_exporter': 'workbench.export.exporters',
    'export_float': 'workbench.export.onnx_export',
    'export_qcdq': 'workbench.export.onnx_export',
    'export_qonnx': 'workbench.export.onnx_export',
    'PTQConfig': 'workbench.export.pipeline',
    'evaluate_quantized': 'workbench.export.pipeline',
    'export_and_verify': 'workbench.export.pipeline',
    'quantize_task': 'workbench.export.pipeline',
    'lower_qonnx': 'workbench.export.qonnx_run',
    'qonnx_session': 'workbench.export.qonnx_run',
    'run_qonnx': 'workbench.export.qonnx_run',
    'host_cpu': 'workbench.export.verify',
    'latency_ms': 'workbench.export.verify',
    'latency_where': 'workbench.export.verify',
    'optimized_op_counts': 'workbench.export.verify',
    'verify_qcdq': 'workbench.export.verify',
    'verify_qonnx': 'workbench.export.verify',
    '_interrupts': 'workbench.infra',
    'CalibrationError': 'workbench.infra.errors',
    'CheckpointError': 'workbench.infra.errors',
    'DatasetError': 'workbench.infra.errors',
    'ExportError': 'workbench.infra.errors',
    'OutputPathError': 'workbench.infra.errors',
    'PruningError': 'workbench.infra.errors',
    'SpecError': 'workbench.infra.errors',
    'StoreError': 'workbench.infra.errors',
    'TaskError': 'workbench.infra.errors',
    'ToolchainError': 'workbench.infra.errors',
    'UnsupportedLayerError': 'workbench.infra.errors',
    'UserCodeError': 'workbench.infra.errors',
    'WorkbenchError': 'workbench.infra.errors',
    'ExecutorError': 'workbench.infra.executors',
    'make_executor': 'workbench.infra.executors',
    'RunDir': 'workbench.infra.outdir',
    'ResultStore': 'workbench.infra.store',
    'Tracker': 'workbench.infra.tracking',
    'TrackingError': 'workbench.infra.tracking',
    'TrackingWarning': 'workbench.infra.tracking',
    'deploy': 'workbench.runs.deploy',
    'deployment_table': 'workbench.runs.deploy',
    'list_target_names': 'workbench.runs.deploy',
    'apply_recipe': 'workbench.runs.job',
    'run_demo': 'workbench.runs.job',
    'run_job': 'workbench.runs.job',
    'CodeNotAllowedError': 'workbench.runs.recipe',
    'Recipe': 'workbench.runs.recipe',
    'RecipeError': 'workbench.runs.recipe',
    'TargetTolerance': 'workbench.runs.recipe',
    'load_recipe': 'workbench.runs.recipe',
    'promote': 'workbench.runs.recipe',
    'CostSource': 'workbench.search.cost_tables',
    'TargetCostTable': 'workbench.search.cost_tables',
    'build_cost_table': 'workbench.search.cost_tables',
    'get_cost_source': 'workbench.search.cost_tables',
    'list_cost_sources': 'workbench.search.cost_tables',
    'measure_point': 'workbench.search.cost_tables',
    'register_cost_source': 'workbench.search.cost_tables',
    'SearchConfig': 'workbench.search.precision',
    'front_on': 'workbench.search.precision',
    'search': 'workbench.search.precision',
    'search_accuracy_target': 'workbench.search.precision',
    'WidthSearchConfig': 'workbench.search.width_search',
    'width_search': 'workbench.search.width_search',
    'export_tflite_int8': 'workbench.targets.tflite',
    'tflite_for_assignment': 'workbench.targets.tflite',
    'get_vela_target': 'workbench.targets.vela',
    'vela_layers': 'workbench.targets.vela',
    'vela_summary': 'workbench.targets.vela',
    'load_or_train_baseline': 'workbench.tasks.baseline',
    'Split': 'workbench.tasks.data',
    'TaskData': 'workbench.tasks.data',
    'evaluate': 'workbench.tasks.evaluate',
    'predict': 'workbench.tasks.evaluate',
    'load_cifar10_binary': 'workbench.tasks.loaders',
    'load_image_folder': 'workbench.tasks.loaders',
    'load_mnist_idx': 'workbench.tasks.loaders',
    'load_npz': 'workbench.tasks.loaders',
    'Metric': 'workbench.tasks.metrics',
    'Task': 'workbench.tasks.registry',
    'create_task': 'workbench.tasks.registry',
    'list_tasks': 'workbench.tasks.registry',
    'make_task': 'workbench.tasks.registry',
    'register_task': 'workbench.tasks.registry',
    'task_from_factory': 'workbench.tasks.registry',
    'tasks_table': 'workbench.tasks.registry',
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
