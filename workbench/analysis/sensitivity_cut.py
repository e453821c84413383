"""The cut engine of a sensitivity sweep (models fx can trace): the values live at a layer's input
are cached and each case runs only the graph from that layer onward
(:mod:`workbench.analysis.sensitivity`). ``config``: a
:class:`~workbench.analysis.sensitivity.SensitivityConfig`."""

from __future__ import annotations

import copy
import warnings

import torch
from brevitas.graph import quantize as bq
from brevitas.graph.calibrate import calibration_mode
from torch import nn

from ..core.formats import INT
from ..core.quantize import (
    act_quantizer,
    apply_weight_settings,
    build_quant_layer,
    input_is_nonnegative,
)
from ..core.spec import LayerQuant
from ..export.pipeline import quantize_task
from ..tasks.data import check_calibration
from .batching import (
    Stacked,
    batch_major,
    checked_pass_rows,
    sample_chunks,
    setting_groups,
    split_rows,
    tensors_in,
    tile,
)
from .graph_runner import GraphRunner
from .sensitivity_cases import (
    _CASE_ERRORS,
    _layer_quant,
    _LayerRun,
    _too_small,
    weight_only_versions,
)


class _Engine:
    """Cut-based evaluation of the cases of one sweep (models fx can trace).

    The values live at a layer's input (for every eval pass and, where activations are swept,
    every calibration batch) are cached and advanced from layer to layer; each case runs only
    the graph from the layer onward. Passes are sized by bytes (:mod:`workbench.analysis.batching`); where
    the eval data is smaller than one pass, a layer's settings are stacked along the batch. Where
    the cached values would exceed ``config.max_cache_mb``, the layer's eval data is taken a group
    of passes at a time, each recomputed from the input (and the calibration data a batch at a
    time), so memory stays within the budget at the price of recomputing the prefix."""

    def __init__(self, task, model: nn.Module, config):
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
