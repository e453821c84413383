"""The public API: ``import workbench as wb`` offers the tour, each subpackage names what it offers,
and the names the top level offered before the subpackages existed still work for one release,
with a DeprecationWarning naming their new place."""

import importlib
import pkgutil
import re
import subprocess
import sys
import warnings

import pytest

import workbench as wb

TOUR = ("create_task", "list_tasks", "make_task", "register_task", "Task", "load_or_train_baseline", "QuantSpec", "PTQConfig",
        "quantize_model", "quantize_task", "describe", "PruningSpec", "prune", "QATConfig", "train_qat", "export_and_verify",
        "export_qcdq", "verify_qcdq", "sensitivity", "SensitivityConfig", "divergence", "pruning_sweep", "SearchConfig",
        "load_target", "Recipe", "load_recipe", "promote", "apply_recipe", "run_job", "deploy", "WorkbenchError")
SUBPACKAGES = ("infra", "tasks", "core", "export", "targets", "analysis", "search", "runs")

# every other name the top level offered before the subpackages: name -> its new place under workbench
MOVED = {
    "CalibrationError": "infra", "CheckpointError": "infra", "DatasetError": "infra", "ExportError": "infra",
    "OutputPathError": "infra", "PruningError": "infra", "SpecError": "infra", "StoreError": "infra", "TaskError": "infra",
    "ToolchainError": "infra", "UnsupportedLayerError": "infra", "UserCodeError": "infra", "ExecutorError": "infra",
    "make_executor": "infra", "RunDir": "infra", "ResultStore": "infra", "Tracker": "infra", "TrackingError": "infra",
    "TrackingWarning": "infra",
    "Split": "tasks", "TaskData": "tasks", "Metric": "tasks", "predict": "tasks", "evaluate": "tasks.evaluate",
    "load_cifar10_binary": "tasks", "load_image_folder": "tasks", "load_mnist_idx": "tasks", "load_npz": "tasks",
    "task_from_factory": "tasks", "tasks_table": "tasks",
    "LayerSettings": "core", "NumberFormat": "core", "get_format": "core", "list_formats": "core", "register_format": "core",
    "UnsupportedLayerWarning": "core", "quantisable_layers": "core", "bias_correction": "core", "calibrate": "core",
    "learned_rounding": "core", "channel_groups": "core", "sparsity_table": "core", "CostKind": "core", "cost_table": "core",
    "described_costs": "core", "get_cost_kind": "core", "list_cost_kinds": "core", "register_cost_kind": "core",
    "Exporter": "export", "Target": "export", "get_exporter": "export", "list_exporters": "export",
    "register_exporter": "export", "export_float": "export", "export_qonnx": "export", "evaluate_quantized": "export",
    "host_cpu": "export", "latency_ms": "export", "latency_where": "export", "optimized_op_counts": "export",
    "verify_qonnx": "export", "lower_qonnx": "export", "qonnx_session": "export", "run_qonnx": "export",
    "export_tflite_int8": "targets", "tflite_for_assignment": "targets", "get_vela_target": "targets",
    "vela_layers": "targets", "vela_summary": "targets",
    "simulation_layer_outputs": "analysis", "layer_statistics": "analysis", "weight_histogram": "analysis",
    "hessian_traces": "analysis", "PruningSweepConfig": "analysis", "recovery_table": "analysis",
    "search_accuracy_target": "search", "front_on": "search", "CostSource": "search", "TargetCostTable": "search",
    "build_cost_table": "search", "get_cost_source": "search", "list_cost_sources": "search", "measure_point": "search",
    "register_cost_source": "search", "WidthSearchConfig": "search", "width_search": "search.width_search",
    "CodeNotAllowedError": "runs", "RecipeError": "runs", "TargetTolerance": "runs", "run_demo": "runs",
    "deployment_table": "runs", "list_target_names": "runs",
}


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600).stdout.strip()


def test_the_top_level_offers_exactly_the_tour():
    assert sorted(wb.__all__) == sorted([*TOUR, "__version__", *SUBPACKAGES])
    assert len(set(wb.__all__)) == len(wb.__all__)
    assert {n for n in dir(wb) if not n.startswith("_")} | {"__version__"} == set(wb.__all__)
    assert not set(MOVED) & set(dir(wb))


