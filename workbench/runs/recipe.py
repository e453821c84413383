"""Recipes: a versioned, validated YAML record of a chosen compression point, which
``workbench apply`` rebuilds bit for bit.

Schema (``recipe_version: 1``)::

    recipe_version: 1
    name: digits-mixed                   # free text
    task: {name: digits-cnn, seed: 0}    # a registered task ...
    # task: {factory: "mypkg.models:make_task"}   # ... or an importable function returning a Task,
    #                                             # or (model, calibration inputs, (eval x, eval y), metric)
    dataset: {sha256: <fingerprint of the task's data>}      # checked before anything runs
    target: cpu-int8-ort                 # optional: the bits must be allowed by this target
    quantization: {weight_bits: 8, act_bits: 8, layers: {features.3: {weight_bits: 4}}}
    ptq: {calib_samples: 512, bias_correction: false, equalize_iters: 0, batch_size: 128,
          act_equalization: null,          # SmoothQuant alpha in (0, 1)
          weight_rounding: nearest,        # nearest | gptq | gpfq | adaround (learned rounding)
          rounding_iters: 500, rounding_layers: null}   # adaround: steps per layer; names or globs
    pruning:                             # optional: pruned (and fine-tuned) before quantisation
      {method: structured, sparsity: 0.5, criterion: l1, finetune_epochs: 3}
    qat: {epochs: 5, lr: 0.0001, distill: true, temperature: 4.0, alpha: 0.7}   # optional: trained after PTQ
    export: {formats: [qcdq, qonnx], weight_encoding: u8, pack: int4}   # pack: int4 (default) | none
    expected:                            # what apply checks; exits non-zero when outside
      quant_metric: {value: 0.99, tolerance: 0.01}
      onnx_agreement: {min: 0.99}

Nothing in a recipe is evaluated as code, and no code runs without your consent: ``factory``
names a module and a function that ``workbench apply`` imports and calls (which runs that
module's import-time code with your rights) only when allowed: ``--allow-code`` on the command
line, ``allow_code=True`` in Python, or ``WORKBENCH_ALLOW_CODE=1``. Without it a factory recipe is a
one-line :class:`CodeNotAllowedError`; ``recipe check`` and ``recipe diff`` then check it without
importing anything. Every other field is data.
"""

from __future__ import annotations

import hashlib
import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from ..infra.errors import SpecError, WorkbenchError
from ..core.options import format_error
from ..export.pipeline import PTQConfig
from ..core.pruning import PruningSpec, prunable_layers
from ..core.qat import QATConfig
from ..core.spec import FiniteFloat, Int, LayerSettings, QuantSpec

RECIPE_VERSION = 1
MAX_SEED = 2**32 - 1  # what numpy's and torch's seeding both accept
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class RecipeError(SpecError):
    """A recipe is malformed, names what does not exist, or does not match its data."""


class _Strict(BaseModel):
    # strict: true, "8" and 8.0 are not integers, true and "0.9" not numbers (no silent coercion)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TaskRef(_Strict):
    name: str | None = None
    factory: str | None = None
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    epochs: Int | None = Field(None, ge=0, le=100_000)  # float-baseline training epochs (None: the task's default)
    subset: list[Int] | None = None  # [n_train, n_calib, n_eval]: the first samples of each split

    @field_validator("subset")
    @classmethod
    def _subset(cls, v):
        if v is not None and (len(v) != 3 or any(n < 1 for n in v)):
            raise ValueError(f"expected [n_train, n_calib, n_eval], each >= 1; got {v!r}")
        return v

    @model_validator(mode="after")
    def _one(self):
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of name (a registered task) or factory ('module:function')")
        if self.factory is not None and not _FACTORY.match(self.factory):
            raise ValueError(f"factory must look like 'package.module:function'; got {self.factory!r}")
        return self


class DatasetRef(_Strict):
    sha256: str | None = None
    source: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v):
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError(f"expected 64 lowercase hex digits; got {v!r}")
        return v


