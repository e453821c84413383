"""Architecture search on a budget: per-stage channel widths and per-layer weight bits, searched
jointly and measured.

The model's prunable channel groups (:func:`workbench.core.pruning.channel_groups`; residual adds and
depthwise convolutions tie layers into one group) are cut into at most ``max_stages`` stages in
network order. Each stage gets a width knob (keep 1.0 / 0.75 / 0.5 of its channels), each
Conv/Linear layer a weight bit-width. An Optuna sampler (NSGA-II by default, TPE on request)
proposes a configuration; it is pruned (Torch-Pruning, :class:`~workbench.core.pruning.PruningSpec`
with ``layer_sparsity``), fine-tuned (``finetune_epochs``, seeded), quantised (PTQ at ``act_bits``)
and measured on the task's evaluation data. The two objectives are the measured metric (maximised)
and a cost kind (minimised): a computed kind of :data:`workbench.core.cost.COST_KINDS` (``macs``,
``weight_kib``, ``bops``, ...) of the pruned model, or a kind a deployment ``target`` measures
(``workbench.search.cost_tables.measure_point``), or one a ``cost_fn`` returns. ``budgets`` are hard
limits: a trial over one is recorded, marked infeasible and passed to the sampler as a violated
constraint. Pruned, fine-tuned models are cached per width choice within a run, so trials sharing
widths prune and fine-tune once.

The study lives in the output folder (``out/study/<fingerprint>.journal``, an Optuna journal
file): a run killed mid-way (even by SIGKILL) and started again with the same arguments continues
it: completed trials are read back, not recomputed; a trial the kill left running is run again
with the same parameters; the run stops when ``n_trials`` trials are complete. The sampler is
re-seeded before each trial from the seed and the number of completed trials, so a resumed run
proposes what an uninterrupted one would. ``out/trials.csv`` holds the rows at the end.

>>> df = width_search(task, model, out="runs/widths", n_trials=16, objective_kind="macs")
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from collections.abc import Callable
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from pydantic import BeforeValidator, Field, field_validator
from torch import nn
from tqdm.auto import tqdm

from ..core.cost import COST_KINDS, get_cost_kind, layer_costs
from ..infra.errors import SpecError
from ..core.formats import ALLOWED_BITS
from ..core.options import Flag, OptionModel, choice, integer, number, raw
from ..export.pipeline import PTQConfig

WIDTH_SEARCH_VERSION = "1"
SAMPLERS = ("nsga2", "tpe")
CRITERIA = ("l1", "l2", "taylor", "bn_scale")
STUDY_DIR = "study"
STUDY_FILES = ("*.journal", "*.journal.lock", "*.journal.lock*.rename")  # the Optuna journal and its lock files: all it writes


def _nonempty(what: str):
    def check(v):
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
            raise ValueError(f"expected a list of {what}")
        if not v:
            raise ValueError(f"expected at least one of {what}; got an empty list")
        if len(set(v)) != len(v):
            raise ValueError(f"expected distinct {what}; got {list(v)}")
        return tuple(v)

    return check


def _share(v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (0.0 < float(v) <= 1.0):
        raise ValueError(f"expected a share of channels kept in (0, 1]; got {v!r}")
    return float(v)


def _bits(v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) not in ALLOWED_BITS:
        raise ValueError(f"expected a weight bit-width in {', '.join(map(str, ALLOWED_BITS))}; got {v!r}")
    return int(v)


Shares = Annotated[tuple[Annotated[float, BeforeValidator(_share)], ...], BeforeValidator(_nonempty("widths (shares of channels kept)"))]
BitList = Annotated[tuple[Annotated[int, BeforeValidator(_bits)], ...], BeforeValidator(_nonempty("weight bit-widths"))]


class WidthSearchConfig(OptionModel):
    """Parameters of a width-and-bits search (parameters only).

    ``widths``: shares of each stage's channels kept (1.0 = unpruned); ``bits``: per-layer weight
    bit-widths; ``objective_kind``: the cost kind minimised; ``budgets``: hard limits
    ``{kind: value}``; ``target``: a deployment target whose measured kinds join the computed
    ones; ``max_stages``: at most this many width knobs; ``population_size``: NSGA-II's."""

    bits: BitList = (8, 4)
    widths: Shares = (1.0, 0.75, 0.5)
    n_trials: integer(1) = 20
    objective_kind: str = "macs"
    budgets: raw(dict[str, float] | None) = None
    target: str | None = None
    act_bits: integer(2, 16) = 8
    finetune_epochs: integer(0) = 1
    finetune_lr: number("a learning rate > 0", gt=0) | None = None
    criterion: choice(CRITERIA) = "l1"
    max_stages: integer(1, 16) = 6
    sampler: choice(SAMPLERS) = "nsga2"
    population_size: integer(2) = 8
    anchors: Flag = True  # the study starts with the unpruned model at the widest and at the narrowest bits: reference points
    seed: integer(0) = 0
    ptq: PTQConfig = Field(default_factory=PTQConfig)

    @field_validator("objective_kind")
    @classmethod
    def _kind(cls, v):
        try:
            get_cost_kind(v)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v):
        if v is None:
            return v
        if not isinstance(v, dict):
            raise ValueError(f"expected a mapping of cost kind to limit; got {type(v).__name__}")
        for kind, value in v.items():
            try:
                get_cost_kind(kind)
            except SpecError as exc:
                raise ValueError(str(exc)) from None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{kind}: expected a finite number > 0; got {value!r}")
        return {k: float(x) for k, x in v.items()}

    def fingerprint_config(self) -> dict:
        """What identifies the study: everything but ``n_trials`` (a larger one continues it)."""
        d = self.to_dict()
        d.pop("n_trials")
        return d


