"""The ``workbench`` command (typer): :data:`app`, with one module per command group.

:mod:`.app` holds the Typer app and what the commands share; :mod:`.catalog` the listings (tasks,
formats, exporters, costs, targets); :mod:`.quantize` demo, quantize and describe;
:mod:`.sweeps` sensitivity and prune; :mod:`.search` the mixed-precision search; :mod:`.recipes`
apply, deploy, qat and the ``recipe`` group. The commands are registered here, in the order
``workbench --help`` lists them. Importing this package (``--help``, a usage error, a listing)
imports neither torch nor a target toolchain: each command imports what it runs in its body.
"""

from . import catalog, quantize, recipes, search, sweeps
from .app import app, main

for _fn, _name in (
    (catalog.tasks, None), (catalog.formats, None), (catalog.exporters, None), (catalog.costs, None),
    (quantize.demo, None), (quantize.quantize, None), (quantize.describe_cmd, "describe"),
    (sweeps.sensitivity, None), (recipes.apply, None), (recipes.deploy, None), (catalog.targets, None), (recipes.qat, None),
    (search.search_cmd, "search"), (sweeps.prune, None),
):
    app.command(_name)(_fn)
app.add_typer(recipes.recipe_app, name="recipe")
del _fn, _name

__all__ = ["app", "main"]
