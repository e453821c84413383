"""The options of a mixed-precision search: :class:`SearchConfig`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ..core.cost import budget_kind as _budget_kind
from ..core.cost import get_cost_kind
from ..core.options import OptionModel, choice, distinct, integer
from ..export.pipeline import PTQConfig
from ..infra.errors import SpecError
from .problem import OBJECTIVES


class SearchConfig(OptionModel):
    """Parameters of a search."""

    target: str = "cpu-int8-ort"
    budget_kind: str | None = None  # None: the target profile's realised cost kind (its ``cost``: cpu-int8-ort onnx_kib, mcu tflite_kib)
    act_bits: integer(1) = 8
    n_budgets: integer(0) = 6
    uniform_bits: Annotated[tuple[integer(1), ...], BeforeValidator(lambda v: distinct(v, "bit-widths") if isinstance(v, (list, tuple)) else v)] = (8, 6, 4, 3)
    n_random: integer(0) = 3
    seed: integer(0) = 0
    objective: choice(OBJECTIVES) = "output_mse"
    latency_runs: integer(0) = 50  # onnxruntime latency of each front point's export (0 = skip)
    ptq: PTQConfig = Field(default_factory=PTQConfig)
    # Refinement (see workbench.search.precision): a solver's point whose measured metric falls
    # more than refine_tolerance (metric units, absolute) below its estimate corrects the
    # estimate and is re-solved at its budget, at most refine_rounds times (0 = never).
    refine_tolerance: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.02
    refine_rounds: integer(0) = 2

    @model_validator(mode="before")
    @classmethod
    def _profile_budget_kind(cls, data):
        """No ``budget_kind`` (or None): the target profile's cost kind, where the config meets the profile."""
        if isinstance(data, dict) and data.get("budget_kind") is None:
            from ..core.cost import load_target

            try:
                cost = load_target(data.get("target", cls.model_fields["target"].default)).cost
            except (SpecError, TypeError):
                cost = "weight_kib"  # an unknown target is refused where the search loads it, with its own message
            data = {**data, "budget_kind": cost}
        return data

    @field_validator("budget_kind")
    @classmethod
    def _registered_budget_kind(cls, v):
        try:
            if not get_cost_kind(v).measured:  # a measured additive kind (latency_ms) needs a cost table: checked by search
                _budget_kind(v)  # a registered, computed, additive cost kind (the registry's one-line message)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return v