class ExportSection(_Strict):
    formats: list[str] = Field(default_factory=lambda: ["qcdq"])  # names from the exporter registry (wb.list_exporters())
    # u8 by default, not auto: the same recipe must give the same file on every machine (promote
    # writes the encoding resolved where it measured); "auto" is allowed in a hand-written recipe,
    # and then the file depends on the exporting host's CPU (VNNI: s8, else u8); u8 and s8 are
    # applied as written on every host, never re-probed
    weight_encoding: Literal["u8", "s8", "auto"] = "u8"
    # int4 (None, the default, means int4 too; left out of the YAML so older recipes reserialise
    # byte for byte): weights of at most 4 bits two a byte, QONNX weights stored as integers; none:
    # int8 containers in QCDQ, float weights in QONNX
    pack: Literal["int4", "none"] | StrictBool | None = None

    @field_validator("pack", mode="before")
    @classmethod
    def _pack(cls, v):
        if v is not None and (not isinstance(v, (bool, str)) or v not in (True, False, "int4", "none")):
            raise ValueError(f"expected int4 (weights of at most 4 bits two a byte), none, true or false; got {v!r}")
        return v

    @field_validator("formats")
    @classmethod
    def _known(cls, v):
        from ..export.exporters import resolve_formats

        try:
            resolve_formats(v)
        except WorkbenchError as exc:
            raise ValueError(str(exc)) from None
        return v


class Expectation(_Strict):
    """What ``apply`` checks of one summary figure: ``value`` within ``tolerance``, and / or the
    bounds ``min`` / ``max``. Every number is finite (NaN and infinity are refused at load), a
    ``value`` needs its ``tolerance`` (and a tolerance its value), and at least one check is given;
    a measured figure that is NaN or infinite fails every expectation."""

    value: FiniteFloat | None = None
    tolerance: Annotated[FiniteFloat, Field(ge=0)] | None = None
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _checkable(self):
        if self.value is not None and self.tolerance is None:
            raise ValueError(f"value {self.value:g} needs a tolerance (expected {{value: {self.value:g}, tolerance: 0.01}}), or give min / max instead")
        if self.tolerance is not None and self.value is None:
            raise ValueError(f"tolerance {self.tolerance:g} needs a value (expected {{value: ..., tolerance: {self.tolerance:g}}})")
        if self.value is None and self.min is None and self.max is None:
            raise ValueError("checks nothing; expected {value: V, tolerance: T} and / or min / max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}; expected min <= max")
        return self

    def check(self, actual: float) -> str | None:
        """None when ``actual`` meets the expectation, else why not (NaN or infinity never meets it)."""
        import math

        if isinstance(actual, bool) or not isinstance(actual, (int, float)) or not math.isfinite(actual):
            return f"{actual!r} is not a finite number"
        if self.value is not None and abs(actual - self.value) > self.tolerance:
            return f"{actual:.6g} is outside {self.value:.6g} +/- {self.tolerance:.3g}"
        if self.min is not None and actual < self.min:
            return f"{actual:.6g} is below the minimum {self.min:.6g}"
        if self.max is not None and actual > self.max:
            return f"{actual:.6g} is above the maximum {self.max:.6g}"
        return None


class TargetTolerance(_Strict):
    """What a deployment target's rows must meet (a recipe's ``targets: {name: {...}}``); every
    bound is optional. ``min_agreement``: top-1 agreement with the simulation; ``max_lsb_diff``:
    largest output difference in output LSBs; ``min_metric``: the task metric on the target's
    outputs; ``max_ram_bytes`` / ``max_file_bytes``: RAM (TFLite Micro arena, NPU SRAM) and flash;
    ``max_latency_ms_p99``; ``max_cpu_ops``: operators left on the CPU beside an NPU."""

    min_agreement: FiniteFloat | None = Field(None, ge=0, le=1)
    max_lsb_diff: FiniteFloat | None = Field(None, ge=0)
    min_metric: FiniteFloat | None = None
    max_ram_bytes: Int | None = Field(None, ge=0)
    max_file_bytes: Int | None = Field(None, ge=0)
    max_latency_ms_p99: FiniteFloat | None = Field(None, gt=0)
    max_cpu_ops: Int | None = Field(None, ge=0)

    @field_validator("*")
    @classmethod
    def _finite(cls, v):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"expected a finite bound or null; got {v!r}")
        return v

    def check(self, row: dict) -> list[str]:
        """Why ``row`` (a deployment row) is outside these bounds; empty when it is not. A bound
        whose figure the row lacks (None: the runtime cannot measure it) is reported too."""
        out = []
        for field, column, lower in (("min_agreement", "agreement", True), ("min_metric", "metric", True), ("max_lsb_diff", "max_lsb_diff", False),
                                     ("max_ram_bytes", "ram_bytes", False), ("max_file_bytes", "file_bytes", False),
                                     ("max_latency_ms_p99", "latency_ms_p99", False), ("max_cpu_ops", "cpu_ops", False)):
            bound = getattr(self, field)
            if bound is None:
                continue
            value = row.get(column)
            if value is None or value != value:
                out.append(f"{column} was not measured; {field} {bound:g} cannot be checked")
            elif (value < bound) if lower else (value > bound):
                out.append(f"{column} {value:.6g} is {'below the minimum' if lower else 'above the maximum'} {bound:g}")
        return out


