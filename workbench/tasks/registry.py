"""Tasks: a model factory + data + metric, kept in a registry (as timm's ``create_model``).

>>> import workbench as wb
>>> task = wb.create_task("digits-cnn")
>>> wb.list_tasks()[:2]
['ad-autoencoder', 'digits-cnn']

Bring your own: :func:`make_task` turns any ``torch.nn.Module`` with calibration / evaluation
data and a metric callable into a task.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..infra.plugins import PluginRegistry
from ..infra.errors import TaskError, UserCodeError, WorkbenchError

if TYPE_CHECKING:  # annotations only: the registry imports without torch (``workbench tasks``, ``--help``)
    import pandas as pd
    import torch
    from torch import nn

    from .data import Split, TaskData
    from .metrics import Metric


def _float32():
    import torch

    return torch.float32


@dataclass
class Task:
    """What the workbench compresses: a model, its data and how to score it.

    ``kind`` is ``"classification"`` (outputs are logits; agreement is top-1) or
    ``"reconstruction"`` (outputs reconstruct the inputs; agreement is output error) or
    ``"embedding"`` (label-free embeddings; agreement is the pairwise-similarity ranking kept).
    ``pretrained`` tasks come with trained weights; the others train a float baseline first.
    """

    name: str
    model_factory: Callable[[], nn.Module]
    data_factory: Callable[[], TaskData]
    metric: Metric
    kind: str = "classification"
    input_shape: tuple[int, ...] = ()
    data_source: str = ""
    synthetic: bool = False
    description: str = ""
    pretrained: bool = False
    train_epochs: int = 20
    learning_rate: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    subset: tuple[int, int, int] | None = None  # set by small(): (n_train, n_calib, n_eval)
    input_dtype: torch.dtype = field(default_factory=_float32)  # torch.float32; torch.int64 for token ids
    factory: str | None = None  # "module:function" that built it (a promoted recipe names it)
    _data: TaskData | None = field(default=None, repr=False)

    @property
    def data(self) -> TaskData:
        if self._data is None:
            from ..infra.determinism import seeded
            from ..infra.usercode import first_line, where

            try:
                with seeded(self.seed):  # a data factory that shuffles unseeded splits alike in every process
                    self._data = self.data_factory()
            except WorkbenchError:
                raise
            except Exception as exc:  # the user's data factory
                raise UserCodeError(f"task {self.name!r}: data factory {where(self.data_factory)} raised {first_line(exc)}") from None
            if self._data.input_shape != tuple(self.input_shape):
                raise TaskError(f"task {self.name!r}: data has input shape {self._data.input_shape}; the task declares {tuple(self.input_shape)}")
        return self._data

    def with_data(self, data: TaskData) -> "Task":
        """The same task on other data (a subset for quick runs, or the user's own files)."""
        clone = copy.copy(self)
        clone.subset = None
        clone._data = data
        clone.data_factory = lambda: data
        clone.data_source = data.source
        clone.synthetic = data.synthetic
        return clone

    def small(self, n_train: int = 256, n_calib: int = 64, n_eval: int = 128) -> "Task":
        """The same task on the first samples of each split (quick runs; recipes record it)."""
        clone = self.with_data(self.data.subset(n_train, n_calib, n_eval))
        clone.subset = (n_train, n_calib, n_eval)
        return clone

    def create_model(self) -> nn.Module:
        from torch import nn

        from ..infra.usercode import check_model, first_line, where

        try:
            model = self.model_factory()
        except WorkbenchError:
            raise
        except Exception as exc:  # the user's model factory
            raise UserCodeError(f"task {self.name!r}: model factory {where(self.model_factory)} raised {first_line(exc)}") from None
        if not isinstance(model, nn.Module):
            raise TaskError(f"task {self.name!r}: model factory returned {type(model).__name__}; expected a torch.nn.Module")
        check_model(model, f"task {self.name!r}: model")
        return model

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return self.data.calib.x[:batch].clone()

    def missing_labels(self, split: Split | None = None) -> str | None:
        """Why the task's metric cannot score ``split`` (default: the eval split): it has no labels
        and the metric scores the outputs against them. None when it can."""
        where = "its eval split" if split is None else "the split"
        split = self.data.eval if split is None else split
        if split.y is None and self.metric.needs_targets:
            return f"task {self.name!r} has no labels on {where}, and {self.metric.name} scores the outputs against them"
        return None

    def score(self, outputs: torch.Tensor, split: Split) -> float:
        """The task's metric of ``outputs`` on ``split``; a split without the labels the metric needs is a TaskError."""
        why = self.missing_labels(split)
        if why:
            raise TaskError(f"{why}; give the task labelled data (eval=(x, y))")
        return self.metric(outputs, split.y, split.x)

    @property
    def is_classifier(self) -> bool:
        return self.kind == "classification"

    def code_fingerprint(self) -> str:
        """Hash of the model's source code: a baseline trained by other code is not reused."""
        model_cls = type(self.create_model())
        try:
            src = inspect.getsource(model_cls)
        except (OSError, TypeError):
            src = model_cls.__qualname__
        return hashlib.sha256(src.encode()).hexdigest()[:16]


# filled by the modules that define tasks: the built-ins (workbench.tasks.builtin) and a user package's,
# through the entry-point group "workbench.tasks", imported on the registry's first read;
# register_task from a user's own module or notebook
_REGISTRY: dict[str, Callable[..., Task]] = PluginRegistry("workbench.tasks", home=__name__)
# name -> (factory, its row of tasks_table()) for the tasks registered with their listing
_LISTINGS: dict[str, tuple[Callable[..., Task], dict]] = {}
LISTING_KEYS = ("input_shape", "params", "macs", "metric", "data", "data_source")


def register_task(name: str, *, listing: dict | None = None):
    """Decorator: register ``fn(**kwargs) -> Task`` under ``name``.

    ``listing``: the task's row of :func:`tasks_table` (``input_shape``, ``params``, ``macs``,
    ``metric``, ``data``, ``data_source``, as :func:`task_listing` computes them from the built
    task), so that ``workbench tasks`` lists it without building its model (nor importing torch);
    without it the task is built to be listed."""

    def deco(fn: Callable[..., Task]):
        if name in _REGISTRY:
            raise TaskError(f"a task named {name!r} is already registered")
        if listing is not None and tuple(listing) != LISTING_KEYS:
            raise TaskError(f"task {name!r}: listing keys {tuple(listing)}; expected {LISTING_KEYS}")
        _REGISTRY[name] = fn
        if listing is not None:
            _LISTINGS[name] = (fn, dict(listing))
        return fn

    return deco


def list_tasks() -> list[str]:
    return sorted(_REGISTRY)


def create_task(name: str, **kwargs) -> Task:
    """Build a registered task by name (``seed=`` is accepted by every built-in task)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list_tasks(), n=3, cutoff=0.3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TaskError(f"unknown task {name!r}; expected one of {', '.join(list_tasks())}{hint}")
    seed = kwargs.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - 1:
        raise TaskError(f"seed {seed!r}; expected an integer in 0-{2**32 - 1}")
    from ..infra.determinism import seeded

    with seeded(seed):  # what a registered factory of the user's draws unseeded is fixed by the seed too
        return _REGISTRY[name](**kwargs)


FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "(no message)"


def task_from_factory(ref: str, error: type = TaskError, label: str = "task", seed: int = 0) -> Task:
    """Import ``module`` and call ``function()`` of ``ref = "module:function"`` (the working
    directory is on the import path): a :class:`Task`, or ``(model, calibration inputs, (eval x,
    eval y), metric)`` made into one. This runs the user's code: callers ask for consent first
    (recipes) or act on an explicit command (the CLI's task argument). Every failure is one line of
    ``error`` naming ``label`` and ``ref``.

    ``seed`` (0-2**32-1) seeds Python's, numpy's and torch's generators before the module is
    imported and the function called (:func:`workbench.infra.determinism.seeded`; the caller's
    generator states are restored afterwards), and becomes the task's ``seed``: a factory that
    builds its model unseeded gives the same initial weights in every process, so a search and a
    later ``workbench apply`` of its recipe (which records the seed) train the same baseline."""
    from ..infra.determinism import check_seed, seeded

    if not isinstance(ref, str) or not FACTORY_PATTERN.match(ref):
        raise error(f"{label} {ref!r}; expected 'package.module:function'")
    check_seed(seed, error, f"{label} seed")
    with seeded(seed):
        task = _call_factory(ref, error, label)
    task.factory = ref
    task.seed = seed
    return task


def _call_factory(ref: str, error: type, label: str) -> Task:
    """Import and call the factory ``ref`` names; its result as a Task (see :func:`task_from_factory`)."""
    import importlib
    import os
    import sys

    module_name, func_name = ref.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{label}: cannot import module {module_name!r} ({exc})") from None
    except SystemExit as exc:
        raise error(f"{label}: importing module {module_name!r} called sys.exit({exc.code!r})") from None
    except Exception as exc:  # SyntaxError, or whatever its import-time code raised
        raise error(f"{label}: importing module {module_name!r} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise error(f"{label}: module {module_name!r} has no function {func_name!r}")
    failed = UserCodeError if error is TaskError else error  # the user's own function failed
    try:
        task = fn()
    except SystemExit as exc:
        raise failed(f"{label} {ref} called sys.exit({exc.code!r}); expected it to return a Task") from None
    except Exception as exc:
        raise failed(f"{label} {ref} raised {type(exc).__name__}: {_first_line(exc)}") from None
    if isinstance(task, tuple) and len(task) == 4:  # (model, calibration inputs, (eval x, eval y), metric)
        model, calib, eval_, metric = task
        try:
            task = make_task(model, calib, eval_, metric, name=func_name)
        except Exception as exc:
            raise error(f"{label}: {ref} returned parts make_task refuses: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(task, Task):
        raise error(f"{label}: {ref} returned {type(task).__name__}; expected a workbench Task "
                    f"or (model, calibration inputs, (eval x, eval y), metric)")
    return task


def resolve_task_arg(spec: str, imports: tuple[str, ...] = (), **kwargs) -> Task:
    """A task named on the command line: a registered name (after importing the ``imports``
    modules, whose ``@register_task`` decorators then run) or ``module:function``; either factory
    runs seeded with ``kwargs["seed"]`` (default 0), so what it draws is the same in every process."""
    import importlib
    import os
    import sys

    cwd = os.getcwd()
    if (imports or ":" in spec) and cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for module_name in imports:
        try:
            importlib.import_module(module_name)
        except SystemExit as exc:
            raise TaskError(f"--import {module_name}: importing it called sys.exit({exc.code!r})") from None
        except Exception as exc:
            raise TaskError(f"--import {module_name}: cannot import it ({type(exc).__name__}: {_first_line(exc)})") from None
    if ":" in spec:
        return task_from_factory(spec, seed=kwargs.get("seed", 0))
    return create_task(spec, **kwargs)


def task_listing(task: Task) -> dict:
    """The row of :func:`tasks_table` of a built task (its model built and run once): input shape,
    parameters, MACs, metric and data source."""
    import torch

    from . import models

    model = task.create_model().eval()
    example = torch.zeros((1, *task.input_shape), dtype=task.input_dtype)
    return {
        "input_shape": "x".join(map(str, task.input_shape)),
        "params": models.count_params(model),
        "macs": sum(models.count_macs(model, example).values()),
        "metric": task.metric.name,
        "data": "synthetic" if task.synthetic else "real",
        "data_source": task.data_source,
    }


def tasks_table() -> pd.DataFrame:
    """One row per registered task: input shape, parameters, MACs, metric and data source (from
    the listing it was registered with, else from the built task)."""
    import pandas as pd

    rows = []
    for name in list_tasks():
        known = _LISTINGS.get(name)
        if known is not None and dict.get(_REGISTRY, name) is known[0]:
            rows.append({"task": name, **known[1]})
        else:
            rows.append({"task": name, **task_listing(create_task(name))})
    return pd.DataFrame(rows)


def make_task(
    model: nn.Module,
    calib: torch.Tensor | Split,
    eval: Split | tuple,
    metric: Callable | Metric,
    *,
    name: str = "custom",
    kind: str = "classification",
    train: Split | tuple | None = None,
    source: str = "user data",
    pretrained: bool | None = None,
    epochs: int = 20,
    learning_rate: float = 3e-3,
    batch_size: int = 64,
) -> Task:
    """Bring your own model: an ``nn.Module`` + calibration inputs + eval (x, y) + metric.

    ``metric`` is ``fn(outputs, targets)`` or ``fn(outputs, targets, inputs)`` returning a float.
    Without ``train`` the model is taken as trained (``pretrained``). With ``train=(x, y)`` the
    float baseline is trained from the model's current weights on it (``epochs``, Adam at
    ``learning_rate``, seeded, cached like the built-in tasks' baselines) unless
    ``pretrained=True`` says the model is trained already (the train split then serves QAT and
    fine-tuning only).
    """
    from torch import nn

    from .data import Split, TaskData
    from .metrics import Metric

    if not isinstance(model, nn.Module):
        raise TaskError(f"model is a {type(model).__name__}; expected a torch.nn.Module")
    from ..infra.usercode import check_model

    check_model(model)
    if kind not in ("classification", "reconstruction", "embedding"):
        raise TaskError(f"kind {kind!r}; expected 'classification', 'reconstruction' or 'embedding'")
    calib_split = calib if isinstance(calib, Split) else Split(calib)
    eval_split = eval if isinstance(eval, Split) else Split(*eval)
    train_split = calib_split if train is None else (train if isinstance(train, Split) else Split(*train))
    if pretrained is None:
        pretrained = train is None
    if not pretrained and train is None:
        raise TaskError("pretrained=False needs train=(x, y) to train on; expected train data, or pretrained=True")
    if not pretrained and kind == "classification" and train_split.y is None:
        raise TaskError("train has inputs but no labels; expected train=(x, y) for a classification task")
    for label, n in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TaskError(f"{label} {n!r}; expected an integer >= 1")
    if not learning_rate > 0:
        raise TaskError(f"learning_rate {learning_rate!r}; expected a positive number")
    for label, split in (("calib", calib_split), ("eval", eval_split), ("train", train_split)):
        if len(split) == 0:
            raise TaskError(f"the {label} split is empty; expected at least one sample")
    data = TaskData(train_split, calib_split, eval_split, source=source)
    frozen = copy.deepcopy(model).eval()
    return Task(
        name=name,
        model_factory=lambda: copy.deepcopy(frozen),
        data_factory=lambda: data,
        metric=Metric.wrap(metric),
        kind=kind,
        input_shape=data.input_shape,
        data_source=source,
        pretrained=bool(pretrained),
        train_epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        input_dtype=calib_split.x.dtype,
        _data=data,
    )