# ----------------------------------------------------------------------------- the search space


def stages(model: nn.Module, example: torch.Tensor, max_stages: int = 6) -> dict[str, list[str]]:
    """``{stage: [layer, ...]}``: the prunable channel groups in network order, one layer named per
    group, joined into at most ``max_stages`` runs of neighbouring groups; a stage is named after
    its first layer. Groups whose channels are the model's output are left out."""
    from ..core.pruning import channel_groups

    groups = channel_groups(model, example)
    reps: list[str] = []
    seen: set[str] = set()
    for row in groups.itertuples():
        if row.refused or row.group in seen:
            continue
        seen.add(row.group)
        reps.append(row.group.split(", ")[0])
    if not reps:
        raise SpecError(f"{type(model).__name__} has no channel group that can be pruned; a width search needs one")
    chunks = [list(c) for c in np.array_split(np.array(reps, dtype=object), min(max_stages, len(reps))) if len(c)]
    return {c[0]: c for c in chunks}


def _check_widths(model: nn.Module, plan: dict[str, list[str]], widths: tuple[float, ...]) -> None:
    for layers in plan.values():
        for layer in layers:
            mod = model.get_submodule(layer)
            channels = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
            for keep in widths:
                if int(channels * keep) < 1:
                    raise SpecError(f"widths: keeping {keep:g} of {layer}'s {channels} channels leaves none; expected a share >= {1 / channels:.3g}")


def width_spec(plan: dict[str, list[str]], choice_: dict[str, float], config: WidthSearchConfig):
    """The :class:`~workbench.core.pruning.PruningSpec` of a width choice (``{stage: share kept}``), or
    None when every stage keeps all its channels."""
    from ..core.pruning import PruningSpec

    shares = {layer: round(1.0 - choice_[stage], 12) for stage, layers in plan.items() for layer in layers if choice_[stage] < 1.0}
    if not shares:
        return None
    return PruningSpec(method="structured", layer_sparsity=shares, criterion=config.criterion, finetune_epochs=config.finetune_epochs,
                       finetune_lr=config.finetune_lr, seed=config.seed)


# ----------------------------------------------------------------------------- costs


def computed_costs(task, model: nn.Module, assignment: dict[str, int], act_bits: int = 8) -> dict[str, float]:
    """Every computed cost kind (and ``params``, ``peak_act_bytes``) of ``model`` at ``assignment``."""
    from ..core.cost import cost_table, totals

    return totals(cost_table(layer_costs(model, task.example_input()), assignment, act_bits))


def _target_costs(target: str | None, config: WidthSearchConfig) -> Callable | None:
    """``f(task, model, assignment) -> {kind: value}`` measuring on ``target``, or None."""
    if target is None:
        return None
    from .cost_tables import get_cost_source, measure_point

    get_cost_source(target)  # an unknown target or a missing toolchain: one line, before any trial
    return lambda task, model, assignment: measure_point(task, model, assignment, target, config.act_bits)


