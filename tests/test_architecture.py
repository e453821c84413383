"""The architecture holds: the import-linter contracts, no import cycle, no upward import, no oversized module or function."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("architecture", ROOT / "scripts" / "architecture.py")
architecture = sys.modules.setdefault("architecture", importlib.util.module_from_spec(_spec))  # dataclasses look it up
_spec.loader.exec_module(architecture)


def _lint_imports() -> str | None:
    """The ``lint-imports`` console script of this interpreter's environment (import-linter, in the test extra)."""
    here = Path(sys.executable).parent / ("lint-imports.exe" if os.name == "nt" else "lint-imports")
    return str(here) if here.exists() else shutil.which("lint-imports")


def test_import_linter_contracts_hold():
    """pyproject.toml's [tool.importlinter] contracts: the layers, workbench never imports widgets,
    core never imports the targets, the CLI or widgets. The working tree is linted (PYTHONPATH),
    not an installed copy."""
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed (it is in the test extra: pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"lint-imports failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("package", ["workbench", "widgets"])
def test_no_import_cycles(package):
    """No strongly connected component of more than one module among the imports ``ast`` finds,
    module-level and function-level alike."""
    found = architecture.cycles(architecture.import_graph(package))
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_upward_imports():
    """No module of a lower layer imports one of a higher layer (scripts/architecture.py's LAYERS,
    the same order as the import-linter layers contract)."""
    found = architecture.upward_imports(architecture.import_graph("workbench"))
    assert found == [], "upward imports:\n" + "\n".join(f"{a} -> {b}" for a, b in found)


def test_the_layers_are_the_import_linter_contract():
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    assert layers == [f"workbench.{name}" for name in reversed(architecture.LAYERS)]


def test_no_module_over_800_lines_and_no_function_over_120():
    over = architecture.oversized(["workbench", "widgets"])
    assert over == [], f"{len(over)} over the limits (split them by responsibility):\n" + "\n".join(over)


def test_the_checks_see_a_cycle_and_an_oversized_function(tmp_path):
    """The checks above would fail where they should: a cycle through a function-level import,
    an upward import, a function over the limit."""
    pkg = tmp_path / "pkg"
    (pkg / "infra").mkdir(parents=True)
    (pkg / "core").mkdir()
    for init in (pkg, pkg / "infra", pkg / "core"):
        (init / "__init__.py").write_text("")
    (pkg / "infra" / "a.py").write_text("def f():\n    from ..core import b\n" + "    x = 1\n" * 130)
    (pkg / "core" / "b.py").write_text("from ..infra.a import f\n")
    graph = architecture.import_graph(pkg, tmp_path)
    assert architecture.cycles(graph) == [["pkg.core.b", "pkg.infra.a"]]
    assert architecture.upward_imports(graph) == [("pkg.infra.a", "pkg.core.b")]
    assert architecture.oversized([pkg], tmp_path) == ["pkg/infra/a.py: f() 132 lines (at most 120)"]
