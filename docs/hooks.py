"""MkDocs hook: the parts of the site that follow the source tree (no extra dependency).

- The API reference: one page per subpackage of ``workbench`` (and one for ``widgets``), each
  listing every public module found on disk at build time as a ``::: module`` block for
  mkdocstrings. A module or subpackage added later appears without editing any page.
- The tutorials: every ``notebooks/*.ipynb`` is added to the site (mkdocs-jupyter renders it as
  committed; nothing is executed) and to the navigation.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
# The layers bottom up (docs/ARCHITECTURE.md); a subpackage not named here is listed after them.
LAYER_ORDER = ["infra", "tasks", "core", "export", "targets", "analysis", "search", "runs", "cli"]


def _is_package_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(("_", ".")) and any(path.glob("*.py"))


def _subpackages() -> list[str]:
    found = [p.name for p in (ROOT / "workbench").iterdir() if _is_package_dir(p)]
    return [n for n in LAYER_ORDER if n in found] + sorted(n for n in found if n not in LAYER_ORDER)


def _modules(package_dir: Path, dotted: str) -> list[str]:
    """Public modules of a package, depth first, sorted by name (``__main__`` and ``_private`` left out)."""
    out = []
    for path in sorted(package_dir.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py":
            out.append(f"{dotted}.{path.stem}")
        elif _is_package_dir(path):
            out.append(f"{dotted}.{path.name}")
            out += _modules(path, f"{dotted}.{path.name}")
    return out


def _reference_pages() -> dict[str, tuple[str, Path]]:
    """src_uri -> (package dotted name, package dir)."""
    pages = {f"reference/{name}.md": (f"workbench.{name}", ROOT / "workbench" / name) for name in _subpackages()}
    pages["reference/widgets.md"] = ("widgets", ROOT / "widgets")
    return pages


def _notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def _page_markdown(dotted: str, package_dir: Path) -> str:
    lines = [f"# `{dotted}`", ""]
    if (package_dir / "__init__.py").exists():
        lines += [f"::: {dotted}", "    options:", "      members: false", "      show_root_heading: false", ""]
    modules = _modules(package_dir, dotted)
    lines += ["Modules: " + ", ".join(f"[`{m.rsplit('.', 1)[1]}`](#{m})" for m in modules), ""]
    for module in modules:
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def on_config(config, **kwargs):
    """Adds the reference pages and the notebooks to the navigation (after the hand-written pages)."""
    nav = config.nav or []
    nav.append({"Tutorials": [f"notebooks/{nb.name}" for nb in _notebooks()]})
    nav.append({"API reference": [{dotted: uri} for uri, (dotted, _) in _reference_pages().items()]})
    config.nav = nav
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files, config, **kwargs):
    for nb in _notebooks():
        files.append(File(f"notebooks/{nb.name}", src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    for uri, (dotted, package_dir) in _reference_pages().items():
        files.append(File.generated(config, uri, content=_page_markdown(dotted, package_dir)))
    return files


try:  # griffe comes with mkdocstrings-python; mkdocs.yml names this class among its griffe extensions
    import griffe
except ImportError:  # pragma: no cover - the hook itself does not need it
    griffe = None

if griffe is not None:

    class FenceDoctests(griffe.Extension):
        """Renders ``>>>`` examples of docstrings as code blocks (outside an Examples section the
        Markdown would otherwise read their output, ``['a', 'b']``, as a link), and Sphinx roles
        (``:func:`name```) as code."""

        def on_object(self, *, obj, **kwargs):
            if obj.docstring is not None:
                obj.docstring.value = strip_roles(fence_doctests(obj.docstring.value))


_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):`~?([^`]+)`")


def strip_roles(text: str) -> str:
    """``:class:`~a.b.C``` -> ``C``, ``:func:`f``` -> ``f`` (code, not a cross-reference: never a broken link)."""
    return _ROLE.sub(lambda m: f"`{m.group(1)}`", text)


def fence_doctests(text: str) -> str:
    out, block = [], []

    def flush():
        if block:
            indent = block[0][: len(block[0]) - len(block[0].lstrip())]
            out.extend([f"{indent}```pycon", *block, f"{indent}```"])
            block.clear()

    lines = text.split("\n")
    in_fence = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if not in_fence and (stripped.startswith(">>>") or (block and stripped)):
            block.append(line)
            continue
        flush()
        out.append(line)
    flush()
    return "\n".join(out)
