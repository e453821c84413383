"""ipywidgets layer of the workbench: thin widgets over ``workbench`` (which never imports this)."""

from .bitwidth_table import BitWidthTable
from .deployment_matrix import DeploymentMatrix
from .divergence_view import DivergenceView
from .pruning_sweep import PruningSweep
from .qat_progress import QATProgress
from .sensitivity_dashboard import SensitivityDashboard
from .tradeoff_explorer import TradeoffExplorer

__all__ = ["BitWidthTable", "DeploymentMatrix", "DivergenceView", "PruningSweep", "QATProgress", "SensitivityDashboard", "TradeoffExplorer"]