@pytest.mark.parametrize("name", TOUR)
def test_tour_names_resolve_without_a_warning(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = getattr(wb, name)
    assert not isinstance(value, type(wb)), name  # the function or class, never a module of the same name
    assert callable(value), name


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackages_are_attributes(name):
    sub = getattr(wb, name)
    assert sub is importlib.import_module(f"workbench.{name}") and sub.__doc__


@pytest.mark.parametrize("name", sorted(MOVED))
def test_deprecated_names_warn_and_give_the_object_of_their_new_place(name):
    home = MOVED[name]
    new = getattr(importlib.import_module(f"workbench.{home}"), name)
    message = re.escape(f"workbench.{name} is deprecated; use workbench.{home}.{name}")
    with pytest.warns(DeprecationWarning, match=message):
        old = getattr(wb, name)
    assert old is new
    with pytest.warns(DeprecationWarning, match=message):
        assert getattr(wb, name) is new  # every access warns, not only the first


def test_from_import_of_a_deprecated_name_warns_once_at_the_import():
    code = ("import warnings\nwarnings.simplefilter('always')\nwith warnings.catch_warnings(record=True) as seen:\n"
            "    from workbench import list_exporters\n"
            "print([(str(w.message), w.filename) for w in seen if 'deprecated' in str(w.message)])")
    assert _run(code) == "[('workbench.list_exporters is deprecated; use workbench.export.list_exporters', '<string>')]"


def test_calling_the_search_package_still_runs_the_search_with_a_warning():
    assert wb.search is importlib.import_module("workbench.search") and callable(wb.search)
    with pytest.warns(DeprecationWarning, match=re.escape("call wb.search.search(...)")), pytest.raises(TypeError):
        wb.search()  # the search itself: missing its arguments


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_names_what_it_offers(name):
    sub = importlib.import_module(f"workbench.{name}")
    assert {n for n in dir(sub) if not n.startswith("_")} == set(sub.__all__) and sub.__all__
    submodules = {m.name for m in pkgutil.iter_modules(sub.__path__)}
    assert not set(sub._API) & submodules  # a submodule of that name would shadow the name once imported
    assert set(sub._API.values()) <= submodules
    for attr in sub.__all__:
        value = getattr(sub, attr)
        assert not isinstance(value, type(wb)) and getattr(value, "__module__", "").startswith("workbench."), (name, attr)


def test_submodules_are_attributes_of_their_package_whatever_was_imported_first():
    assert wb.analysis.divergence is importlib.import_module("workbench.analysis.divergence")
    assert wb.tasks.evaluate.evaluate is wb.tasks.evaluate.__dict__["evaluate"]
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        wb.core.no_such_name  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'job'"):
        wb.job  # noqa: B018  (a module of the flat layout: only from the package's own folder, never another install's)


def test_import_workbench_and_its_subpackages_import_no_torch():
    code = ("import sys, workbench as wb\nnames = dir(wb) + wb.__all__\n"
            f"for p in {SUBPACKAGES!r}:\n    sub = getattr(wb, p)\n    names += dir(sub) + sub.__all__\n"
            "print(sorted(m for m in ('torch', 'brevitas', 'onnx', 'onnxruntime', 'pandas') if m in sys.modules))")
    assert _run(code) == "[]"


def test_widgets_and_a_representative_path_use_no_deprecated_name():
    code = """
import warnings
warnings.filterwarnings("error", message=".*is deprecated; use workbench", category=DeprecationWarning)
import workbench as wb
import widgets

task = wb.create_task("digits-cnn")
model = wb.load_or_train_baseline(task, progress=False)
qmodel = wb.quantize_task(task, model, wb.QuantSpec(weight_bits=8, act_bits=8, layers={"features.3": {"weight_bits": 4}}))
table = wb.describe(qmodel)
bits = widgets.BitWidthTable(task, model)
bits.set_bits("features.3", weight=4)
bits.evaluate()
print(len(table) > 0 and bits.status)
"""
    assert _run(code).splitlines()[-1] == "evaluated"
