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
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from typing import Annotated, Callable

import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, Field, model_validator
from brevitas.graph.calibrate import calibration_mode
from brevitas.graph import quantize as bq
from torch import nn
from tqdm.auto import tqdm

from ..tasks.data import check_calibration
from ..infra.errors import SpecError, UserCodeError
from ..tasks.evaluate import predict, task_loss
from .batching import Stacked, batch_major, checked_pass_rows, sample_chunks, setting_groups, split_rows, tensors_in, tile
from .graph_runner import GraphRunner
from ..tasks.metrics import output_agreement
from ..tasks.models import count_macs, module_calls
from ..core.options import Flag, OptionModel, choice, distinct, names, number
from ..export.pipeline import PTQConfig, quantize_task
from ..tasks.model_inputs import LayerInputs
from ..core.quantize import (
    act_quantizer,
    fold_batchnorm,
    apply_weight_settings,
    build_quant_layer,
    default_layer_quant,
    input_is_nonnegative,
    quantisable_layers,
    validate_spec,
)
from ..core.formats import ALLOWED_BITS, FORMATS, INT, fixed_width_formats
from ..core.spec import LayerQuant, QuantSpec
from ..infra.store import ResultStore, SweepRecorder, resolve_store, row_problem, sweep_fingerprint as store_fingerprint
from ..infra.determinism import fixed_threads

MODES = ("quantise-one", "leave-one-float")
ENGINES = ("cut", "swap", "naive")  # "swap": as "cut", but untraceable models rerun every block per case (no block replay)
COLUMNS = ["layer", "layer_type", "depth", "params", "macs", "weight_bits", "act_bits", "weight_format", "act_format", "mode", "metric",
           "metric_delta", "sqnr_db", "output_mse", "kl", "seconds", "engine", "status"]
SENSITIVITY_VERSION = "3"  # 2: a NaN / inf metric is status "nonfinite"; 3: weight_format / act_format columns




def bits_and_format(value) -> tuple[int | None, str | None]:
    """A sweep entry (bits, None for float, or a fixed-width format name) as (bits, format)."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return FORMATS[value].fixed_bits, value
    return value, INT


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


def case_key(layer: str, w, a, mode: str) -> str:
    return f"{mode}|{layer}|w{w if w is not None else 'fp'}|a{a if a is not None else 'fp'}"


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


def case_spec(config: SensitivityConfig, layer: str, w, a) -> QuantSpec:
    """The full-model spec a case stands for (what the naive loop builds)."""
    if config.mode == "leave-one-float":
        return config.base.with_layers({layer: {"weight_bits": "float"}})
    b = config.base

    def setting(what, v):
        return {f"{what}_format": v} if isinstance(v, str) else {f"{what}_bits": "float" if v is None else v}

    return QuantSpec.parse({"weight_bits": "float", "act_bits": "float", "weight_granularity": b.weight_granularity, "scale_type": b.scale_type,
                            "layers": {layer: {**setting("weight", w), **setting("act", a)}}})


def _layer_quant(w, a, granularity: str, scale_type: str) -> LayerQuant:
    (wb, wf), (ab, af) = bits_and_format(w), bits_and_format(a)
    return LayerQuant(wb, ab, granularity, scale_type, wf or INT, af or INT)


def compare_outputs(task, out: torch.Tensor, fp_out: torch.Tensor, fp_metric: float, split) -> dict:
    """Task metric and label-free errors of ``out`` against the float outputs."""
    if not torch.isfinite(out).all():
        return {"metric": math.nan, "metric_delta": math.nan, "sqnr_db": math.nan, "output_mse": math.nan, "kl": math.nan, "status": "nonfinite"}
    scored = task.missing_labels(split) is None  # a metric that needs labels the split lacks: NaN, status ok
    metric = task.score(out, split) if scored else math.nan
    cmp = output_agreement(out, fp_out, task.is_classifier)
    kl = math.nan
    if task.is_classifier:
        kl = float(F.kl_div(F.log_softmax(out, 1), F.log_softmax(fp_out, 1), reduction="batchmean", log_target=True))
    ok = not scored or _finite(metric)  # the metric itself may be NaN / inf (a user's metric function)
    return {"metric": metric, "metric_delta": metric - fp_metric, "sqnr_db": cmp["sqnr_db"], "output_mse": float(((out - fp_out) ** 2).mean()),
            "kl": kl, "status": "ok" if ok else "nonfinite"}


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class _LayerRun:
    """The outcome of one layer's cases: per case its output tensor, or the exception it raised."""

    def __init__(self, n: int):
        self.outs: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.errors: dict[int, Exception] = {}

    def result(self, i: int):
        return self.errors[i] if i in self.errors else torch.cat(self.outs[i]).float()


