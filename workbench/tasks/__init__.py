"""Tasks: the registry (model factory + data + metric), data splits, built-in data and models, Hugging Face models, loaders, metrics, evaluation and the cached float baseline.

Offered here (imported on first use): the task registry (:func:`create_task`, :func:`make_task`,
:func:`register_task`, :func:`list_tasks`, :class:`Task`, ...), :class:`TaskData` / :class:`Split`,
the dataset loaders, :class:`Metric`, :func:`predict` and :func:`load_or_train_baseline`. The
evaluation function shares its module's name: it is ``workbench.tasks.evaluate.evaluate``.
"""

from ..infra.lazy import lazy_namespace

# name -> the module (in this package) that defines it
_API = {
    "Task": "registry",
    "create_task": "registry",
    "list_tasks": "registry",
    "make_task": "registry",
    "register_task": "registry",
    "task_from_factory": "registry",
    "tasks_table": "registry",
    "Split": "data",
    "TaskData": "data",
    "load_cifar10_binary": "loaders",
    "load_image_folder": "loaders",
    "load_mnist_idx": "loaders",
    "load_npz": "loaders",
    "Metric": "metrics",
    "predict": "evaluate",
    "load_or_train_baseline": "baseline",
}

__getattr__, __dir__, __all__ = lazy_namespace(__name__, _API)
