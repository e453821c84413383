"""Per-layer analysis: sensitivity sweeps, layer statistics, divergence, batching, the graph runner, pruning sweeps and recovery tables.

Offered here (imported on first use): :class:`SensitivityConfig`, :func:`hessian_traces`,
:func:`simulation_layer_outputs`, :func:`layer_statistics`, :func:`weight_histogram`,
:class:`PruningSweepConfig` and :func:`recovery_table`. The sweeps that share their module's name
are ``workbench.analysis.sensitivity.sensitivity``, ``workbench.analysis.divergence.divergence`` and
``workbench.analysis.pruning_sweep.pruning_sweep`` (and ``workbench.sensitivity`` etc. at the top).
"""

from ..infra.lazy import lazy_namespace

# name -> the module (in this package) that defines it
_API = {
    "SensitivityConfig": "sensitivity",
    "hessian_traces": "hessian",
    "simulation_layer_outputs": "divergence",
    "layer_statistics": "layer_stats",
    "weight_histogram": "layer_stats",
    "PruningSweepConfig": "pruning_sweep",
    "recovery_table": "recovery",
}

__getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)