_YAML_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")  # ASCII digits: "８" is not a number


def _float_fields(model) -> set[str]:
    def has_float(t) -> bool:
        return t is float or any(has_float(a) for a in typing.get_args(t))

    return {name for name, f in model.model_fields.items() if has_float(f.annotation)}


EXPECTABLE = ("fp_metric", "quant_metric", "onnx_metric", "onnx_agreement", "max_abs_diff", "weight_bytes_quant", "onnx_file_bytes", "int_kernel_nodes")


class Recipe(_Strict):
    recipe_version: Literal[1] = RECIPE_VERSION
    name: str = Field("recipe", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")  # also a file-name stem
    task: TaskRef
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    target: str | None = None
    quantization: QuantSpec = Field(default_factory=QuantSpec)
    ptq: PTQConfig = Field(default_factory=PTQConfig)
    pruning: PruningSpec | None = None
    qat: QATConfig | None = None
    export: ExportSection = Field(default_factory=ExportSection)
    expected: dict[str, Expectation] = Field(default_factory=dict)
    # deployment targets built by `workbench apply` / `workbench deploy`, with tolerances; None
    # (the default, left out of the YAML so older recipes reserialise byte for byte): none
    targets: dict[str, TargetTolerance] | None = None

    @field_validator("recipe_version", mode="before")
    @classmethod
    def _version(cls, v):
        if type(v) is not int or v != RECIPE_VERSION:  # true and 1.0 equal 1 in Python; not a version
            raise ValueError(f"expected recipe_version {RECIPE_VERSION}; got {v!r}")
        return v

    @field_validator("target")
    @classmethod
    def _target_text(cls, v):
        if v is not None and (not v.strip() or not v.isprintable()):
            raise ValueError(f"expected a registered target profile name (workbench.core.cost.list_targets()); got {v!r}")
        return v

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, v):
        """A list of names is a mapping to no tolerance; names must be registered targets."""
        if v is None:
            return v
        if isinstance(v, list):
            if not all(isinstance(n, str) for n in v):
                raise ValueError(f"expected target names or a mapping of target name to tolerances; got {v!r}")
            v = {n: {} for n in v}
        if not isinstance(v, dict):
            raise ValueError(f"expected target names or a mapping of target name to tolerances; got {type(v).__name__}")
        from .deployment import list_target_names
        from ..infra.errors import unknown_name

        known = list_target_names()
        for name in v:
            if name not in known:
                raise ValueError(unknown_name("deployment target", name, known, listed="targets:"))
        return {n: ({} if t is None else t) for n, t in v.items()}

    @field_validator("ptq", "qat", mode="before")
    @classmethod
    def _yaml_numbers(cls, v, info):
        """A number YAML 1.1 reads as text (``lr: 1e-4``) is the number it reads as in YAML 1.2."""
        if not isinstance(v, dict):
            return v
        model = PTQConfig if info.field_name == "ptq" else QATConfig
        return {k: float(x) if isinstance(x, str) and k in _float_fields(model) and _YAML_NUMBER.fullmatch(x) else x for k, x in v.items()}

    @field_validator("expected")
    @classmethod
    def _expectable(cls, v):
        for k in v:
            if k not in EXPECTABLE:
                raise ValueError(f"cannot expect {k!r}; expected keys among {', '.join(EXPECTABLE)}")
        return v

    def to_yaml(self) -> str:
        d = self.model_dump(mode="json", exclude_none=False)
        d["quantization"] = self.quantization.to_dict()
        d["expected"] = {k: {kk: vv for kk, vv in e.items() if vv is not None} for k, e in d["expected"].items()}
        d["task"] = {k: v for k, v in d["task"].items() if v is not None}
        d["dataset"] = {k: v for k, v in d["dataset"].items() if v is not None}
        if d["export"].get("pack") is None:
            d["export"].pop("pack", None)
        if d.get("targets") is None:
            d.pop("targets", None)
        else:
            d["targets"] = {n: {k: v for k, v in t.items() if v is not None} for n, t in d["targets"].items()}
        return yaml.safe_dump(d, sort_keys=False)


