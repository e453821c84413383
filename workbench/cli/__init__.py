"""The ``workbench`` command (typer)."""

from .main import app, main

__all__ = ["app", "main"]
