"""The documentation site builds with --strict (a broken reference fails) and holds every page."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _subpackages():
    return sorted(p.name for p in (ROOT / "workbench").iterdir()
                  if p.is_dir() and not p.name.startswith(("_", ".")) and any(p.glob("*.py")))


def test_docs_site_builds_strict_with_every_page(tmp_path):
    missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter")
               if importlib.util.find_spec(m.split(".")[0]) is None]
    assert not missing, (f"the docs extra is not installed ({', '.join(missing)} missing from {sys.executable}): "
                         "pip install -c constraints.txt -e '.[docs]' (make test installs it)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]

    guides = sorted(p.stem for p in (ROOT / "docs" / "guides").glob("*.md"))
    assert {"quantisation", "sensitivity", "search", "recipes", "pruning", "recovery", "export", "deployment",
            "tasks", "scaling", "dashboard", "cli", "determinism"} <= set(guides)
    pages = ["index.html", "getting-started/index.html", "ARCHITECTURE/index.html"]
    pages += [f"guides/{g}/index.html" for g in guides]
    pages += [f"reference/{name}/index.html" for name in _subpackages()] + ["reference/widgets/index.html"]
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    pages += [f"notebooks/{nb}/index.html" for nb in notebooks]
    absent = [p for p in pages if not (site / p).is_file()]
    assert not absent, absent

    # The API reference is generated from the docstrings: each module of a subpackage has its section.
    core = (site / "reference" / "core" / "index.html").read_text()
    for module in sorted((ROOT / "workbench" / "core").glob("*.py")):
        if not module.name.startswith("_"):
            assert f'id="workbench.core.{module.stem}"' in core, module.stem
    assert 'id="workbench.core.quantize.quantize_model"' in core
    # Notebooks are rendered as committed, with their code.
    assert "load_or_train_baseline" in (site / "notebooks" / notebooks[0] / "index.html").read_text()
