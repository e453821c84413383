"""Quantisation and pruning on Brevitas: specs, number formats, options, quantize, attention, PTQ algorithms, QAT, pruning, describe and the cost model.

Offered here (imported on first use): :class:`QuantSpec` / :class:`LayerSettings`, the number-format
registry, :func:`quantize_model`, the PTQ algorithms (:func:`calibrate`, :func:`bias_correction`,
:func:`learned_rounding`), :class:`QATConfig` / :func:`train_qat`, :class:`PruningSpec` /
:func:`prune`, and the cost model (:func:`cost_table`, cost kinds, :func:`load_target`). The
per-layer table shares its module's name: it is ``workbench.core.describe.describe``.
"""

from ..infra.lazy import lazy_namespace

# name -> the module (in this package) that defines it
_API = {
    "LayerSettings": "spec",
    "QuantSpec": "spec",
    "NumberFormat": "formats",
    "get_format": "formats",
    "list_formats": "formats",
    "register_format": "formats",
    "UnsupportedLayerWarning": "quantize",
    "quantisable_layers": "quantize",
    "quantize_model": "quantize",
    "bias_correction": "ptq",
    "calibrate": "ptq",
    "learned_rounding": "ptq",
    "QATConfig": "qat",
    "train_qat": "qat",
    "PruningSpec": "pruning",
    "channel_groups": "pruning",
    "prune": "pruning",
    "sparsity_table": "pruning",
    "CostKind": "cost",
    "cost_table": "cost",
    "described_costs": "cost",
    "get_cost_kind": "cost",
    "list_cost_kinds": "cost",
    "load_target": "cost",
    "register_cost_kind": "cost",
}

__getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)
