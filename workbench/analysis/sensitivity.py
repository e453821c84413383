"""Per-layer sensitivity: what quantising each layer costs, one tidy DataFrame row per case.

Modes:

- ``quantise-one``: only layer L is quantised (weights at each of ``weight_bits``; its input at
  each of ``act_bits``; ``None`` = float; a number format name such as ``"fp8_e4m3"`` is a case
  like a bit-width, :mod:`workbench.core.formats`), the rest of the network stays float;
- ``leave-one-float``: everything is quantised at the ``base`` spec except layer L's weights.

Embedding tables are not varied: they are never a case's layer L. In ``leave-one-float`` mode a
``base`` spec that quantises them (``embedding_bits``) keeps them quantised in every case; in
``quantise-one`` mode they stay float like the rest of the network.

Each case gives the task metric and label-free comparisons with the float outputs (SQNR, MSE,
KL), so tasks without labels work too.

The engine caches the activations at the input of layer L and runs only the network from L
onward, swapping in a quantised (or float) L built on its own, instead of building, calibrating
and running a whole quantised model per case. Activation quantisers are calibrated on float
activations (as Brevitas's calibration mode does), so the result is identical to the full
rebuild; ``engine="naive"`` runs that full rebuild and the tests check the two agree. A
weight-only setting runs as a plain layer holding the quantised weight (computed once, not per
pass). Passes are sized by bytes and a layer's settings stacked along the batch where the eval
data is smaller than one pass (:mod:`workbench.analysis.batching`); the cached activations stay within
``config.max_cache_mb`` (beyond it, a layer's data is taken a few passes at a time, recomputed).

Models fx cannot trace (most Hugging Face models) get the ``block`` engine in quantise-one mode:
the float outputs of the model's repeated blocks (encoder layers), of the modules beside them
(embeddings) and of the blocks' parts (attention, feed-forward) are captured once; a case for
layer L replays those that return before L is first called and runs the rest, with only L
replaced by the quantised layer the per-module path builds. Where no blocks are found, or they
are not called once each per forward (``engine="swap"`` asks for this too), the ``swap`` engine
runs the whole float model per case with only L replaced. Other cases the graph cannot be cut at
(reused modules, leave-one-float on an untraceable model) fall back to full runs
(``engine="full"``). A warning says which engine runs where the cut one cannot, and why.

A sweep runs one unit per layer (that layer's cases) on an executor (:mod:`workbench.infra.executors`:
in this process by default, a process pool or Ray); the rows are the same on each.

Results persist in a :class:`~workbench.infra.store.ResultStore` keyed by a fingerprint of the model
weights, the data, the configuration and the code version: a re-run returns stored rows, and a
sweep killed mid-way resumes where it stopped.

This module holds the configuration (:class:`SensitivityConfig`, its checks against a model) and
the sweep (:func:`sensitivity`); the parts live beside it: one case's settings, layer versions
and scoring in :mod:`workbench.analysis.sensitivity_cases`, the cut engine in
:mod:`workbench.analysis.sensitivity_cut`, the swap and block engines in
:mod:`workbench.analysis.sensitivity_swap`, Hessian traces in :mod:`workbench.analysis.hessian`.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Annotated, Callable

import pandas as pd
from pydantic import BeforeValidator, Field, model_validator
from torch import nn
from tqdm.auto import tqdm

from ..core.formats import ALLOWED_BITS, FORMATS, INT, fixed_width_formats
from ..core.options import Flag, OptionModel, choice, distinct, names, number
from ..core.quantize import default_layer_quant, quantisable_layers, validate_spec
from ..core.spec import QuantSpec
from ..export.pipeline import PTQConfig
from ..infra.determinism import fixed_threads
from ..infra.errors import SpecError, UserCodeError
from ..infra.store import ResultStore, SweepRecorder, resolve_store, row_problem, sweep_fingerprint as store_fingerprint
from ..tasks.data import check_calibration
from ..tasks.evaluate import predict
from ..tasks.model_inputs import LayerInputs
from ..tasks.models import count_macs, module_calls
from .hessian import hessian_traces
from .sensitivity_cases import _CASE_ERRORS, bits_and_format, case_key, compare_outputs, naive_case
from .sensitivity_cut import _Engine
from .sensitivity_swap import _SwapEngine

MODES = ("quantise-one", "leave-one-float")
ENGINES = ("cut", "swap", "naive")  # "swap": as "cut", but untraceable models rerun every block per case (no block replay)
COLUMNS = ["layer", "layer_type", "depth", "params", "macs", "weight_bits", "act_bits", "weight_format", "act_format", "mode", "metric",
           "metric_delta", "sqnr_db", "output_mse", "kl", "seconds", "engine", "status"]
SENSITIVITY_VERSION = "3"  # 2: a NaN / inf metric is status "nonfinite"; 3: weight_format / act_format columns


def _check_entry(value, what: str, i: int, scale_type: str):
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value in ALLOWED_BITS):
        return
    if isinstance(value, str) and value in fixed_width_formats():
        if scale_type not in FORMATS[value].scale_types:
            raise SpecError(f"{what}[{i}]: format {value!r} takes scale_type {', '.join(FORMATS[value].scale_types)}; the base spec's is {scale_type!r}")
        return
    raise SpecError(f"{what}[{i}]: expected an integer in 2-8 or 16, a number format ({', '.join(fixed_width_formats())}) or None for float; got {value!r}")


def _sweep_bits(b):
    """One case of a sweep: an allowed integer, a fixed-width number format's name, or None for float."""
    if b is None or (isinstance(b, int) and not isinstance(b, bool) and b in ALLOWED_BITS) or (isinstance(b, str) and b in fixed_width_formats()):
        return b
    raise ValueError(f"expected an integer in 2-8 or 16, a number format ({', '.join(fixed_width_formats())}) or None for float")