def _check_kinds(config: WidthSearchConfig, measured_by: bool) -> None:
    for where, kind in [("objective_kind", config.objective_kind), *((f"budgets.{k}", k) for k in (config.budgets or {}))]:
        if get_cost_kind(kind).measured and not measured_by:
            raise SpecError(f"{where}: cost kind {kind!r} is measured, not computed; name a target (target='onnxruntime') or give cost_fn, "
                            f"or use a computed kind ({', '.join(k for k, c in COST_KINDS.items() if not c.measured)})")


# ----------------------------------------------------------------------------- the study


def _sampler(config: WidthSearchConfig, done: int):
    """The sampler for the trial after ``done`` completed ones: seeded from (seed, done), so a
    resumed study proposes what an uninterrupted one would."""
    import optuna

    seed = int(np.random.SeedSequence([config.seed, done]).generate_state(1)[0])
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.population_size, multivariate=True)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=config.population_size)


def _open_study(journal: Path, name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    lock = Path(str(journal) + ".lock")
    if lock.exists() or lock.is_symlink():  # left by a run killed mid-write; RunDir lets one run at a time in here
        lock.unlink()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal))))
    return optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"], load_if_exists=True)


def _rerun_killed(study) -> int:
    """Trials a kill left RUNNING become FAIL and are queued again with their parameters."""
    from optuna.trial import TrialState

    storage = study._storage
    killed = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in killed:
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})
        again = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
        for key, value in t.system_attrs.items():  # the sampler's own marks (NSGA-II's generation): the re-run takes its place
            if key.startswith(("NSGAIISampler:", "TPESampler:")):
                storage.set_trial_system_attr(again._trial_id, key, value)
    return len(killed)


def _enqueue_anchors(study, plan: dict, layers: list[str], config: WidthSearchConfig) -> None:
    """The unpruned model at the largest and the smallest bit-width, first in the study (and in
    NSGA-II's first generation)."""
    from optuna.trial import TrialState

    widest = {f"width:{stage}": max(config.widths) for stage in plan}
    queued = {t.user_attrs.get("anchor") for t in study.get_trials(deepcopy=False)}  # a run killed while queueing them queued some
    for b in dict.fromkeys((max(config.bits), min(config.bits))):
        if b in queued:
            continue
        study.enqueue_trial({**widest, **{f"bits:{layer}": b for layer in layers}}, user_attrs={"anchor": b})
        if config.sampler == "nsga2":  # enqueued trials skip the sampler, which would leave them out of every generation
            last = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
            study._storage.set_trial_system_attr(last._trial_id, "NSGAIISampler:generation", 0)


def _cost_row(costs: dict) -> dict:
    first = {k: costs[k] for k in ("weight_kib", "bops", "peak_act_bytes") if k in costs}
    return {**first, **{k: v for k, v in costs.items() if k not in first}}


def _params(params: dict, prefix: str) -> str:
    return json.dumps({k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}, sort_keys=True)


def _rows(study, config: WidthSearchConfig) -> pd.DataFrame:
    from .front import pareto_mask

    kind = config.objective_kind
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        costs = a.get("costs", {})
        if "widths" not in a:  # a trial the kill interrupted: what it was asked to try
            a = {**a, "widths": _params(t.params, "width:"), "bits": _params(t.params, "bits:")}
        rows.append({"trial": t.number, "kind": "width", "budget": costs.get(kind, math.nan), **_cost_row(costs),
                     "estimated_metric": math.nan, "estimated_error": math.nan, "measured_metric": a.get("measured_metric", math.nan),
                     "pruned_metric": a.get("pruned_metric", math.nan), "bits": a.get("bits", ""), "widths": a.get("widths", ""),
                     "bound_by": ", ".join(a.get("over", [])), "feasible": t.state.name == "COMPLETE" and not a.get("over"),
                     "on_front": False, "latency_ms": costs.get("latency_ms", math.nan), "pruning": a.get("pruning", ""),
                     "state": t.state.name, "seconds": a.get("seconds", math.nan), "reused": a.get("reused_from", -1)})
    df = pd.DataFrame(rows)
    if len(df):
        ok = df["feasible"].to_numpy()
        front = np.zeros(len(df), bool)
        front[ok] = pareto_mask(df.loc[ok, kind].to_numpy(float), df.loc[ok, "measured_metric"].to_numpy(float))
        df["on_front"] = front
    return df


