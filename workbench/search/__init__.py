"""Hardware-aware search: measured cost tables, the mixed-precision search and the joint width search.

Offered here (imported on first use): ``wb.search.search(...)`` is the mixed-precision search
(:func:`workbench.search.precision.search`), with :class:`SearchConfig`, :func:`search_accuracy_target`
and :func:`front_on`; the measured cost tables (:func:`build_cost_table`, :class:`TargetCostTable`,
cost sources, :func:`measure_point`) and :class:`WidthSearchConfig`. The joint width search shares
its module's name: it is ``workbench.search.width_search.width_search``.

Calling the package itself, ``wb.search(...)``, still runs the search for one release, with a
DeprecationWarning.
"""

import sys as _sys
import types as _types
import warnings as _warnings

from ..infra.lazy import lazy_namespace

# name -> the module (in this package) that defines it
_API = {
    "SearchConfig": "config",
    "front_on": "front",
    "search": "precision",
    "search_accuracy_target": "accuracy_target",
    "CostSource": "cost_tables",
    "TargetCostTable": "cost_tables",
    "build_cost_table": "cost_tables",
    "get_cost_source": "cost_tables",
    "list_cost_sources": "cost_tables",
    "measure_point": "cost_tables",
    "register_cost_source": "cost_tables",
    "WidthSearchConfig": "width_search",
}

__getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)


class _CallablePackage(_types.ModuleType):
    """``wb.search`` was the search function before it became this package: calling it still works."""

    def __call__(self, *args, **kwargs):
        _warnings.warn("calling wb.search(...) is deprecated; call wb.search.search(...) (workbench.search.precision.search)",
                       DeprecationWarning, stacklevel=2)
        return self.search(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