def _bit_list(v):
    if isinstance(v, (int, str)) or v is None:
        raise ValueError("expected a list of bit-widths")
    if isinstance(v, (list, tuple)) and not v:
        raise ValueError("expected at least one bit-width; got an empty list")
    return distinct(v, "bit-widths") if isinstance(v, (list, tuple)) else v


SweepBits = Annotated[tuple[Annotated[int | str | None, BeforeValidator(_sweep_bits)], ...], BeforeValidator(_bit_list)]


class SensitivityConfig(OptionModel):
    """What to sweep (parameters only)."""

    weight_bits: SweepBits = (2, 3, 4, 6, 8)  # None in the tuple = weights float; a fixed-width format name (fp8_e4m3) is a case too
    act_bits: SweepBits = (None,)  # bits of the activation L reads; None = float
    mode: choice(MODES) = "quantise-one"
    base: QuantSpec = Field(default_factory=QuantSpec)  # leave-one-float: the rest; both: granularity and scale type
    layers: names("a list of layer names") | None = None  # None: every quantisable layer
    ptq: PTQConfig = Field(default_factory=PTQConfig)
    hessian: Flag = False
    max_cache_mb: number("a positive number of MB", gt=0) | None = 512.0  # cached activations; beyond it, recomputed (None: no limit)

    @model_validator(mode="after")
    def _formats_fit_the_scale_type(self):
        for what in ("weight_bits", "act_bits"):
            for i, b in enumerate(getattr(self, what)):
                _check_entry(b, what, i, self.base.scale_type)
        return self

    def cases(self) -> list[tuple]:
        """``(w, a)`` per case: bits, None (float) or a fixed-width format name."""
        if self.mode == "leave-one-float":
            d = default_layer_quant(self.base)
            return [(None, d.act_bits if d.act_format == INT or d.act_bits is None else d.act_format)]
        return [(w, a) for w in self.weight_bits for a in self.act_bits if (w, a) != (None, None)]


def parse_bits(text: str, what: str = "bits") -> tuple:
    """``"2,4,8,fp8_e4m3"`` -> ``(2, 4, 8, "fp8_e4m3")``; ``float`` -> None; a fixed-width number
    format's name stays a name; anything else raises :class:`SpecError`."""
    out = []
    for i, part in enumerate(p.strip() for p in str(text).split(",")):
        if part == "float":
            out.append(None)
        elif part.isdigit() and int(part) in ALLOWED_BITS:
            out.append(int(part))
        elif part in fixed_width_formats():
            out.append(part)
        else:
            raise SpecError(f"{what}[{i}]: expected an integer in 2-8 or 16, a number format ({', '.join(fixed_width_formats())}) or 'float'; got {part!r}")
    return tuple(out)


