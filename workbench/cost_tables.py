"""Per-target cost tables: what each layer costs on a deployment target at each choice, measured
or compiled by the target's own toolchain, so a search can budget the target's own units.

A *cost source* (:data:`COST_SOURCES`, a registry) builds a configuration (a weight bit-width per
layer, at a fixed activation width) for one target and reports the target's numbers: per layer
(``layer -> {kind: value}``) and for the whole model (``{kind: value}``). Kinds are cost kinds of
:data:`workbench.cost.COST_KINDS`; an additive kind sums over layers, any other kind is a maximum
over layers (RAM for activations).

:func:`build_cost_table` builds every uniform configuration of the choices (each layer's value
at bits ``b`` is read from the uniform-``b`` build), keeps what the layers do not explain as an
``overhead`` per kind (the whole model's figure minus the layers' sum, or minus their maximum),
then validates the additive estimate against the target's own number on a few seeded mixed
configurations (``validation``: one row per point and kind with the relative error).

The table is stored in the :class:`~workbench.store.ResultStore`, keyed by the model's weights,
the task's data, the target, the choices and the toolchain's version, so building it again is a
lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from .cost import get_cost_kind
from .errors import SpecError


@dataclass(frozen=True)
class CostSource:
    """How one deployment target is measured.

    ``name``: the deployment target (``onnxruntime``, ``tflite-int8``, ``ethos-u55-128``, ...).
    ``kinds``: the cost kinds it reports. ``measure(task, model, assignment, act_bits)`` builds the
    configuration ``assignment`` (layer -> weight bits; layers not named: 8) of ``model`` and
    returns ``(per_layer, totals)``: ``{layer: {kind: value}}`` and ``{kind: value}``.
    ``available()``: whether its toolchain is installed (``requires``: the extra to install)."""

    name: str
    kinds: tuple[str, ...]
    measure: Callable
    available: Callable[[], bool] = lambda: True
    requires: str = ""
    version: Callable[[], str] = lambda: ""
    description: str = ""


COST_SOURCES: dict[str, CostSource] = {}


def register_cost_source(source: CostSource) -> CostSource:
    """Add ``source`` to :data:`COST_SOURCES` (one per target name; registering again replaces it)."""
    if not isinstance(source, CostSource):
        raise SpecError(f"register_cost_source expects a CostSource; got {type(source).__name__}")
    for k in source.kinds:
        get_cost_kind(k)
    COST_SOURCES[source.name] = source
    return source


@dataclass
class TargetCostTable:
    """Per-layer costs of one model on one target.

    ``table``: one row per (layer, weight_bits) with a column per kind of ``kinds``;
    ``overhead``: per kind, what the layers do not explain; ``totals``: per uniform width, the
    target's whole-model numbers; ``validation``: one row per validated point and kind
    (``point``, ``bits`` as JSON, ``kind``, ``estimate``, ``actual``, ``error`` = |estimate -
    actual| / actual)."""

    task: str
    target: str
    act_bits: int
    bits: tuple[int, ...]
    kinds: tuple[str, ...]
    table: pd.DataFrame
    overhead: dict[str, float]
    totals: pd.DataFrame = field(default_factory=pd.DataFrame)
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.table["layer"]))

    def _kind(self, kind: str) -> str:
        get_cost_kind(kind)
        if kind not in self.kinds:
            raise SpecError(f"cost kind {kind!r} is not in the {self.target} cost table of {self.task}; it has {', '.join(self.kinds)}")
        return kind

    def matrix(self, kind: str, layers: list[str], bits: list[int]) -> np.ndarray:
        """(layers, bits): each layer's value of ``kind`` at each weight width (no overhead)."""
        kind = self._kind(kind)
        pivot = self.table.pivot(index="layer", columns="weight_bits", values=kind)
        missing = [layer for layer in layers if layer not in pivot.index] + [b for b in bits if b not in pivot.columns]
        if missing:
            raise SpecError(f"the {self.target} cost table has no entry for {', '.join(map(str, missing))}; it holds bits {', '.join(map(str, self.bits))}")
        return pivot.loc[layers, list(bits)].to_numpy(dtype=float)

    def estimate(self, assignment: dict[str, int], kind: str) -> float:
        """The table's estimate of ``kind`` for ``assignment`` (layers not named: 8 bits)."""
        kind = self._kind(kind)
        layers = self.layers
        values = [float(self.table[(self.table["layer"] == layer) & (self.table["weight_bits"] == assignment.get(layer, 8))][kind].iloc[0])
                  for layer in layers]
        if get_cost_kind(kind).additive:
            return float(sum(values)) + self.overhead.get(kind, 0.0)
        return float(max(values)) + self.overhead.get(kind, 0.0)
