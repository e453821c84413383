"""Pruning sweeps: what each pruning level costs in accuracy and what it really saves.

Two kinds of rows, one DataFrame:

- per layer (``layer`` = a layer name): only that layer is pruned, at each sparsity. For
  structured pruning a layer stands for its channel group (the layers Torch-Pruning must prune
  with it, listed in ``group``), so each group is measured once; layers that cannot be pruned
  get a row whose ``status`` says why;
- global (``layer == "global"``): the whole model at each sparsity, starting with 0.0 (the
  unpruned model measured the same way, the reference of every curve). When the sweep fine-tunes
  pruned models, the reference is fine-tuned with the same recipe (epochs, learning rate, seed):
  extra training alone never reads as a gain from pruning, and ``metric_delta`` is against it.

Every row is measured for real: the task metric on the eval split (after an optional seeded
fine-tune), parameters and MACs of the pruned model, the share of zero weights, the bytes of
its exported float ONNX file and its onnxruntime latency (batch 1, one thread). Structured
pruning shrinks the last four; masks only zero weights, so their ONNX bytes stay those of the
dense model, as a deployment would see them.

Rows are kept in the sensitivity sweeps' :class:`~workbench.infra.store.ResultStore` (kind
``pruning``): a re-run returns stored rows, a killed sweep resumes.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path
from typing import Annotated, Callable

import pandas as pd
from pydantic import BeforeValidator, model_validator
from torch import nn
from tqdm.auto import tqdm

from ..tasks.data import check_calibration
from ..infra.errors import PruningError, SpecError
from ..tasks.evaluate import evaluate
from ..infra.executors import make_executor
from ..tasks.models import count_macs, count_params
from ..core.options import Flag, OptionModel, distinct, integer, names, raw
from ..tasks.model_inputs import LayerInputs
from ..core.pruning import PruningSpec, channel_groups, prunable_layers, prune
from ..core.spec import short_repr
from ..infra.store import ResultStore, SweepRecorder, resolve_store, row_problem, sweep_fingerprint
from ..infra.determinism import fixed_threads

COLUMNS = ["method", "criterion", "scope", "sparsity", "layer", "group", "metric", "metric_delta", "params", "macs", "weight_sparsity",
           "onnx_bytes", "latency_ms", "finetune_epochs", "seconds", "status"]
PRUNING_SWEEP_VERSION = "3"  # 2: a NaN / inf metric is status "nonfinite"; 3: the reference is fine-tuned as the pruned models


def _sparsity_list(v):
    try:
        levels = None if isinstance(v, (int, float, str, bytes, dict)) else tuple(v)
    except TypeError:
        levels = None
    if not levels:
        raise ValueError(f"expected a non-empty list of values in [0, 1); got {short_repr(v)}")
    return distinct(levels, "sparsity levels")


class PruningSweepConfig(OptionModel):
    """What to sweep (parameters only). Each (layer or global, sparsity) case is pruned with a
    :class:`PruningSpec` built from these fields (see :meth:`spec`), which checks them: the fields
    it takes are kept as given (so a sweep's fingerprint is that of the values passed)."""

    method: raw(str) = "structured"
    sparsities: Annotated[tuple[raw(float), ...], BeforeValidator(_sparsity_list)] = (0.25, 0.5, 0.75)
    per_layer: Flag = True
    global_sweep: Flag = True
    criterion: raw(str) = "l1"
    scope: raw(str | None) = None  # of the global rows; per-layer rows are always one layer
    m: raw(int) = 4
    layers: names("a list of layer names") | None = None  # per-layer rows only for these (default: every prunable layer)
    finetune_epochs: raw(int) = 0
    finetune_lr: raw(float | None) = None
    seed: raw(int) = 0
    latency_runs: integer(0) = 50  # 0: no latency measurement

    @model_validator(mode="after")
    def _cases(self):
        if not (self.per_layer or self.global_sweep):
            raise ValueError("per_layer and global_sweep are both off; expected at least one kind of row")
        for i, s in enumerate(self.sparsities):  # every case's spec must be valid before anything runs
            try:
                self.spec(s)
                if self.per_layer:
                    self.spec(s, "layer")
            except SpecError as exc:
                if str(exc).startswith(("sparsity", "N:M")):
                    raise ValueError(f"sparsities[{i}]: {exc}") from None
                raise
        return self

    def spec(self, sparsity: float, layer: str | None = None) -> PruningSpec:
        """The pruning of one case: the whole model (``layer`` None) or only ``layer``."""
        return PruningSpec.parse({"method": self.method, "sparsity": sparsity, "criterion": self.criterion, "m": self.m,
                                  "scope": "layer" if layer is not None else self.scope, "layers": None if layer is None else [layer],
                                  "finetune_epochs": self.finetune_epochs, "finetune_lr": self.finetune_lr, "seed": self.seed})

    def global_levels(self) -> list[float]:
        return sorted({0.0, *map(float, self.sparsities)})


def measure_model(task, model: nn.Module, latency_runs: int = 50, onnx: bool = True) -> dict:
    """Metric, parameters, MACs, zero-weight share and (with ``onnx``) float ONNX file bytes and
    onnxruntime latency of ``model``."""
    from ..export.onnx_io import export_float
    from ..export.verify import latency_ms

    example = task.example_input()
    weights = [m.weight.detach() for m in prunable_layers(model).values()]
    total = sum(w.numel() for w in weights)
    out = {"metric": evaluate(model, task), "params": count_params(model), "macs": int(sum(count_macs(model, example).values())),
           "weight_sparsity": float(sum(int((w == 0).sum()) for w in weights) / max(1, total))}
    if not onnx:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        path = export_float(model, example, Path(tmp) / "pruned.onnx")
        out["onnx_bytes"] = path.stat().st_size
        out["latency_ms"] = latency_ms(path, example, runs=latency_runs, warmup=10)["p50"] if latency_runs else math.nan
    return out


def _case_key(layer: str, sparsity: float) -> str:
    return f"{layer}|{sparsity!r}"


def stored_row_problem(key: str, row: dict) -> str | None:
    """Why a stored pruning row is unsound (a field of the wrong type, not the row of its case), or None."""
    problem = row_problem(row, numbers=("sparsity", "metric", "metric_delta", "params", "macs", "weight_sparsity", "onnx_bytes", "latency_ms",
                                        "finetune_epochs", "seconds"), texts=("method", "criterion", "scope", "layer", "group", "status"))
    if problem is None and _case_key(row["layer"], row["sparsity"]) != key:
        problem = f"its layer and sparsity ({row['layer']!r}, {row['sparsity']!r}) are not those of its case"
    if problem is None and row["status"] == "ok" and not _finite(row["metric"]):
        problem = f"status 'ok' with a metric of {row['metric']!r}"
    return problem


class _PruningWork:
    """A pruning sweep's payload: one case (layer or "global", sparsity) per unit, in any process."""

    def __init__(self, task, model: nn.Module, config: PruningSweepConfig):
        self.task, self.model, self.config = task, model, config
        self.reference: float | None = None  # the reference model's metric, computed once where a row needs it
        self._reference_model: nn.Module | None = None

    def reference_model(self) -> nn.Module:
        """The unpruned model as the pruned ones are trained: a copy fine-tuned with the config's
        recipe (epochs, learning rate, seed), or the model itself when the sweep does not fine-tune."""
        if self._reference_model is None:
            from ..tasks.baseline import train_float

            config, model = self.config, self.model
            if config.finetune_epochs:
                model = copy.deepcopy(model).eval()
                train_float(model, self.task, config.seed, config.finetune_epochs, False, lr=config.finetune_lr, desc="fine-tune unpruned")
                for p in model.parameters():
                    p.grad = None
                model.eval()
            self._reference_model = model
        return self._reference_model

    def row(self, case: tuple) -> dict:
        layer, group, sparsity, refused = case
        task, model, config = self.task, self.model, self.config
        if self.reference is None:
            self.reference = evaluate(self.reference_model(), task)
        t0 = time.perf_counter()
        is_reference = layer == "global" and sparsity == 0  # the unpruned model, fine-tuned as the pruned ones are
        spec = None if is_reference else config.spec(sparsity, None if layer == "global" else layer)
        base = {"method": config.method, "criterion": config.criterion, "scope": "layer" if spec is None else spec.resolved_scope,
                "sparsity": float(sparsity), "layer": layer, "group": group, "finetune_epochs": config.finetune_epochs}
        if refused:
            res = _empty(f"refused: {refused}")
        else:
            try:
                pruned = self.reference_model() if spec is None else prune(task, model, spec)
                res = measure_model(task, pruned, config.latency_runs)
                res["status"] = "ok" if _finite(res["metric"]) else "nonfinite"  # a metric function may return NaN / inf
                res["metric_delta"] = res["metric"] - self.reference
            except PruningError as exc:
                res = _empty(f"refused: {exc}")
        return {**base, **res, "seconds": time.perf_counter() - t0}


def _pruning_unit(work: _PruningWork, case: tuple) -> dict:
    return work.row(case)


@fixed_threads()
def pruning_sweep(task, model: nn.Module, config: PruningSweepConfig | None = None, *, store: ResultStore | None | bool = None,
                  progress: bool = True, on_row: Callable[[dict], None] | None = None, executor=None, tracking=None) -> pd.DataFrame:
    """Run a pruning sweep (see the module docstring); one row per (layer or "global", sparsity).

    ``store``: a :class:`ResultStore`, None for the default one, False for none. ``on_row(row)``
    is called for every row, stored rows first. ``executor``: where the cases run (see
    :mod:`workbench.infra.executors`); rows are the same on each, apart from measured times.
    ``tracking``: an MLflow URI or tracker (see :mod:`workbench.infra.tracking`). ``attrs`` hold the unpruned figures and how many
    rows were computed or came from the store.
    """
    import torch_pruning

    from ..infra.tracking import log_sweep, resolve_tracker

    config = config or PruningSweepConfig()
    tracker = resolve_tracker(tracking)
    model = model.eval()
    if config.layers is not None:
        prunable_layers(model, list(config.layers))  # unknown names: the closest valid ones
    check_calibration(task.data.calib.x)
    LayerInputs.check(model, task.data.calib.x)  # data that does not fit the model: one line, before any work
    store = resolve_store(store)  # a corrupt store is moved aside, a read-only one refused, before any work
    example = task.example_input()
    cases: list[tuple[str, str, float, str]] = []  # (layer, group, sparsity, refused)
    if config.per_layer:
        names = list(prunable_layers(model, None if config.layers is None else list(config.layers)))
        if config.method == "structured":
            groups = channel_groups(model, example).set_index("layer")
            seen = set()
            for name in names:
                members = tuple(sorted(groups.loc[name, "group"].split(", ")))
                if members in seen:
                    continue
                seen.add(members)
                cases += [(name, groups.loc[name, "group"], s, groups.loc[name, "refused"]) for s in config.sparsities]
        else:
            cases += [(name, name, s, "") for name in names for s in config.sparsities]
    if config.global_sweep:
        cases += [("global", "", s, "") for s in config.global_levels()]

    sweep = sweep_fingerprint("pruning", task, model, config.to_dict(), PRUNING_SWEEP_VERSION, torch_pruning=torch_pruning.__version__)
    rec = SweepRecorder(store, sweep, "pruning", on_row, check=stored_row_problem)
    keys = [_case_key(c[0], c[2]) for c in cases]
    units = [c for c, k in zip(cases, keys) if k not in rec.done]
    executor = make_executor(executor)
    rec.bar = tqdm(total=len(cases), desc=f"pruning {task.name}", disable=not progress)
    rec.replay(keys)
    for case, row in executor.run(_pruning_unit, _PruningWork(task, model, config), units):
        rec.put(_case_key(case[0], case[2]), row)
    rec.bar.close()
    df = pd.DataFrame(rec.ordered(keys), columns=COLUMNS)
    ref = df[(df["layer"] == "global") & (df["sparsity"] == 0)]
    df.attrs.update({"computed": rec.computed, "from_store": rec.from_store, "sweep": sweep, "task": task.name, "method": config.method,
                     "metric_name": task.metric.name, "executor": executor.describe(), **({f"fp_{k}": ref.iloc[0][k] for k in ("metric", "params", "macs", "onnx_bytes", "latency_ms")}
                                                        if len(ref) else {})})
    log_sweep(tracker, "pruning", task, config, df)
    return df


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _empty(status: str) -> dict:
    return {"metric": math.nan, "metric_delta": math.nan, "params": math.nan, "macs": math.nan, "weight_sparsity": math.nan,
            "onnx_bytes": math.nan, "latency_ms": math.nan, "status": status}


def reduction(df: pd.DataFrame) -> pd.DataFrame:
    """The global rows with params / MACs / ONNX bytes as fractions of the unpruned model's."""
    glob = df[df["layer"] == "global"].sort_values("sparsity").copy()
    ref = glob[glob["sparsity"] == 0]
    if ref.empty:
        raise SpecError("the sweep has no global row at sparsity 0; run it with global_sweep=True")
    for col in ("params", "macs", "onnx_bytes"):
        glob[f"{col}_ratio"] = glob[col] / float(ref.iloc[0][col])
    return glob.reset_index(drop=True)