def fingerprint_settings(config: SensitivityConfig) -> dict:
    """The configuration's share of a sweep's fingerprint: every parameter but ``max_cache_mb``,
    which changes how the rows are computed, not what they are (stored sweeps stay valid)."""
    return {k: v for k, v in config.to_dict().items() if k != "max_cache_mb"}


def sweep_fingerprint(task, model: nn.Module, config: SensitivityConfig) -> str:
    return store_fingerprint("sensitivity", task, model, fingerprint_settings(config), SENSITIVITY_VERSION)


def stored_row_problem(key: str, row: dict) -> str | None:
    """Why a stored sensitivity row is unsound (a number edited to text, a bit-width to null: it no
    longer is the row of its case), or None; what :class:`~workbench.infra.store.ResultStore` checks on read."""
    problem = row_problem(row, numbers=("depth", "params", "macs", "metric", "metric_delta", "sqnr_db", "output_mse", "kl", "seconds"),
                          texts=("layer", "layer_type", "mode", "engine", "status"), optional_texts=("weight_format", "act_format"),
                          bits=("weight_bits", "act_bits"))
    if problem is None and "hessian_trace" in row:
        problem = row_problem(row, numbers=("hessian_trace",))
    if problem is not None:
        return problem
    pairs = ((row["weight_bits"], row["weight_format"]), (row["act_bits"], row["act_format"]))
    sound = all((b is None and f is None) or (f == INT and b is not None) or (f in fixed_width_formats() and b == FORMATS[f].fixed_bits)
                for b, f in pairs)
    if not sound or case_key(row["layer"], *(b if f in (None, INT) else f for b, f in pairs), row["mode"]) != key:
        return f"its layer, bits and formats ({row['layer']!r}, w {row['weight_bits']!r}, a {row['act_bits']!r}) are not those of its case"
    if row["status"] == "ok" and not math.isfinite(row["metric"]):
        return f"status 'ok' with a metric of {row['metric']!r}"
    return None


