"""The architecture's figures, read from the source with ``ast``: sizes, the import graph, cycles, upward imports.

Run from the repository root::

    python scripts/architecture.py            # workbench and widgets
    python scripts/architecture.py workbench  # one package

For each subpackage of ``workbench`` (bottom layer first) it prints its modules and lines, the
largest module and function, then the whole package's import cycles and upward imports: the
figures of issue 29's closing note. tests/test_architecture.py imports the functions below.

Imports are read with ``ast`` from every module, module-level and function-level alike (a
function-level import is still a dependency, only a later one). A package's ``__init__`` is left
out of the graph, as its names are re-exports (the lazy ``__getattr__`` of ``workbench`` and its
subpackages imports nothing the ``ast`` can see).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bottom up: a module may import its own layer and those below it (docs/ARCHITECTURE.md,
# pyproject.toml's [tool.importlinter] layers contract)
LAYERS = ("infra", "tasks", "core", "export", "targets", "analysis", "search", "runs", "cli")
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 120


@dataclass(frozen=True)
class Module:
    """One module of a package: its dotted name, file, whether it is a package's ``__init__``."""

    name: str
    path: Path
    is_package: bool


def modules(package: str | Path, root: Path = ROOT) -> dict[str, Module]:
    """Every module of ``package`` (a folder under ``root``, or a path), by dotted name."""
    folder = Path(package) if Path(package).is_absolute() else root / package
    out = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = Module(".".join(parts), path, is_package)
    return out


def _target(module: Module, node: ast.ImportFrom) -> str | None:
    """The dotted module an ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: Module, known: dict[str, Module]) -> set[str]:
    """The modules of ``known`` that ``module`` imports anywhere in its body (module level, in
    functions, in ``if TYPE_CHECKING``): ``from a import b`` counts ``a`` and, where ``a.b`` is a
    module, ``a.b``."""
    out = set()
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.ImportFrom):
            target = _target(module, node)
            if target:
                out.update(c for c in [target] + [f"{target}.{a.name}" for a in node.names] if c in known)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
    out.discard(module.name)
    return out


def import_graph(package: str | Path = "workbench", root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the modules it imports, among the package's modules that are not an ``__init__``."""
    known = modules(package, root)
    plain = {name for name, m in known.items() if not m.is_package}
    return {name: imports_of(known[name], known) & plain for name in sorted(plain)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one module
    (Tarjan's algorithm, iterative), each sorted; an empty list when there is none."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) >= 3 else None


def upward_imports(graph: dict[str, set[str]], layers: Iterable[str] = LAYERS) -> list[tuple[str, str]]:
    """(importer, imported) for every import of a module of a higher layer by one of a lower layer."""
    order = list(layers)
    out = []
    for importer, targets in graph.items():
        low = _layer(importer)
        for imported in targets:
            high = _layer(imported)
            if low in order and high in order and order.index(high) > order.index(low):
                out.append((importer, imported))
    return sorted(out)


@dataclass(frozen=True)
class Size:
    """A module's lines and its longest function (``module.qualname``, lines; ``("", 0)`` for none)."""

    module: str
    lines: int
    function: str
    function_lines: int


def functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines from ``def`` to its last line) of every function and method of a file."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + child.name, child.end_lineno - child.lineno + 1))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), str(path)), "")
    return out


def sizes(package: str | Path = "workbench", root: Path = ROOT) -> list[Size]:
    """Every module's lines and longest function."""
    out = []
    for name, m in modules(package, root).items():
        fns = functions(m.path)
        fn, n = max(fns, key=lambda f: f[1]) if fns else ("", 0)
        out.append(Size(name, len(m.path.read_text().splitlines()), fn, n))
    return out


def oversized(packages: Iterable[str | Path] = ("workbench", "widgets"), root: Path = ROOT, max_module: int = MAX_MODULE_LINES,
              max_function: int = MAX_FUNCTION_LINES) -> list[str]:
    """One line per module over ``max_module`` lines and per function over ``max_function`` lines."""
    out = []
    for package in packages:
        for name, m in modules(package, root).items():
            lines = len(m.path.read_text().splitlines())
            if lines > max_module:
                out.append(f"{m.path.relative_to(root)}: {lines} lines (at most {max_module})")
            out += [f"{m.path.relative_to(root)}: {fn}() {n} lines (at most {max_function})" for fn, n in functions(m.path) if n > max_function]
    return out


def report(package: str = "workbench", root: Path = ROOT) -> str:
    """The figures as text: per subpackage (bottom layer first) its modules and lines, largest
    module and function; then the whole package's largest module and function, cycles and
    upward imports."""
    all_sizes = sizes(package, root)
    groups: dict[str, list[Size]] = {}
    for s in all_sizes:
        parts = s.module.split(".")
        groups.setdefault(parts[1] if len(parts) >= 2 and (root / package / parts[1]).is_dir() else "(top level)", []).append(s)
    order = [g for g in LAYERS if g in groups] + sorted(g for g in groups if g not in LAYERS)
    rows = [f"{'folder':<14}{'modules':>8}{'lines':>8}  {'largest module':<40}{'largest function':<50}"]
    for g in order:
        ss = groups[g]
        big = max(ss, key=lambda s: s.lines)
        fn = max(ss, key=lambda s: s.function_lines)
        rows.append(f"{g:<14}{len(ss):>8}{sum(s.lines for s in ss):>8}  {big.module.split('.')[-1] + f' ({big.lines})':<40}"
                    f"{(fn.module.split('.')[-1] + '.' + fn.function + f' ({fn.function_lines})') if fn.function else '-':<50}")
    big = max(all_sizes, key=lambda s: s.lines)
    fn = max(all_sizes, key=lambda s: s.function_lines)
    graph = import_graph(package, root)
    cyc, up = cycles(graph), upward_imports(graph)
    rows += ["", f"{package}: {len(all_sizes)} modules, {sum(s.lines for s in all_sizes)} lines",
             f"largest module: {big.module} ({big.lines} lines)",
             f"largest function: {fn.module}.{fn.function} ({fn.function_lines} lines)",
             f"import cycles: {len(cyc)}", *(f"  {' <-> '.join(c)}" for c in cyc),
             f"upward imports: {len(up)}", *(f"  {a} -> {b}" for a, b in up)]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    packages = argv or ["workbench", "widgets"]
    for i, package in enumerate(packages):
        print(("\n" if i else "") + report(package))
    over = oversized(packages)
    print(f"\nover {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per function: {len(over)}")
    for line in over:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
