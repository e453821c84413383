"""The restructure of issue 29 changed no bytes: the demo built by the code before it and by this code agree.

The code before the move into layered subpackages (commit 21fe8cd, the parent of the move) is
taken from git history with ``git archive`` into a temporary folder, so nothing in the checkout
changes. Both trees run ``python -m workbench.cli demo`` as subprocesses, each with PYTHONPATH
pointing at its own tree and the same WORKBENCH_CACHE: the old one first (it trains the baseline
and fills the result store), then this one. Compared: the sha256 of every ONNX file the demo
writes (``model.onnx`` and the other variants' and formats'), ``recipe.yaml``, and the cache:
this code adds no file to it and no row to its result store, so it computed the same baseline
file name and the same store keys (sweep fingerprints, case keys) as the old code.

The demo runs with ``WORKBENCH_SMALL=1`` and ``--latency-runs 10`` (timing is not compared).
The TFLite files are not compared: their tensor names carry the model class's module path
(``workbench.models.DigitsCNN`` became ``workbench.tasks.models.DigitsCNN``), so they differ by
those names' bytes.
"""

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "21fe8cd"  # the parent of the move into subpackages (d0a5a60)

pytestmark = pytest.mark.slow


def _old_tree(dest: Path) -> Path:
    """The workbench of commit BEFORE (its package, datasets and pyproject.toml) under ``dest``; skips when git history is not available."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the code before the restructure comes from git history")
    probe = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BEFORE}^{{commit}}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"git history has no commit {BEFORE} (a shallow clone or an sdist?): the code before the restructure is not available")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", BEFORE, "workbench", "datasets", "pyproject.toml"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dest


def _demo(tree: Path, out: Path, cache: Path, cwd: Path) -> None:
    # cwd is neither tree: ``python -m`` puts the working directory first on sys.path
    env = {**os.environ, "PYTHONPATH": str(tree), "WORKBENCH_CACHE": str(cache), "PYTHONHASHSEED": "0", "WORKBENCH_SMALL": "1"}
    loaded = subprocess.run([sys.executable, "-c", "import workbench; print(workbench.__file__)"], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert Path(loaded.stdout.strip()).resolve().is_relative_to(tree.resolve()), f"the demo would not run {tree}: {loaded.stdout}{loaded.stderr}"
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "demo", "--out", str(out), "--latency-runs", "10"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"demo with {tree} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and not p.name.endswith(("-journal", "-wal", "-shm")))


def _store_keys(cache: Path) -> set[tuple[str, str, str]]:
    with closing(sqlite3.connect(cache / "results.sqlite")) as db:
        return set(db.execute("SELECT sweep, kind, case_key FROM rows"))


def _onnx_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.onnx"))}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restructure")
    old = _old_tree(tmp / "old")
    cache = tmp / "cache"
    _demo(old, tmp / "demo-old", cache, tmp)
    after_old = _cache_files(cache), _store_keys(cache)
    _demo(ROOT, tmp / "demo-new", cache, tmp)
    after_new = _cache_files(cache), _store_keys(cache)
    return tmp / "demo-old", tmp / "demo-new", after_old, after_new


def test_the_demo_onnx_files_are_byte_identical(demos):
    old, new, _, _ = demos
    before, after = _onnx_hashes(old), _onnx_hashes(new)
    assert "model.onnx" in before
    assert after == before


def test_the_demo_recipe_is_identical(demos):
    old, new, _, _ = demos
    assert (new / "recipe.yaml").read_text() == (old / "recipe.yaml").read_text()


def test_the_cache_keys_are_unchanged(demos):
    """The new code found everything the old code cached: no new baseline file, no new store row."""
    _, _, (files_old, keys_old), (files_new, keys_new) = demos
    assert any(f.startswith("baselines/") for f in files_old)
    assert files_new == files_old
    assert keys_old and keys_new == keys_old
