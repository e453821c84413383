"""Cost model: per-layer and total parameters, packed weight bytes, MACs, BOPs and peak
activation memory of a bit-width assignment, and named hardware target profiles (YAML)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from pydantic import ConfigDict, Field, ValidationError, field_validator
from torch import nn

from .errors import SpecError
from .models import layer_macs
from .quantize import QUANTISABLE
from .spec import SpecModel, format_validation_error, short_repr
from .yamlio import load_yaml

TARGETS_DIR = Path(__file__).resolve().parent / "targets"
COSTS = ("weight_kib", "bops", "latency_ms")


class TargetProfile(SpecModel):
    """A hardware target: the bit-widths it runs and the budgets that apply."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    weight_bits: list[int]
    act_bits: list[int]
    cost: str = "weight_kib"
    budgets: dict[str, float | None] = Field(default_factory=dict)

    @field_validator("weight_bits", "act_bits")
    @classmethod
    def _bits(cls, v):
        from .formats import FORMATS

        allowed = {b for f in FORMATS.values() for b in f.bits}  # the widths the number-format registry knows
        bad = [b for b in v if b not in allowed]
        if bad or not v:
            raise ValueError(f"expected a non-empty list of bit-widths in 2-8 or 16; got {short_repr(v)}")
        return sorted(v)

    @field_validator("cost")
    @classmethod
    def _cost(cls, v):
        if v not in COSTS:
            raise ValueError(f"expected one of {', '.join(COSTS)}; got {short_repr(v)}")
        return v


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def load_target(name_or_path: str | Path) -> TargetProfile:
    """A built-in profile by name (``cpu-int8-ort``, ``fpga-dataflow``, ``mcu``) or a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TARGETS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise SpecError(f"unknown target {str(name_or_path)!r}; expected one of {', '.join(list_targets())} or a YAML file")
    if not path.exists():
        raise SpecError(f"target file {str(path)!r} does not exist")
    obj = load_yaml(path, "target", SpecError)
    if not isinstance(obj, dict):
        raise SpecError(f"target {path}: the file holds {_kind(obj)}; expected a mapping with name, weight_bits, act_bits, cost, budgets")
    try:
        return TargetProfile.model_validate(obj)
    except ValidationError as exc:
        raise SpecError(f"target {path}: " + format_validation_error(exc)) from None


def _kind(obj) -> str:
    return "nothing (an empty document)" if obj is None else f"a {type(obj).__name__}"


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs: the facts the cost of any bit assignment is computed from."""

    layer: str
    weights: int
    biases: int
    macs: int
    in_elems: int
    out_elems: int


def layer_costs(model: nn.Module, example_input: torch.Tensor) -> dict[str, LayerCost]:
    """Per-layer weight / bias counts, MACs and activation sizes, from one forward pass."""
    found: dict[str, LayerCost] = {}
    hooks = []
    for name, m in model.named_modules():
        if not isinstance(m, QUANTISABLE):
            continue

        def hook(mod, args, out, name=name):
            found[name] = LayerCost(name, mod.weight.numel(), 0 if mod.bias is None else mod.bias.numel(), layer_macs(mod, out),
                                    int(args[0][0].numel()), int(out[0].numel()))

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
    return {name: found[name] for name, m in model.named_modules() if name in found}


def weight_bytes(c: LayerCost, wbits: int | None) -> int:
    return (4 * c.weights if wbits is None else math.ceil(c.weights * wbits / 8)) + 4 * c.biases


def cost_table(costs: dict[str, LayerCost], weight_bits: dict[str, int | None], act_bits: dict[str, int | None] | int | None = 8) -> pd.DataFrame:
    """Per layer: params, packed weight bytes, MACs, BOPs and activation bytes (input + output) of an assignment.

    Float (None) counts as 32 bits. ``act_bits`` is one width for every layer or a per-layer map.
    """
    rows = []
    for name, c in costs.items():
        w = weight_bits.get(name, 8)
        a = act_bits.get(name, 8) if isinstance(act_bits, dict) else act_bits
        wb, ab = (32 if w is None else w), (32 if a is None else a)
        rows.append({"layer": name, "weight_bits": w, "act_bits": a, "params": c.weights + c.biases, "weight_bytes": weight_bytes(c, w),
                     "macs": c.macs, "bops": c.macs * wb * ab, "act_bytes": math.ceil((c.in_elems + c.out_elems) * ab / 8)})
    return pd.DataFrame(rows)


def totals(table: pd.DataFrame) -> dict:
    """Whole-model figures: sums, and peak activation memory (largest layer input + output)."""
    return {"params": int(table["params"].sum()), "weight_bytes": int(table["weight_bytes"].sum()),
            "weight_kib": float(table["weight_bytes"].sum() / 1024), "macs": int(table["macs"].sum()), "bops": int(table["bops"].sum()),
            "peak_act_bytes": int(table["act_bytes"].max()) if len(table) else 0}