def width_search(task, model: nn.Module, *, out: str | Path, bits=(8, 4), widths=(1.0, 0.75, 0.5), n_trials: int = 20,
                 objective_kind: str = "macs", budgets: dict[str, float] | None = None, target: str | None = None,
                 finetune_epochs: int = 1, seed: int = 0, config: WidthSearchConfig | None = None,
                 cost_fn: Callable | None = None, overwrite: bool = False, progress: bool = True) -> pd.DataFrame:
    """Search per-stage channel widths and per-layer weight bits jointly; every trial measured.

    ``config`` (a :class:`WidthSearchConfig`) replaces the keyword parameters it holds.
    ``cost_fn(task, pruned_model, assignment) -> {kind: value}`` adds (or overrides) cost kinds.
    ``out``: the run's folder (new, empty, or this search's own: then the study continues).

    Returns one row per trial: ``trial``, ``kind`` ("width"), ``budget`` (the objective kind's
    value), one column per cost kind, ``measured_metric`` (quantised), ``pruned_metric`` (float,
    after pruning and fine-tuning), ``bits`` and ``widths`` (JSON), ``bound_by`` (the budgets it
    breaks), ``feasible``, ``on_front`` (Pareto front of the feasible trials on the objective kind
    and the measured metric), ``latency_ms``, ``pruning`` (the PruningSpec as JSON, "" unpruned),
    ``state`` (COMPLETE, or FAIL for a trial a kill interrupted and that was run again),
    ``seconds`` and ``reused`` (the earlier trial of the same configuration whose measurement it
    took, or -1). Put it beside a bits-only search with
    ``workbench.search.front.join_points(points, df[df.feasible])``. ``df.attrs``: ``stages``,
    ``computed`` (trials measured by this call), ``resumed`` (completed trials read back),
    ``fp_metric``, ``budget_kind``, ``journal``.
    """
    from ..infra.determinism import fixed_threads
    from ..infra.outdir import RunDir
    from ..infra.store import sweep_fingerprint

    if config is None:
        config = WidthSearchConfig(bits=bits, widths=widths, n_trials=n_trials, objective_kind=objective_kind, budgets=budgets,
                                   target=target, finetune_epochs=finetune_epochs, seed=seed)
    elif not isinstance(config, WidthSearchConfig):
        raise SpecError(f"config is a {type(config).__name__}; expected a WidthSearchConfig")
    if cost_fn is not None and not callable(cost_fn):
        raise SpecError(f"cost_fn is a {type(cost_fn).__name__}; expected a function (task, model, assignment) -> {{kind: value}}")
    measure_target = _target_costs(config.target, config)
    _check_kinds(config, measure_target is not None or cost_fn is not None)
    example = task.example_input()
    model = model.eval()
    plan = stages(model, example, config.max_stages)
    _check_widths(model, plan, config.widths)
    layers = list(layer_costs(model, example))
    fn_name = None if cost_fn is None else f"{getattr(cost_fn, '__module__', '')}.{getattr(cost_fn, '__qualname__', repr(cost_fn))}"
    fp = sweep_fingerprint("width_search", task, model, config.fingerprint_config(), WIDTH_SEARCH_VERSION, cost_fn=fn_name)
    run_dir = RunDir(out, overwrite=overwrite, keep={STUDY_DIR: STUDY_FILES}, resume=f"width_search:{fp}", command="width_search")

    with fixed_threads(), run_dir as work:
        root = run_dir.claim()  # an earlier search's folder (overwrite): its journals go, the workbench's only
        (root / STUDY_DIR).mkdir(exist_ok=True)
        journal = root / STUDY_DIR / f"{fp}.journal"
        study = _open_study(journal, f"width_search-{fp}")
        from optuna.trial import TrialState

        if config.anchors and not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL)):
            _enqueue_anchors(study, plan, layers, config)
        _rerun_killed(study)
        def complete():
            return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

        resumed = len(complete())
        fp_metric = _metric(task, model)
        measured = {t.user_attrs["key"]: t for t in complete()}
        pruned_cache: dict[str, tuple] = {}
        computed = 0
        bar = tqdm(total=config.n_trials, initial=min(resumed, config.n_trials), desc=f"width search {task.name}", disable=not progress)
        while len(complete()) < config.n_trials:
            study.sampler = _sampler(config, len(complete()))
            trial = study.ask()
            try:
                choice_ = {stage: float(trial.suggest_categorical(f"width:{stage}", list(config.widths))) for stage in plan}
                assignment = {layer: int(trial.suggest_categorical(f"bits:{layer}", list(config.bits))) for layer in layers}
                key = json.dumps({"widths": choice_, "bits": assignment}, sort_keys=True)
                if key in measured:
                    attrs = {**measured[key].user_attrs, "reused_from": measured[key].number}
                else:
                    attrs = _measure(task, model, plan, choice_, assignment, config, pruned_cache, measure_target, cost_fn)
                    computed += 1
                attrs["key"] = key
                for k, v in attrs.items():
                    trial.set_user_attr(k, v)
                costs = attrs["costs"]
                if config.objective_kind not in costs:
                    raise SpecError(f"objective_kind {config.objective_kind!r}: the costs of a trial hold no such kind; they hold {', '.join(costs)}")
                for kind, limit in (config.budgets or {}).items():
                    if kind not in costs:
                        raise SpecError(f"budgets.{kind}: the costs of a trial hold no such kind; they hold {', '.join(costs)}")
                    trial.set_constraint(kind, costs[kind] - limit)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            metric = attrs["measured_metric"]
            study.tell(trial, [metric if math.isfinite(metric) else -math.inf, float(costs[config.objective_kind])])
            measured.setdefault(key, study._storage.get_trial(trial._trial_id))
            bar.update()
        bar.close()
        df = _rows(study, config)
        df.to_csv(work / "trials.csv", index=False)
    df.attrs.update({"task": task.name, "budget_kind": config.objective_kind, "objective_kind": config.objective_kind, "budgets": dict(config.budgets or {}),
                     "target": config.target, "stages": plan, "fp_metric": fp_metric, "act_bits": config.act_bits, "computed": computed,
                     "resumed": resumed, "journal": str(Path(out) / STUDY_DIR / journal.name), "limits": {}})
    return df


