"""Embedded-AI compression workbench: headless core (no Jupyter imports)."""

__version__ = "0.1.0"
