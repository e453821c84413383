import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _requirements_from_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return sorted(reqs)


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    mirrored = sorted(r for r in pip if not r.startswith("-e"))
    assert mirrored == _requirements_from_pyproject()


def test_torch_is_pinned_to_the_cpu_build():
    assert "torch==2.13.0" in _requirements_from_pyproject()
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_core_imports_no_jupyter_and_no_widgets():
    code = "import sys, workbench, workbench.cli; bad = [m for m in sys.modules if m.split('.')[0] in {'ipywidgets','IPython','jupyter_client','ipykernel','widgets','traitlets','nbformat'}]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_workbench_sources_never_import_widgets_or_unpickle():
    for path in (ROOT / "workbench").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(widgets|ipywidgets|IPython)\b", text, re.M), path
        if path.name == "executors.py":  # bytes this process serialised for its own worker processes, never a file
            text = text.replace("cloudpickle.loads(blob)", "")
        assert "pickle.load" not in text and "allow_pickle=True" not in text and "yaml.load(" not in text, path


def test_notebooks_are_committed_without_volatile_outputs():
    import nbformat

    for path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert "widgets" not in nb.metadata, path
        for cell in nb.cells:
            if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in cell.source:
                assert not cell.outputs, f"{path.name}: unchecked cell has outputs"


def test_public_functions_are_not_shadowed_by_their_modules():
    """describe, sensitivity, divergence, pruning_sweep and deploy are both functions of the API and module names."""
    code = ("import workbench.core.describe, workbench.tasks.evaluate, workbench.analysis.sensitivity, workbench.analysis.divergence, "
            "workbench.analysis.pruning_sweep, workbench.runs.deploy, workbench.export.pipeline; import workbench as wb; "
            "print(all(callable(f) and not isinstance(f, type(wb)) for f in (wb.describe, wb.tasks.evaluate.evaluate, wb.sensitivity, "
            "wb.divergence, wb.pruning_sweep, wb.deploy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True"


def test_the_public_api_names_what_the_readme_uses():
    import workbench as wb

    for name in ("create_task", "load_or_train_baseline", "QuantSpec", "quantize_task", "describe", "export_qcdq", "verify_qcdq",
                 "SearchConfig", "Recipe", "promote", "apply_recipe", "load_recipe", "load_target", "make_task", "sensitivity",
                 "pruning_sweep", "train_qat", "deploy", "WorkbenchError"):
        assert name in wb.__all__ and getattr(wb, name) is not None, name
    for sub, name in (("search", "search"), ("export", "list_exporters"), ("core", "cost_table"), ("tasks", "task_from_factory"),
                      ("infra", "RunDir"), ("targets", "export_tflite_int8"), ("runs", "deployment_table")):
        assert name in getattr(wb, sub).__all__ and getattr(getattr(wb, sub), name) is not None, (sub, name)
    assert callable(wb.search.search) and callable(wb.sensitivity)  # the functions, not their modules