_CASE_ERRORS = (RuntimeError, ValueError, FloatingPointError)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MB"


def _too_small(budget_mb: float, need: float, what: str) -> SpecError:
    return SpecError(f"max_cache_mb={budget_mb:g} cannot hold one batch of cached activations ({what}); expected at least {_mb(need)}")


def freeze_weights(qlayer: nn.Module, base: nn.Module) -> nn.Module | None:
    """A plain copy of ``base`` computing what the weight-quantised Brevitas ``qlayer`` computes on
    a float input: ``fn(x, quantised weight, float bias)``, its quantised weight computed once
    instead of at every pass. None where ``qlayer`` quantises more than its weight (its input,
    bias or output), which a plain layer cannot repeat."""
    if any(getattr(qlayer, q).is_quant_enabled for q in ("input_quant", "bias_quant", "output_quant")):
        return None
    frozen = copy.deepcopy(base)
    with torch.no_grad():
        qw = qlayer.quant_weight()
        frozen.weight.copy_(qw.value if hasattr(qw, "value") else qw)
    return frozen.eval()


def weight_only_versions(base: nn.Module, lqs: list[LayerQuant]) -> list[nn.Module]:
    """``base`` at each weight-only setting of ``lqs``: one Brevitas layer is built and its weight
    quantiser re-set per setting (building one per setting costs ~10 ms each), frozen
    (:func:`freeze_weights`) where that is exact, else built on its own."""
    out, built, current = [], None, None
    for lq in lqs:
        if built is None:
            built = build_quant_layer(base, lq)
        else:
            apply_weight_settings(built, lq, current)
        current = lq
        frozen = freeze_weights(built, base)
        out.append(frozen if frozen is not None else build_quant_layer(base, lq).eval())
    return out