def _metric(task, model: nn.Module) -> float:
    from ..tasks.evaluate import predict

    return float(task.score(predict(model, task.data.eval.x), task.data.eval))


def _measure(task, model, plan, choice_, assignment, config: WidthSearchConfig, cache: dict, measure_target, cost_fn) -> dict:
    """Prune (cached per width choice), quantise and measure one configuration: the trial's attrs."""
    from ..core.pruning import prune
    from .measuring import measure

    start = time.perf_counter()
    wkey = json.dumps(choice_, sort_keys=True)
    if wkey not in cache:
        spec = width_spec(plan, choice_, config)
        pruned = model if spec is None else prune(task, model, spec)
        cache[wkey] = (pruned, spec, _metric(task, pruned))
    pruned, spec, pruned_metric = cache[wkey]
    costs = {k: float(v) for k, v in computed_costs(task, pruned, assignment, config.act_bits).items()}
    if measure_target is not None:
        costs.update({k: float(v) for k, v in measure_target(task, pruned, assignment).items()})
    if cost_fn is not None:
        extra = cost_fn(task, pruned, assignment)
        if not isinstance(extra, dict):
            raise SpecError(f"cost_fn returned a {type(extra).__name__}; expected a mapping of cost kind to value")
        for k in extra:
            get_cost_kind(k)
        costs.update({k: float(v) for k, v in extra.items()})
    metric = float(measure(task, pruned, assignment, config.act_bits, config.ptq))
    over = [k for k, limit in (config.budgets or {}).items() if k in costs and costs[k] > limit * (1 + 1e-12)]
    return {"costs": costs, "measured_metric": metric, "pruned_metric": pruned_metric, "bits": json.dumps(assignment, sort_keys=True),
            "widths": json.dumps(choice_, sort_keys=True), "pruning": "" if spec is None else json.dumps(spec.to_dict(), sort_keys=True),
            "over": over, "seconds": time.perf_counter() - start}


__all__ = ["WIDTH_SEARCH_VERSION", "WidthSearchConfig", "computed_costs", "stages", "width_search", "width_spec"]
