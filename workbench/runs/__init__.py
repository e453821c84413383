"""Runs: jobs, recipes, reports and deployment.

Offered here (imported on first use): recipes (:class:`Recipe`, :func:`load_recipe`, :func:`promote`,
:class:`TargetTolerance`, :class:`RecipeError`, :class:`CodeNotAllowedError`), jobs
(:func:`apply_recipe`, :func:`run_job`, :func:`run_demo`) and the deployment tables
(:func:`deployment_table`, :func:`list_target_names`). Deploying shares its module's name: it is
``workbench.runs.deploy.deploy`` (and ``workbench.deploy`` at the top).
"""

from ..infra.lazy import lazy_namespace

# name -> the module (in this package) that defines it
_API = {
    "CodeNotAllowedError": "recipe",
    "Recipe": "recipe",
    "RecipeError": "recipe",
    "TargetTolerance": "recipe",
    "load_recipe": "recipe",
    "promote": "recipe",
    "apply_recipe": "job",
    "run_demo": "job",
    "run_job": "job",
    "deployment_table": "deployment",
    "list_target_names": "deployment",
}

__getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)
