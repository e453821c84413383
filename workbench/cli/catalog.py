"""The listing commands: ``workbench tasks``, ``formats``, ``exporters``, ``costs`` and
``targets``. They import neither torch nor a target toolchain (the registries they list are light;
a target's availability is probed without importing it: :func:`workbench.export.exporters.module_installed`)."""

from __future__ import annotations

import typer

from .app import _echo_table, _quiet_libraries


def tasks() -> None:
    """List the registered tasks: input shape, parameters, MACs, metric and data source."""
    _quiet_libraries()
    from ..tasks.registry import tasks_table

    typer.echo(tasks_table().to_string(index=False))


def formats() -> None:
    """List the number formats a spec's weight_format / act_format can name (int, fp8_e4m3, ...)."""
    _quiet_libraries()
    from ..core.formats import list_formats

    _echo_table(list_formats())


def exporters() -> None:
    """List the export formats --format and a recipe's export.formats can name (qcdq, qonnx, float, ...)."""
    _quiet_libraries()
    from ..export.exporters import list_exporters

    _echo_table(list_exporters())


def costs() -> None:
    """List the cost kinds a search's --budget KIND=VALUE and a target profile's budgets can name."""
    _quiet_libraries()
    from ..core.cost import list_cost_kinds

    _echo_table(list_cost_kinds())


def targets() -> None:
    """List the deployment targets workbench deploy --target and a recipe's targets: section can name."""
    _quiet_libraries()
    from ..runs.deployment import list_targets

    _echo_table(list_targets())