def parse_recipe(obj: Any) -> Recipe:
    if not isinstance(obj, dict):
        raise RecipeError(f"recipe is a {type(obj).__name__}; expected a mapping with recipe_version, task, quantization, ...")
    try:
        return Recipe.model_validate(obj)
    except ValidationError as exc:
        raise RecipeError(format_error(exc, Recipe)) from None


def load_recipe(path: str | Path) -> tuple[Recipe, str]:
    """The validated recipe and the sha256 of the file's bytes."""
    from ..infra.yamlio import in_file, read_yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist")
    obj, raw = read_yaml(path, "recipe", RecipeError)  # UTF-8, size, alias and depth limits; errors name the file
    try:
        return parse_recipe(obj), hashlib.sha256(raw).hexdigest()
    except RecipeError as exc:  # the field path first, then the file
        raise type(exc)(in_file(str(exc), path)) from None


ALLOW_CODE_ENV = "WORKBENCH_ALLOW_CODE"


class CodeNotAllowedError(RecipeError):
    """A recipe names a ``module:function`` factory and running code was not allowed."""


def code_allowed(allow_code: bool | None = None) -> bool:
    """``allow_code`` when given, else ``$WORKBENCH_ALLOW_CODE`` (1, true or yes)."""
    if allow_code is not None:
        return bool(allow_code)
    import os

    return os.environ.get(ALLOW_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


def resolve_task(ref: TaskRef, allow_code: bool | None = None):
    """The Task a recipe names: from the registry, or, only with the user's consent
    (``allow_code`` / ``--allow-code`` / ``$WORKBENCH_ALLOW_CODE``), by importing ``module`` and
    calling ``function()`` of ``task.factory: module:function``."""
    from ..tasks.registry import create_task, task_from_factory

    if ref.name is not None:
        task = create_task(ref.name, seed=ref.seed)
    else:
        module_name, func_name = ref.factory.split(":")
        if not code_allowed(allow_code):
            raise CodeNotAllowedError(f"task.factory {ref.factory!r} would import module {module_name!r} and call {func_name}(); "
                                      f"run code from a recipe only if you trust it: --allow-code (CLI), allow_code=True (API) or {ALLOW_CODE_ENV}=1")
        task = task_from_factory(ref.factory, RecipeError, "task.factory", seed=ref.seed)  # seeded before the factory runs
    if ref.subset is not None:
        task = task.small(*ref.subset)
    if ref.epochs is not None:
        task.train_epochs = ref.epochs
    return task


def recipe_profile(recipe: Recipe, target_file=None):
    """The :class:`~workbench.core.cost.TargetProfile` the recipe's ``target:`` names (None: none): a
    registered name, or the profile in ``target_file`` (the user's ``--target-file``), which the
    recipe must name; a RecipeError naming ``target:`` otherwise. Nothing else is ever read."""
    from ..core.cost import recipe_target

    if recipe.target is None:
        if target_file is not None:
            raise RecipeError(f"target: the recipe names no target profile; expected no --target-file (got {str(target_file)!r})")
        return None
    try:
        return recipe_target(recipe.target, target_file)
    except SpecError as exc:
        raise RecipeError(f"target: {exc}") from None


def check_recipe_against(recipe: Recipe, task, model, target_file=None) -> None:
    """Data checksum, layer names and target bit-widths, each a RecipeError naming the field.
    ``target_file``: the file of a profile of the user's own the recipe's ``target:`` names (a
    recipe's ``target:`` alone is a registered name: :func:`workbench.core.cost.recipe_target`)."""
    from ..core.quantize import validate_spec

    if recipe.dataset.sha256 is not None:
        actual = task.data.fingerprint()
        if actual != recipe.dataset.sha256:
            raise RecipeError(f"dataset.sha256: the task's data hashes to {actual}; the recipe expects {recipe.dataset.sha256}")
    if recipe.pruning is not None:
        for field in ("layers", "ignore"):
            try:
                prunable_layers(model, getattr(recipe.pruning, field))
            except SpecError as exc:
                raise RecipeError(f"pruning.{field}.{str(exc).removeprefix('layers.')}") from None
    try:
        resolved = validate_spec(recipe.quantization, model)
    except SpecError as exc:
        raise RecipeError(f"quantization.{exc}") from None
    target = recipe_profile(recipe, target_file)
    if target is not None:
        for name, lq in resolved.items():
            if lq.weight_bits is not None and lq.weight_bits not in target.weight_bits:
                where = f"quantization.layers.{name}.weight_bits" if name in recipe.quantization.layers else "quantization.weight_bits"
                raise RecipeError(f"{where}: {lq.weight_bits} bits is not allowed by target {target.name}; it allows {target.weight_bits}")
            if lq.act_bits is not None and lq.act_bits not in target.act_bits:
                where = f"quantization.layers.{name}.act_bits" if name in recipe.quantization.layers else "quantization.act_bits"
                raise RecipeError(f"{where}: {lq.act_bits} bits is not allowed by target {target.name}; it allows {target.act_bits}")


def recipe_diff(a: Recipe, b: Recipe, model=None) -> list[str]:
    """Human-readable per-layer (and section) differences between two recipes."""
    lines = []
    for section in ("task", "dataset", "target", "pruning", "ptq", "qat", "export", "expected"):
        va, vb = getattr(a, section), getattr(b, section)
        if va != vb:
            lines.append(f"{section}: {_short(va)} -> {_short(vb)}")
    qa, qb = a.quantization, b.quantization
    for f in ("weight_bits", "act_bits", "weight_granularity", "scale_type", "attention_bits"):
        if getattr(qa, f) != getattr(qb, f):
            lines.append(f"quantization.{f}: {getattr(qa, f)} -> {getattr(qb, f)}")
    if model is not None:
        from ..core.quantize import validate_spec

        ra, rb = validate_spec(qa, model), validate_spec(qb, model)
        for name in ra:
            if ra[name] != rb[name]:
                changes = [f"{f} {getattr(ra[name], f)} -> {getattr(rb[name], f)}" for f in ("weight_bits", "act_bits", "weight_granularity", "scale_type")
                           if getattr(ra[name], f) != getattr(rb[name], f)]
                lines.append(f"{name}: " + ", ".join(c.replace("None", "float") for c in changes))
    else:
        for sel in sorted(set(qa.layers) | set(qb.layers)):
            la, lb = qa.layers.get(sel, LayerSettings()), qb.layers.get(sel, LayerSettings())
            if la != lb:
                lines.append(f"layers.{sel}: {la.model_dump(exclude_none=True)} -> {lb.model_dump(exclude_none=True)}")
    return lines


def _short(v) -> str:
    return str(v.model_dump(exclude_none=True) if hasattr(v, "model_dump") else v)


def _export_section(formats, weight_encoding: str | None, pack) -> ExportSection:
    """A recipe's ``export:`` (None: the section's default); a bad value is a one-line RecipeError."""
    try:
        return ExportSection(formats=list(formats), **({"weight_encoding": weight_encoding} if weight_encoding is not None else {}),
                             **({"pack": pack} if pack is not None else {}))
    except ValidationError as exc:
        raise RecipeError("export." + format_error(exc, ExportSection)) from None


def task_ref(task) -> TaskRef:
    """The recipe's ``task:`` that rebuilds ``task``: its ``module:function`` factory or its
    registered name, with its seed, training epochs and subset; a RecipeError for a task built
    inline (no importable factory)."""
    from ..tasks.registry import list_tasks

    subset = None if task.subset is None else list(task.subset)
    if task.factory is not None:
        return TaskRef(factory=task.factory, seed=task.seed, epochs=task.train_epochs, subset=subset)
    if task.name in list_tasks():
        return TaskRef(name=task.name, seed=task.seed, epochs=task.train_epochs, subset=subset)
    raise RecipeError(f"task {task.name!r} was built inline and has no importable factory, so a recipe could not rebuild it; "
                      f"expected a registered task (@wb.register_task) or one built by a module:function "
                      f"(put the make_task call in a function in a module and pass 'module:function' to the CLI or wb.task_from_factory)")


def run_recipe(task, spec: QuantSpec, summary: dict, *, name: str = "recipe", ptq: PTQConfig | None = None, formats=("qcdq", "qonnx"),
               weight_encoding: str = "u8", pack: bool | str | None = None, tolerance: float = 0.02) -> Recipe:
    """A recipe that rebuilds what a quantisation run (``workbench quantize``: a uniform or
    spec-file configuration) wrote: the task, ``spec``, ``ptq``, the export ``formats``,
    ``weight_encoding`` (``auto`` resolved on this host, as the run's export did) and ``pack``, with
    the run's ``summary`` metric as its expectation, so ``workbench apply`` writes the same ONNX bytes."""
    from ..export.packing import resolve_pack
    from ..export.qcdq import resolve_weight_encoding

    packed = None if pack is None else resolve_pack(pack)
    export = _export_section(formats, resolve_weight_encoding(weight_encoding), "none" if packed == "none" else None)
    return Recipe(
        name=name,
        task=task_ref(task),
        dataset=DatasetRef(sha256=task.data.fingerprint(), source=task.data_source),
        quantization=QuantSpec.parse(spec),
        ptq=ptq if ptq is not None else PTQConfig(),
        export=export,
        expected={"quant_metric": Expectation(value=round(float(summary["quant_metric"]), 6), tolerance=tolerance),
                  "onnx_agreement": Expectation(min=0.98)},
    )


def promote(task, candidate, *, target: str | None = None, act_bits: int = 8, name: str = "recipe", tolerance: float = 0.02,
            base: QuantSpec | None = None, formats=("qcdq", "qonnx"), pruning: PruningSpec | dict | None = None,
            weight_encoding: str | None = None, pack: bool | str | None = None) -> Recipe:
    """A recipe for one evaluated candidate (a row with ``bits`` JSON and ``measured_metric``, and
    the ``pruning`` JSON of a pruned-and-quantised point, or ``pruning=`` given here).

    ``weight_encoding``: the recipe's ``export.weight_encoding``; None: the ``target`` profile's
    (so ``workbench apply`` exports as the exploration on that target did), else the recipe
    default ``u8``. ``auto`` (given, or the profile's) is never written: it is resolved on this
    host (:func:`workbench.export.qcdq.resolve_weight_encoding`: s8 with VNNI or on ARM, else u8),
    the encoding the exploration here measured, so the recipe writes the same bytes on every
    machine. ``pack``: ``export.pack`` (None: the default, int4)."""
    import json

    from ..core.spec import assignment_spec

    bits = json.loads(candidate["bits"]) if isinstance(candidate["bits"], str) else dict(candidate["bits"])
    spec = assignment_spec(bits, act_bits, base)
    if pruning is None and isinstance(candidate.get("pruning"), str) and candidate.get("pruning"):
        pruning = json.loads(candidate["pruning"])
    if weight_encoding is None and target is not None:
        from ..core.cost import load_target

        weight_encoding = load_target(target).weight_encoding
    if weight_encoding == "auto":
        from ..export.qcdq import resolve_weight_encoding

        weight_encoding = resolve_weight_encoding("auto")  # this host's, measured here; never "auto" in a recipe
    export = _export_section(formats, weight_encoding, pack)
    return Recipe(
        name=name,
        task=task_ref(task),
        dataset=DatasetRef(sha256=task.data.fingerprint(), source=task.data_source),
        target=target,
        quantization=spec,
        pruning=None if pruning is None else PruningSpec.parse(pruning),
        export=export,
        expected={"quant_metric": Expectation(value=round(float(candidate["measured_metric"]), 6), tolerance=tolerance),
                  "onnx_agreement": Expectation(min=0.98)},
    )
