"""ipywidgets layer of the workbench: thin widgets over ``workbench`` (which never imports this)."""

from .bitwidth_table import BitWidthTable

__all__ = ["BitWidthTable"]
