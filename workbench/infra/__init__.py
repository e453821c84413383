"""What every layer uses: errors, atomic file writes, the one YAML loader, output folders, the result store, executors, tracking, determinism, child processes, interrupts, user code.

Offered here (imported on first use): the error classes every layer raises (:class:`WorkbenchError`
and its subclasses), :class:`ResultStore` (the content-addressed result cache), :class:`RunDir` (an
output folder), :func:`make_executor` (serial / process / Ray executors) and :class:`Tracker`
(MLflow / W&B tracking). The modules themselves are ``workbench.infra.<module>``.
"""

from .lazy import lazy_namespace

# name -> the module (in this package) that defines it
_API = {
    "WorkbenchError": "errors",
    "CalibrationError": "errors",
    "CheckpointError": "errors",
    "DatasetError": "errors",
    "ExportError": "errors",
    "OutputPathError": "errors",
    "PruningError": "errors",
    "SpecError": "errors",
    "StoreError": "errors",
    "TaskError": "errors",
    "ToolchainError": "errors",
    "UnsupportedLayerError": "errors",
    "UserCodeError": "errors",
    "ExecutorError": "executors",
    "make_executor": "executors",
    "RunDir": "outdir",
    "ResultStore": "store",
    "Tracker": "tracking",
    "TrackingError": "tracking",
    "TrackingWarning": "tracking",
}

__getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)
