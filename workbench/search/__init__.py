"""Hardware-aware search: measured cost tables, the mixed-precision search and the joint width search.

``wb.search.search(...)`` is the mixed-precision search (:func:`workbench.search.precision.search`).
Calling the package itself, ``wb.search(...)``, still runs it for one release, with a
DeprecationWarning.
"""

import sys as _sys
import types as _types
import warnings as _warnings

_API = {
    "search": "precision", "search_accuracy_target": "precision", "SearchConfig": "precision", "front_on": "precision",
    "CostSource": "cost_tables", "TargetCostTable": "cost_tables", "build_cost_table": "cost_tables",
    "get_cost_source": "cost_tables", "list_cost_sources": "cost_tables", "measure_point": "cost_tables",
    "register_cost_source": "cost_tables",
    "WidthSearchConfig": "width_search", "width_search": "width_search",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'workbench.search' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    globals()[name] = value
    return value


class _CallablePackage(_types.ModuleType):
    """``wb.search`` was the search function before it became this package: calling it still works."""

    def __call__(self, *args, **kwargs):
        _warnings.warn("calling wb.search(...) is deprecated; call wb.search.search(...) (workbench.search.precision.search)",
                       DeprecationWarning, stacklevel=2)
        return self.search(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