class _Engine:
    """Cut-based evaluation of the cases of one sweep (models fx can trace).

    The values live at a layer's input (for every eval pass and, where activations are swept,
    every calibration batch) are cached and advanced from layer to layer; each case runs only
    the graph from the layer onward. Passes are sized by bytes (:mod:`workbench.analysis.batching`); where
    the eval data is smaller than one pass, a layer's settings are stacked along the batch. Where
    the cached values would exceed ``config.max_cache_mb``, the layer's eval data is taken a group
    of passes at a time, each recomputed from the input (and the calibration data a batch at a
    time), so memory stays within the budget at the price of recomputing the prefix."""

    def __init__(self, task, model: nn.Module, config: SensitivityConfig):
        self.task, self.config = task, config
        self.x_eval = task.data.eval.x
        calib = task.data.calib.x
        self.x_calib = calib if config.ptq.calib_samples is None else calib[: config.ptq.calib_samples]
        check_calibration(self.x_calib)
        self.graph = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if config.mode == "quantise-one":
                    self.graph = bq.preprocess_for_quantize(copy.deepcopy(model).eval(), equalize_iters=config.ptq.equalize_iters)
                else:
                    self.graph = quantize_task(task, model, config.base, config.ptq)
        except Exception as exc:  # untraceable: the swap / block engine (quantise-one) or full runs
            self.reason = f"fx cannot trace the model ({type(exc).__name__})"
        self.runner = None if self.graph is None or not hasattr(self.graph, "graph") else GraphRunner(self.graph)
        if self.graph is not None and self.runner is None:
            self.reason = "the quantised model is not an fx graph"
        if self.runner is None:
            return
        self.rows = checked_pass_rows(self.graph, self.x_eval)
        self.needs_calib = config.mode == "quantise-one" and any(a is not None for a in config.act_bits)
        self.live = self._live_bytes_per_sample()
        self.eval_envs, self.calib_envs = [], []
        self._stack_ok: dict[str, bool] = {}

    # -- memory ------------------------------------------------------------------------------
    def _live_bytes_per_sample(self) -> list[int]:
        """Bytes of the values live in front of each node, for one sample."""
        env, live = self.runner.start(self.x_eval[:1]), []
        for i in range(len(self.runner.nodes)):
            self.runner.advance(env, i)
            live.append(sum(v.element_size() * v.numel() for k, v in env.items() if isinstance(v, torch.Tensor)))
        return live

    def _calib_batch(self) -> int:
        return min(self.config.ptq.batch_size, len(self.x_calib))

    def cache_bytes(self, layer: str) -> tuple[float, float]:
        """``(all, one)``: bytes of the cached values at ``layer`` for all the data, and for one pass."""
        per = self.live[self.runner.index[self.runner.node_of(layer).name]]
        n = len(self.x_eval) + (len(self.x_calib) if self.needs_calib else 0)
        one = max(min(self.rows, len(self.x_eval)), self._calib_batch() if self.needs_calib else 0)
        return per * n, per * one

    def check_budget(self, layers: list[str]) -> None:
        """A budget too small to hold one pass at some layer: one line naming the minimum."""
        budget = self.config.max_cache_mb
        if budget is None or self.runner is None:
            return
        need = [(self.cache_bytes(n)[1], n) for n in layers if self.can_cut(n)]
        if need:
            one, layer = max(need)
            if one > budget * 2**20:
                raise _too_small(budget, one, f"one pass of {min(self.rows, len(self.x_eval))} samples at layer {layer!r}")

    def _fits(self, layer: str) -> bool:
        return self.config.max_cache_mb is None or self.cache_bytes(layer)[0] <= self.config.max_cache_mb * 2**20

    # -- cached values ---------------------------------------------------------------------------
    def can_cut(self, layer: str) -> bool:
        return self.runner is not None and self.runner.can_cut_at(layer)

    def _start(self, x: torch.Tensor, size: int) -> list[dict]:
        return [self.runner.start(x[a:b]) for a, b in sample_chunks(len(x), size)]

    def move_to(self, layer: str) -> None:
        """Advance the cached values to ``layer`` (start again for an earlier layer); drop them
        where the layer's values would exceed the memory budget."""
        if not self._fits(layer):
            self.eval_envs, self.calib_envs = [], []
            return
        stop = self.runner.index[self.runner.node_of(layer).name]
        if not self.eval_envs or self.eval_envs[0]["__pos__"] > stop:
            self.eval_envs = self._start(self.x_eval, self.rows)
            self.calib_envs = self._start(self.x_calib, self.config.ptq.batch_size) if self.needs_calib else []
        for env in self.eval_envs + self.calib_envs:
            self.runner.advance(env, stop)

    def _env_groups(self, x: torch.Tensor, size: int, stop: int, cached: list[dict], per_group: int):
        """The envs at ``stop``: the cached ones, or (beyond the budget) ``per_group`` passes at a time."""
        if cached:
            yield cached
            return
        chunks = sample_chunks(len(x), size)
        for g in range(0, len(chunks), per_group):
            envs = [self.runner.start(x[a:b]) for a, b in chunks[g : g + per_group]]
            for env in envs:
                self.runner.advance(env, stop)
            yield envs

    def _per_group(self, layer: str) -> int:
        if self._fits(layer):
            return 1 << 30
        per = self.live[self.runner.index[self.runner.node_of(layer).name]]
        return max(1, int(self.config.max_cache_mb * 2**20 // max(per * self.rows, 1)))

    # -- cases -----------------------------------------------------------------------------------
    def _modules(self, layer: str, node, cases: list[tuple]) -> list[nn.Module]:
        """One module per case standing for ``layer`` at that case's settings (activation
        quantisers calibrated on the float values at its input, all in one pass over them)."""
        from contextlib import ExitStack

        from brevitas.nn import QuantIdentity

        base = self.graph.get_submodule(layer)
        if self.config.mode != "quantise-one":
            module = copy.deepcopy(base)
            current = self.graph.workbench_plan.layers[layer]
            apply_weight_settings(module, LayerQuant(None, current.act_bits, current.weight_granularity, current.scale_type, INT, current.act_format), current)
            return [module.eval()]
        b = self.config.base
        mods, quantisers = [], []
        signed = None
        weight_only = [i for i, (w, a) in enumerate(cases) if a is None]
        frozen = dict(zip(weight_only, weight_only_versions(base, [_layer_quant(cases[i][0], None, b.weight_granularity, b.scale_type) for i in weight_only])))
        for i, (w, a) in enumerate(cases):
            if i in frozen:
                mods.append(frozen[i])
                continue
            lq = _layer_quant(w, a, b.weight_granularity, b.scale_type)
            module = build_quant_layer(base, lq)
            if a is not None:
                if signed is None:
                    signed = not input_is_nonnegative(self.graph, node.args[0])
                iq = QuantIdentity(act_quant=act_quantizer(lq.act_bits, signed, b.scale_type, lq.act_format), return_quant_tensor=True)
                iq.eval()
                quantisers.append(iq)
                module = nn.Sequential(iq, module)
            mods.append(module.eval())
        if quantisers:
            stop = self.runner.index[node.name]
            with torch.no_grad(), ExitStack() as stack:
                for iq in quantisers:
                    stack.enter_context(calibration_mode(iq))
                for envs in self._env_groups(self.x_calib, self.config.ptq.batch_size, stop, self.calib_envs, 1):
                    for env in envs:
                        for iq in quantisers:
                            iq(env[node.args[0].name])
        return mods

    def _stackable(self, layer: str, env: dict, base: nn.Module, n: int, times: int) -> bool:
        """Whether a pass stacking ``times`` settings gives what separate passes give (checked once
        per layer on the float layer: the cached values must all be batch-major tensors)."""
        if layer not in self._stack_ok:
            values = [v for k, v in env.items() if k != "__pos__"]
            ok = all(isinstance(v, torch.Tensor) and batch_major(v, n) for v in values)
            if ok:
                alone = self.runner.run_from(env, {layer: base})
                tiled = {k: (v if k == "__pos__" else tile(v, times)) for k, v in env.items()}
                stacked = self.runner.run_from(tiled, {layer: Stacked([base] * times, n)})
                ok = torch.equal(torch.cat([alone] * times), stacked)
            self._stack_ok[layer] = ok
        return self._stack_ok[layer]

    def run_layer(self, layer: str, cases: list[tuple]) -> list:
        """Per case (in order) its outputs on the eval data, or the exception it raised."""
        node = self.runner.node_of(layer)
        result = _LayerRun(len(cases))
        try:
            mods = self._modules(layer, node, cases)
        except _CASE_ERRORS as exc:
            return [exc] * len(cases)
        stop = self.runner.index[node.name]
        groups = setting_groups(len(mods), len(self.x_eval), self.rows)
        for envs in self._env_groups(self.x_eval, self.rows, stop, self.eval_envs, self._per_group(layer)):
            for group in groups:
                for env in envs:
                    self._run_group(layer, env, group, mods, result)
        return [result.result(i) for i in range(len(cases))]

    def _run_group(self, layer: str, env: dict, group: list[int], mods: list[nn.Module], result: _LayerRun) -> None:
        todo = [i for i in group if i not in result.errors]
        n = tensors_in([v for k, v in env.items() if k != "__pos__"])[0].shape[0]
        if len(todo) > 1 and self._stackable(layer, env, self.graph.get_submodule(layer), n, len(todo)):
            tiled = {k: (v if k == "__pos__" else tile(v, len(todo))) for k, v in env.items()}
            try:
                out = self.runner.run_from(tiled, {layer: Stacked([mods[i] for i in todo], n)})
                for i, part in zip(todo, split_rows(out, n, len(todo))):
                    result.outs[i].append(part)
                return
            except Exception:  # noqa: BLE001 - whatever stacking broke (or a setting failed), the settings then run one by one
                pass
        for i in todo:
            try:
                result.outs[i].append(self.runner.run_from(env, {layer: mods[i]}))
            except _CASE_ERRORS as exc:
                result.errors[i] = exc


def repeated_blocks(model: nn.Module) -> tuple[str, list[nn.Module]] | None:
    """The model's repeated blocks: ``(name, blocks)`` for the ``nn.ModuleList`` / ``nn.Sequential``
    of at least 2 children, all of one class, holding the most parameters (e.g. BERT's
    ``bert.encoder.layer``); None when the model has none."""
    best, best_params = None, 0
    for name, mod in model.named_modules():
        kids = list(mod.children())
        if not isinstance(mod, (nn.ModuleList, nn.Sequential)) or len(kids) < 2 or len({type(k) for k in kids}) != 1:
            continue
        params = sum(p.numel() for p in mod.parameters())
        if params > best_params:
            best, best_params = (name, kids), params
    return best


class _SwapEngine:
    """Quantise-one on an untraceable model: the float model (BatchNorm folded as the per-module
    path folds it) runs per case with only ``layer`` replaced by its quantised version, which is
    then put back.

    With ``blocks`` (the block-cut engine), the model's repeated blocks (:func:`repeated_blocks`:
    encoder layers, ResNet stages), their children and grandchildren (attention, feed-forward,
    ...) and the modules beside the blocks' container on the way up to the root (the embeddings)
    are *replayable*: their float outputs are captured once per eval pass (and calibration
    batch). A case for layer L replaces the ``forward`` of every replayable module that has
    returned before L is first called by its cached output, so those compute nothing; the rest
    runs as usual. Exact: a module that has returned before L is called cannot depend on L.
    Replayable modules must be called once each per forward, without side effects a later module
    reads; modules called more often are left out, and where the blocks themselves are, every
    case runs the whole model and :attr:`reason` says why. The cache holds blocks first, then
    the others that some layer would replay outermost, smallest first, as far as
    ``config.max_cache_mb`` allows.

    Passes are sized by bytes and settings stacked along the batch where the eval data is
    smaller than one pass (:mod:`workbench.analysis.batching`), as in the cut engine."""

    def __init__(self, task, model: nn.Module, config: SensitivityConfig, blocks: bool = True):
        self.task, self.config = task, config
        self.model = fold_batchnorm(copy.deepcopy(model).eval(), task.example_input(8))
        self.x_eval = task.data.eval.x
        calib = task.data.calib.x
        self.x_calib = calib if config.ptq.calib_samples is None else calib[: config.ptq.calib_samples]
        self.needs_calib = any(a is not None for a in config.act_bits)
        self.rows = checked_pass_rows(self.model, self.x_eval)
        self.blocks, self.replayed, self.cached, self.cache, self.stackable = [], {}, [], {}, True
        self.reason = "engine='swap' asked for no block replay"
        if blocks:
            found = repeated_blocks(self.model)
            if found is None:
                self.reason = "no repeated blocks found (an nn.ModuleList or nn.Sequential of 2 or more children of one class)"
            else:
                self._capture(found[0], found[1])
        self.stackable = self.stackable and self._check_stacking()

    def _replayable(self, name: str, blocks: list[nn.Module]) -> list[tuple[str, nn.Module]]:
        """Candidates in cache priority: blocks, the modules beside their container up to the
        root, the blocks' children, their grandchildren."""
        names = {m: n for n, m in self.model.named_modules()}
        beside, path = [], name.split(".") if name else []
        for depth in range(len(path)):
            parent = self.model.get_submodule(".".join(path[:depth]))
            beside += [(names[c], c) for c in parent.children() if names[c] != ".".join(path[: depth + 1])]
        children = [(names[c], c) for blk in blocks for c in blk.children()]
        grand = [(names[g], g) for _, c in children for g in c.children()]
        return [(names[blk], blk) for blk in blocks] + beside + children + grand

    def _dry_run(self, candidates: list[tuple[str, nn.Module]]) -> tuple[list[int], set[int]]:
        """On one sample: each candidate's output bytes, and the candidates worth caching: those
        some layer would replay outermost (returned before the layer's first call, inside no
        other candidate that has)."""
        sizes, returned, before = [0] * len(candidates), [], {}

        def post(j):
            def hook(_m, _args, out):
                sizes[j] = max(sizes[j], sum(t.element_size() * t.numel() for t in tensors_in(out)))
                returned.append(j)
            return hook

        def pre(layer):
            def hook(_m, _args):
                before.setdefault(layer, list(returned))
            return hook

        handles = [m.register_forward_hook(post(j)) for j, (_, m) in enumerate(candidates)]
        handles += [self.model.get_submodule(n).register_forward_pre_hook(pre(n)) for n in quantisable_layers(self.model)]
        try:
            predict(self.model, self.x_eval[:1], batch_size=1)
        finally:
            for h in handles:
                h.remove()
        names = [n for n, _ in candidates]
        useful = set()
        for done in before.values():
            done_names = {names[j] for j in done}
            useful |= {j for j in done if not any(names[j].startswith(o + ".") for o in done_names)}
        return sizes, useful

    def _capture(self, name: str, blocks: list[nn.Module]) -> None:
        """Fill ``cache[split][j][pass]`` with replayable module ``j``'s float outputs (as many as
        the memory budget holds) and ``replayed[layer]`` with the modules that return before
        ``layer`` is first called."""
        candidates = self._replayable(name, blocks)
        per_sample, useful = self._dry_run(candidates)
        n = len(self.x_eval) + (len(self.x_calib) if self.needs_calib else 0)
        budget = math.inf if self.config.max_cache_mb is None else self.config.max_cache_mb * 2**20
        one = max(per_sample[: len(blocks)]) * max(min(self.rows, len(self.x_eval)), min(self.config.ptq.batch_size, len(self.x_calib)) if self.needs_calib else 0)
        if one > budget:
            raise _too_small(self.config.max_cache_mb, one, f"one pass of the outputs of {name!r}")
        events, first = [], {}
        kept, total = [], 0
        order = list(range(len(blocks))) + sorted(useful - set(range(len(blocks))), key=lambda j: (per_sample[j], j))  # blocks, then the smallest
        for j in order:
            size = per_sample[j]
            if size > 0 and total + size * n <= budget:
                kept.append(j)
                total += size * n
        if not any(j < len(blocks) for j in kept):
            self.reason = f"max_cache_mb={self.config.max_cache_mb:g} holds no block's outputs ({_mb(per_sample[0] * n)} each)"
            return
        cache = {"eval": {j: [] for j in kept}, "calib": {j: [] for j in kept}}
        split = ["eval"]

        def on_root(_m, _args):
            events.append({"calls": {}, "returned": []})

        def on_module(j):
            def pre(_m, _args):
                events[-1]["calls"][j] = events[-1]["calls"].get(j, 0) + 1

            def post(_m, _args, out):
                events[-1]["returned"].append(j)
                if j in cache[split[0]]:
                    cache[split[0]][j].append(out)
            return pre, post

        def on_layer(layer):
            def pre(_m, _args):
                first.setdefault(layer, set(events[-1]["returned"]))
            return pre

        handles = [self.model.register_forward_pre_hook(on_root)]
        for j in kept:
            pre, post = on_module(j)
            handles += [candidates[j][1].register_forward_pre_hook(pre), candidates[j][1].register_forward_hook(post)]
        handles += [self.model.get_submodule(n).register_forward_pre_hook(on_layer(n)) for n in quantisable_layers(self.model)]
        try:
            predict(self.model, self.x_eval, batch_size=self.rows)
            if self.needs_calib:
                split[0] = "calib"
                with torch.no_grad():
                    for a, b in sample_chunks(len(self.x_calib), self.config.ptq.batch_size):
                        self.model(self.x_calib[a:b])
        finally:
            for h in handles:
                h.remove()
        once = [j for j in kept if all(ev["calls"].get(j) == 1 for ev in events)]
        if any(j < len(blocks) and j not in once for j in kept):
            self.reason = f"the blocks of {name!r} are not called once each per forward"
            warnings.warn(f"{self.reason}; every case runs the whole model (swap engine)", stacklevel=4)
            return
        once = sorted(once)
        self.blocks = [candidates[j][1] for j in once if j < len(blocks)]
        self.cached = [(candidates[j][0], candidates[j][1]) for j in once]
        index = {j: i for i, j in enumerate(once)}
        self.cache = {sp: [cache[sp][j] for j in once] for sp in cache}
        self.replayed = {layer: sorted(index[j] for j in done if j in index) for layer, done in first.items()}
        self.reason = ""
        chunks = sample_chunks(len(self.x_eval), self.rows)
        self.stackable = all(batch_major(out, b - a) for outs in self.cache["eval"] for out, (a, b) in zip(outs, chunks))

    def _check_stacking(self) -> bool:
        """Whether the float model gives the same outputs stacked as alone (checked only where the
        eval data is smaller than a pass, the only place settings are stacked), replaying nothing
        and replaying what the last layer replays."""
        if len(self.x_eval) >= self.rows:
            return True
        most = max(self.replayed.values(), key=len, default=[])
        for ids in ([], most) if most else ([],):
            alone = self._pass(self.x_eval, "eval", 0, ids, 1)
            if not torch.equal(torch.cat([alone] * 2), self._pass(tile(self.x_eval, 2), "eval", 0, ids, 2)):
                return False
        return True

    def cut_at(self, layer: str) -> int:
        """How many modules a case for ``layer`` replays (0: it runs the whole model)."""
        return len(self.replayed.get(layer, ()))

    def _pass(self, x: torch.Tensor, split: str, chunk: int, ids: list[int], times: int) -> torch.Tensor:
        """One forward pass on ``x`` with the cached modules ``ids`` returning their outputs for
        ``split``'s pass ``chunk`` (repeated ``times`` along the batch)."""
        for i in ids:
            self.cached[i][1].forward = (lambda *_a, _i=i, **_kw: tile(self.cache[split][_i][chunk], times))
        try:
            with torch.no_grad():
                out = self.model(x)
        finally:
            for i in ids:
                del self.cached[i][1].forward
        return out.value if hasattr(out, "value") and not isinstance(out, torch.Tensor) else out

    @staticmethod
    def applies(config: SensitivityConfig) -> bool:
        """Exact only where the full rebuild does no more than quantise and calibrate."""
        return config.mode == "quantise-one" and not config.ptq.bias_correction and config.ptq.equalize_iters == 0

    def _calibrate(self, k: list[int]) -> None:
        """Calibrate the model's activation quantisers (as :func:`workbench.core.ptq.calibrate` does)
        with the cached modules ``k`` replaying their outputs."""
        with torch.no_grad(), calibration_mode(self.model):
            for c, (a, b) in enumerate(sample_chunks(len(self.x_calib), self.config.ptq.batch_size)):
                self._pass(self.x_calib[a:b], "calib", c, k, 1)

    def run_layer(self, layer: str, cases: list[tuple]) -> list:
        """Per case (in order) its outputs on the eval data, or the exception it raised."""
        from brevitas.graph.utils import set_module

        original = self.model.get_submodule(layer)
        b = self.config.base
        k = self.replayed.get(layer, [])
        result, mods = _LayerRun(len(cases)), {}
        try:
            weight_only = [i for i, (w, a) in enumerate(cases) if a is None]
            try:
                mods.update(zip(weight_only, weight_only_versions(original, [_layer_quant(cases[i][0], None, b.weight_granularity, b.scale_type) for i in weight_only])))
            except _CASE_ERRORS:
                pass  # built one by one below, to say which setting fails
            for i, (w, a) in enumerate(cases):
                if i in mods:
                    continue
                try:
                    mods[i] = build_quant_layer(original, _layer_quant(w, a, b.weight_granularity, b.scale_type), input_quant=True).eval()
                    if a is not None:
                        set_module(self.model, mods[i], layer)
                        self._calibrate(k)
                except _CASE_ERRORS as exc:
                    result.errors[i] = exc
                finally:
                    set_module(self.model, original, layer)
            todo = [i for i in range(len(cases)) if i not in result.errors]
            chunks = sample_chunks(len(self.x_eval), self.rows)
            for group in setting_groups(len(todo), len(self.x_eval), self.rows):
                ids = [todo[g] for g in group]
                if len(ids) > 1 and self.stackable:
                    set_module(self.model, Stacked([mods[i] for i in ids], len(self.x_eval)), layer)
                    try:
                        out = self._pass(tile(self.x_eval, len(ids)), "eval", 0, k, len(ids))
                        for i, part in zip(ids, split_rows(out, len(self.x_eval), len(ids))):
                            result.outs[i].append(part)
                        continue
                    except Exception:  # noqa: BLE001 - whatever stacking broke, the settings then run one by one
                        pass
                    finally:
                        set_module(self.model, original, layer)
                for i in ids:
                    set_module(self.model, mods[i], layer)
                    try:
                        result.outs[i] = [self._pass(self.x_eval[s:e], "eval", c, k, 1) for c, (s, e) in enumerate(chunks)]
                    except _CASE_ERRORS as exc:
                        result.errors[i] = exc
                    finally:
                        set_module(self.model, original, layer)
        finally:
            set_module(self.model, original, layer)
        return [result.result(i) for i in range(len(cases))]


def naive_case(task, model: nn.Module, config: SensitivityConfig, layer: str, w, a) -> torch.Tensor:
    """The reference: build, calibrate and run the whole model the case stands for."""
    qmodel = quantize_task(task, model, case_spec(config, layer, w, a), config.ptq)
    return predict(qmodel, task.data.eval.x)


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


def hessian_traces(task, model: nn.Module, layers: list[str], n_samples: int = 128, n_iter: int = 16, seed: int = 0) -> dict[str, float]:
    """Mean Hessian trace per weight of each layer (Hutchinson's estimator, as in HAWQ): E[v^T H v] / n.

    The loss is the task's training loss (cross-entropy, or MSE for reconstruction) on the first
    ``n_samples`` calibration samples (labels from the float model's predictions when none exist).
    """
    model = copy.deepcopy(model).eval()
    x = task.data.calib.x[:n_samples]
    y = None if task.data.calib.y is None else task.data.calib.y[:n_samples]
    loss = task_loss(task, model(x), x, y)
    params = [model.get_submodule(n).weight for n in layers]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    sums = [0.0] * len(params)
    for _ in range(n_iter):
        vs = [torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1 for p in params]
        hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        for i, (hv, v) in enumerate(zip(hvs, vs)):
            sums[i] += float((hv * v).sum())
    return {n: s / n_iter / p.numel() for n, s, p in zip(layers, sums, params)}