class _SensitivityWork:
    """A sensitivity sweep's payload: everything a unit (one layer's cases) needs, in any process.
    Engines are built lazily where the unit runs and are not shipped to workers."""

    def __init__(self, task, model, config, engine, fp_out, fp_metric, macs, order, hessian, all_layers):
        self.task, self.model, self.config, self.engine = task, model, config, engine
        self.fp_out, self.fp_metric, self.macs, self.order, self.hessian, self.all_layers = fp_out, fp_metric, macs, order, hessian, all_layers
        self._engines = None
        self.note = ""

    def __getstate__(self):
        return {**self.__dict__, "_engines": None}

    def engines(self):
        """``(cut engine, swap / block engine)``, built on first use (the second only where fx
        cannot trace the model); a warning says which engine runs where the cut one cannot, and why."""
        if self._engines is None:
            eng = _Engine(self.task, self.model, self.config) if self.engine in ("cut", "swap") else None
            swap = None
            if eng is not None and eng.runner is None:
                if _SwapEngine.applies(self.config):
                    swap = _SwapEngine(self.task, self.model, self.config, blocks=self.engine == "cut")
                    if swap.blocks:
                        self.note = f"block engine: {eng.reason}; {len(swap.cached)} modules ({len(swap.blocks)} blocks) replayed from cache"
                    else:
                        self.note = f"swap engine: {eng.reason}; {swap.reason}: every case runs the whole model"
                else:
                    self.note = f"full runs: {eng.reason}; the swap and block engines cover quantise-one without bias correction or equalisation only"
                if self.engine == "cut":
                    warnings.warn(self.note, stacklevel=4)
            elif eng is not None:
                eng.check_budget(list(self.all_layers))
            self._engines = (eng, swap)
        return self._engines

    def info(self, layer: str) -> dict:
        kind, depthwise = self.all_layers[layer]
        mod = self.model.get_submodule(layer)
        return {"layer": layer, "layer_type": kind + (" (depthwise)" if depthwise else ""), "depth": self.order.get(layer, 0),
                "params": sum(p.numel() for p in mod.parameters(recurse=False)), "macs": self.macs.get(layer, 0)}

    def layer_rows(self, unit: tuple) -> list[tuple[str, dict]]:
        """The rows of one unit ``(layer, ((w, a), ...))``: the cases of one layer still to compute.
        ``seconds`` is the layer's time shared equally by its cases (they may run in one pass)."""
        layer, cases = unit
        eng, swap = self.engines()
        cut = eng is not None and eng.can_cut(layer)
        info, config, task = self.info(layer), self.config, self.task
        split = task.data.eval
        t0 = time.perf_counter()
        if cut:
            eng.move_to(layer)
            outs, engine = eng.run_layer(layer, list(cases)), "cut"
        elif swap is not None:
            outs, engine = swap.run_layer(layer, list(cases)), ("block" if swap.cut_at(layer) > 0 else "swap")
        else:
            outs, engine = [], ("naive" if self.engine == "naive" else "full")
            for w, a in cases:
                try:
                    outs.append(naive_case(task, self.model, config, layer, w, a))
                except _CASE_ERRORS as exc:
                    if isinstance(exc, (SpecError, UserCodeError)):  # a bad spec, or the user's metric: not a case's outcome
                        raise
                    outs.append(exc)
        seconds = (time.perf_counter() - t0) / max(len(cases), 1)
        out_rows = []
        for (w, a), out in zip(cases, outs):
            try:
                if isinstance(out, Exception):
                    raise out
                res = compare_outputs(task, out, self.fp_out, self.fp_metric, split)
            except _CASE_ERRORS as exc:
                if isinstance(exc, (SpecError, UserCodeError)):  # a bad spec, or the user's metric: not a case's outcome
                    raise
                res = {"metric": math.nan, "metric_delta": math.nan, "sqnr_db": math.nan, "output_mse": math.nan, "kl": math.nan,
                       "status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
            (wb, wf), (ab, af) = bits_and_format(w), bits_and_format(a)
            row = {**info, "weight_bits": wb, "act_bits": ab, "weight_format": wf, "act_format": af, "mode": config.mode, **res,
                   "seconds": seconds, "engine": engine}
            if config.hessian:
                row["hessian_trace"] = self.hessian.get(layer, math.nan)
            out_rows.append((case_key(layer, w, a, config.mode), row))
        return out_rows


def check_config(config: SensitivityConfig, model: nn.Module) -> list[str]:
    """``config`` against ``model``'s layers (trained or not: the CLI checks an untrained one
    before training): the base spec and the layer names, one-line SpecError naming the closest.
    Returns the layers the sweep covers, in network order."""
    if config.mode == "leave-one-float":
        validate_spec(config.base, model)
    all_layers = quantisable_layers(model)
    if config.layers is None:
        return list(all_layers)
    validate_spec(QuantSpec.parse({"layers": {n: {} for n in config.layers}}), model)  # unknown names: closest valid ones
    return selected_layers(config.layers, model, all_layers)  # a glob that selects no sweepable layer: an error


def selected_layers(selectors, model: nn.Module, all_layers) -> list[str]:
    """The layers ``selectors`` name, selected exactly as a spec's ``layers:`` selects them (a
    layer name, a glob such as ``features.*``, ``type:Conv2d``), each once, in ``all_layers``'
    order; a selector that selects none of them is a one-line SpecError naming the layers."""
    chosen = set()
    for sel in selectors:
        picked = validate_spec(QuantSpec.parse({"weight_bits": "float", "act_bits": "float", "layers": {sel: {"weight_bits": 8}}}), model)
        hits = [n for n, lq in picked.items() if lq.weight_bits == 8 and n in all_layers]
        if not hits:
            names = list(all_layers)
            raise SpecError(f"layers {sel!r} selects no layer the sweep can quantise; layers are {', '.join(names[:8])}{'...' if len(names) > 8 else ''}")
        chosen.update(hits)
    return [n for n in all_layers if n in chosen]


def _sensitivity_unit(work: _SensitivityWork, unit: tuple) -> list[tuple[str, dict]]:
    return work.layer_rows(unit)


@fixed_threads()
def sensitivity(task, model: nn.Module, config: SensitivityConfig | None = None, *, store: ResultStore | None | bool = None,
                engine: str = "cut", progress: bool = True, on_row: Callable[[dict], None] | None = None,
                executor=None, tracking=None) -> pd.DataFrame:
    """Run a sensitivity sweep; one row per layer x case (see the module docstring).

    ``engine``: ``"cut"`` (the default: the cut engine, or the block engine on a model fx cannot
    trace), ``"swap"`` (as ``"cut"``, but an untraceable model replays nothing: every case runs
    the whole model) or ``"naive"`` (build, calibrate and run the whole quantised model per
    case: the reference). The ``engine`` column says which ran each row.

    ``store``: a :class:`ResultStore`, None for the default one in the cache folder, or False
    for none. ``on_row(row)`` is called for every row, stored rows first, then new ones as they
    are computed. ``executor``: where the layers run (see :mod:`workbench.infra.executors`: ``"local"``
    by default, ``"process:N"``, ``"ray"``); the rows are the same on each. ``tracking``: an
    MLflow URI or tracker (see :mod:`workbench.infra.tracking`; None: ``$WORKBENCH_MLFLOW`` if set). The DataFrame (in
    network order) has ``attrs`` saying how many rows were computed and how many came from the store.
    """
    from ..infra.executors import make_executor
    from ..infra.tracking import log_sweep, resolve_tracker

    config = config or SensitivityConfig()
    tracker = resolve_tracker(tracking)
    if engine not in ENGINES:
        raise SpecError(f"engine {engine!r}; expected one of {', '.join(map(repr, ENGINES))}")
    executor = make_executor(executor)
    model = model.eval()
    all_layers = quantisable_layers(model)
    layers = check_config(config, model)
    check_calibration(task.data.calib.x)
    LayerInputs.check(model, task.data.calib.x)  # data that does not fit the model: one line, before any work
    store = resolve_store(store)  # a corrupt store is moved aside, a read-only one refused, before any work
    sweep = sweep_fingerprint(task, model, config)
    rec = SweepRecorder(store, sweep, "sensitivity", on_row, check=stored_row_problem)

    split = task.data.eval
    fp_out = predict(model, split.x)
    fp_metric = task.score(fp_out, split)
    macs = count_macs(model, task.example_input())
    order = {name: i for i, name in enumerate(module_calls(model, task.example_input(), all_layers))}  # network order
    hessian = hessian_traces(task, model, layers) if config.hessian else {}
    cases = config.cases()
    layers = sorted(layers, key=lambda n: order.get(n, 0))
    keys = [case_key(layer, w, a, config.mode) for layer in layers for (w, a) in cases]
    units = [(layer, tuple(c for c in cases if case_key(layer, *c, config.mode) not in rec.done)) for layer in layers]
    units = [u for u in units if u[1]]
    work = _SensitivityWork(task, model, config, engine, fp_out, fp_metric, macs, order, hessian, all_layers)

    rec.bar = tqdm(total=len(keys), desc=f"sensitivity {task.name}", disable=not progress)
    rec.replay(keys)
    for _, rows in executor.run(_sensitivity_unit, work, units):
        for key, row in rows:
            rec.put(key, row)
    rec.bar.close()
    columns = COLUMNS + (["hessian_trace"] if config.hessian else [])
    df = pd.DataFrame(rec.ordered(keys), columns=columns)
    for col in ("weight_bits", "act_bits"):
        df[col] = df[col].astype("Int64")
    df.attrs.update({"computed": rec.computed, "from_store": rec.from_store, "fp_metric": fp_metric, "sweep": sweep, "task": task.name,
                     "metric_name": task.metric.name, "executor": executor.describe()})
    log_sweep(tracker, "sensitivity", task, config, df)
    return df
