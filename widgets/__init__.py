"""ipywidgets layer of the workbench: thin widgets over ``workbench`` (which never imports this)."""

from .background import Cancelled, Runner
from .bitwidth_table import BitWidthTable
from .chart import Chart
from .deployment_matrix import DeploymentMatrix
from .divergence_view import DivergenceView
from .pruning_sweep import PruningSweep
from .qat_progress import QATProgress
from .sensitivity_dashboard import SensitivityDashboard
from .tradeoff_explorer import TradeoffExplorer

__all__ = ["BitWidthTable", "Cancelled", "Chart", "Runner", "DeploymentMatrix", "DivergenceView", "PruningSweep", "QATProgress", "SensitivityDashboard", "TradeoffExplorer"]
