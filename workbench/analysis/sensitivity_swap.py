"""The swap and block engines of a sensitivity sweep (quantise-one on models fx cannot trace): the
float model runs per case with only the layer replaced, replaying the cached outputs of the
repeated blocks (:func:`repeated_blocks`) and their parts that return before the layer is called
(:mod:`workbench.analysis.sensitivity`). ``config``: a
:class:`~workbench.analysis.sensitivity.SensitivityConfig`."""

from __future__ import annotations

import copy
import math
import warnings

import torch
from brevitas.graph.calibrate import calibration_mode
from torch import nn

from ..core.quantize import build_quant_layer, fold_batchnorm, quantisable_layers
from ..tasks.evaluate import predict
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
from .sensitivity_cases import (
    _CASE_ERRORS,
    _layer_quant,
    _LayerRun,
    _mb,
    _too_small,
    weight_only_versions,
)


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

    def __init__(self, task, model: nn.Module, config, blocks: bool = True):
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
    def applies(config) -> bool:
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
