"""Lazy package namespaces (PEP 562): a package names what it offers in a plain dict and imports it on first use.

Every ``__init__`` of the workbench uses :func:`lazy_namespace`, so that ``import workbench`` (and the
CLI, which imports through the packages) loads no torch until a name that needs it is used::

    _API = {"list_exporters": "exporters", "export_qcdq": "qcdq"}   # name -> module, relative
    __getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)

Attribute lookup on the package then goes, in order: a name of ``api`` (imported from its module and
kept in the package's namespace, so the next lookup is a plain attribute); a name of ``moved`` (an
old home kept for one release: the object of the new place, with a DeprecationWarning naming it);
a submodule of the package (``wb.analysis.divergence`` is the module whatever was imported first).
A name must not be both an ``api`` key and a submodule: the import system sets the submodule over it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Iterable


def _resolve(package: str, module: str, name: str):
    return getattr(importlib.import_module(f"{package}.{module}"), name)


def _is_submodule(package: str, name: str) -> bool:
    """Whether ``name`` is a module in the package's own folder (not one some other finder would supply)."""
    return importlib.machinery.PathFinder.find_spec(f"{package}.{name}", sys.modules[package].__path__) is not None


def _from_importlib() -> bool:
    """Whether the lookup comes from the import system's own ``hasattr`` (``from package import name``
    asks twice: the import system first, then the statement; only the statement's ask warns)."""
    try:
        return sys._getframe(2).f_code.co_filename.startswith("<frozen importlib")
    except ValueError:  # looked up from outside any Python frame
        return False


def lazy_namespace(package: str, api: dict[str, str], *, moved: dict[str, str] | None = None,
                   also: Iterable[str] = ()) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for the package ``package`` (its ``__name__``).

    ``api`` maps each name the package offers to the module that defines it, relative to the package
    (``"exporters"``, or ``"core.describe"`` from the top level). ``moved`` maps each deprecated name to
    the namespace that offers it now, relative to the package (``"export"``: ``workbench.export.<name>``).
    ``also`` adds names to ``__all__`` that resolve otherwise (``__version__``; subpackages, as submodules)."""
    moved = dict(moved or {})
    public = [*also, *api]

    def __getattr__(name: str):
        module = api.get(name)
        if module is not None:
            value = _resolve(package, module, name)
            vars(sys.modules[package])[name] = value
            return value
        home = moved.get(name)
        if home is not None:
            value = _resolve(package, home, name)
            if not _from_importlib():
                warnings.warn(f"{package}.{name} is deprecated; use {package}.{home}.{name}", DeprecationWarning, stacklevel=2)
            return value
        if not name.startswith("_") and _is_submodule(package, name):
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(public) | {n for n in vars(sys.modules[package]) if n.startswith("__")})

    return __getattr__, __dir__, list(public)
