"""Registries filled through entry points (workbench.infra.plugins): the same entries, in the same
order, whichever module a process happens to import first."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LIST = ("from workbench.export.exporters import EXPORTERS; from workbench.tasks.registry import _REGISTRY; "
        "print(list(EXPORTERS)); print(list(_REGISTRY))")


def _run(first: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", f"{first}\n{LIST}"], capture_output=True, text=True, check=True, env=env, cwd=ROOT).stdout


def test_the_registry_order_does_not_depend_on_what_was_imported_first():
    plain = _run("")
    for first in ("import workbench.targets.vela", "import workbench.targets.tflite", "import workbench.targets.hls",
                  "import workbench.tasks.builtin", "import workbench.tasks.minilm"):
        assert _run(first) == plain, first
    exporters = ast.literal_eval(plain.splitlines()[0])
    assert exporters[:3] == ["qcdq", "qonnx", "float"] and {"tflite-int8", "hls4ml", "ethos-u55-128"} <= set(exporters)
    assert "digits-cnn" in ast.literal_eval(plain.splitlines()[1])


def test_an_entry_registered_later_comes_after_the_built_ins():
    from workbench.export.exporters import EXPORTERS, Exporter, register_exporter

    class _Late(Exporter):
        name, suffix = "late-test-format", ".late.bin"

    register_exporter(_Late)
    try:
        names = list(EXPORTERS)
        assert names[-1] == "late-test-format" and names.index("tflite-int8") < names.index("late-test-format")
    finally:
        EXPORTERS.pop("late-test-format", None)


def test_missing_installed_entry_points_are_named_not_silent(monkeypatch):
    import pytest

    from workbench.infra import plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    registry = plugins.PluginRegistry("workbench.exporters")
    with pytest.warns(plugins.PluginWarning, match="entry points are not installed.*pip install -e"):
        assert list(registry) == []
