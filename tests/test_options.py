"""One declaration per option set (issue 14, item 4): PTQConfig, QATConfig, SensitivityConfig,
PruningSweepConfig and SearchConfig are frozen pydantic models on ``spec.SpecModel``; a recipe
embeds PTQConfig and QATConfig as they are. Their ``to_dict()`` (what sweep fingerprints, QAT
checkpoints and run summaries record) is pinned to the values the former dataclasses gave, so
stored sweeps and checkpoints stay valid. Fast: no model is built."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pydantic
import pytest
import yaml

import workbench as wb
from workbench.core.options import OptionModel
from workbench.export.pipeline import PTQConfig
from workbench.analysis.pruning_sweep import PruningSweepConfig
from workbench.core.qat import QATConfig
from workbench.runs.recipe import Recipe, RecipeError, parse_recipe
from workbench.search.config import SearchConfig
from workbench.analysis.sensitivity import SensitivityConfig, fingerprint_settings
from workbench.core.spec import SpecModel

OPTIONS = [PTQConfig, QATConfig, SensitivityConfig, PruningSweepConfig, SearchConfig]
PTQ_DEFAULT = {"calib_samples": 512, "bias_correction": False, "equalize_iters": 0, "batch_size": 128, "act_equalization": None,
               "weight_rounding": "nearest", "rounding_iters": 500, "rounding_layers": None}
# to_dict() of the defaults as the dataclasses gave it before the change (tuples stay tuples)
BEFORE = {
    PTQConfig: PTQ_DEFAULT,
    QATConfig: {"epochs": 5, "lr": 0.0001, "batch_size": 64, "distill": True, "temperature": 4.0, "alpha": 0.7, "patience": 0, "seed": 0},
    SensitivityConfig: {"weight_bits": (2, 3, 4, 6, 8), "act_bits": (None,), "mode": "quantise-one",
                        "base": {"weight_bits": 8, "act_bits": 8, "weight_granularity": "per_channel", "scale_type": "float", "layers": {}},
                        "layers": None, "ptq": PTQ_DEFAULT, "hessian": False, "max_cache_mb": 512.0},  # max_cache_mb: not in fingerprints
    PruningSweepConfig: {"method": "structured", "sparsities": (0.25, 0.5, 0.75), "per_layer": True, "global_sweep": True, "criterion": "l1",
                         "scope": None, "m": 4, "layers": None, "finetune_epochs": 0, "finetune_lr": None, "seed": 0, "latency_runs": 50},
    SearchConfig: {"target": "cpu-int8-ort", "budget_kind": "onnx_kib", "act_bits": 8, "n_budgets": 6, "uniform_bits": (8, 6, 4, 3), "n_random": 3,
                   "seed": 0, "objective": "output_mse", "latency_runs": 50, "ptq": PTQ_DEFAULT},  # dataclasses.asdict before
}
BEFORE[SearchConfig] = {**BEFORE[SearchConfig], "refine_tolerance": 0.02, "refine_rounds": 2}  # added since, at the end


def _fingerprint_part(config) -> str:
    """The configuration's share of a sweep fingerprint / QAT checkpoint key (store.sweep_fingerprint's encoding)."""
    settings = fingerprint_settings(config) if isinstance(config, SensitivityConfig) else config.to_dict()
    return json.dumps(settings, sort_keys=True, default=str)


# JSON of to_dict() for non-default configurations, computed with the dataclasses before the change
CUSTOM = [
    (lambda: PTQConfig(calib_samples=None, bias_correction=True, equalize_iters=2, batch_size=32, act_equalization=0.5, weight_rounding="adaround",
                       rounding_iters=50, rounding_layers=["stack3.*", "fc"]),
     '{"act_equalization": 0.5, "batch_size": 32, "bias_correction": true, "calib_samples": null, "equalize_iters": 2, "rounding_iters": 50, '
     '"rounding_layers": ["stack3.*", "fc"], "weight_rounding": "adaround"}'),
    (lambda: QATConfig(epochs=np.int64(3), lr=1, batch_size=16, distill=False, temperature=2, alpha=np.float32(0.5), patience=1, seed=2**63 - 1),
     '{"alpha": 0.5, "batch_size": 16, "distill": false, "epochs": 3, "lr": 1.0, "patience": 1, "seed": 9223372036854775807, "temperature": 2.0}'),
    (lambda: SensitivityConfig(weight_bits=[2, None, 16], act_bits=(4, None), mode="leave-one-float",
                               base={"weight_bits": 4, "act_bits": 8, "layers": {"fc": {"weight_bits": "float"}}}, layers=["a", "b"],
                               ptq=PTQConfig(weight_rounding="gptq"), hessian=True),
     '{"act_bits": [4, null], "base": {"act_bits": 8, "layers": {"fc": {"weight_bits": "float"}}, "scale_type": "float", "weight_bits": 4, '
     '"weight_granularity": "per_channel"}, "hessian": true, "layers": ["a", "b"], "mode": "leave-one-float", "ptq": {"act_equalization": null, '
     '"batch_size": 128, "bias_correction": false, "calib_samples": 512, "equalize_iters": 0, "rounding_iters": 500, "rounding_layers": null, '
     '"weight_rounding": "gptq"}, "weight_bits": [2, null, 16]}'),
    (lambda: PruningSweepConfig(method="nm", sparsities=[0.5], per_layer=False, criterion="l2", scope=None, m=8, layers=["x"], finetune_epochs=1,
                                finetune_lr=1e-3, seed=3, latency_runs=0),
     '{"criterion": "l2", "finetune_epochs": 1, "finetune_lr": 0.001, "global_sweep": true, "latency_runs": 0, "layers": ["x"], "m": 8, '
     '"method": "nm", "per_layer": false, "scope": null, "seed": 3, "sparsities": [0.5]}'),
]


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_each_option_set_is_one_frozen_pydantic_model(cls):
    assert issubclass(cls, OptionModel) and issubclass(cls, SpecModel) and issubclass(cls, pydantic.BaseModel)
    assert cls.model_config["frozen"] is True and cls.model_config["extra"] == "forbid"
    config = cls()
    name = next(iter(cls.model_fields))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        setattr(config, name, getattr(config, name))
    assert config == cls() and config != cls(**{"hessian" if cls is SensitivityConfig else "batch_size" if cls is PTQConfig else "seed": 1 if cls is not SensitivityConfig else True})
    assert pickle.loads(pickle.dumps(config)) == config  # executors ship configs to worker processes
    schema = cls.model_json_schema()
    assert schema["additionalProperties"] is False and set(schema["properties"]) == set(cls.model_fields)
    assert cls(**{name: getattr(config, name)}) == config  # keyword construction


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_to_dict_of_the_defaults_is_what_the_dataclasses_gave(cls):
    d = cls().to_dict()
    assert d == BEFORE[cls] and list(d) == list(BEFORE[cls])  # same keys, same order, same values
    assert all(type(d[k]) is type(v) for k, v in BEFORE[cls].items())  # tuples stay tuples
    before = {k: v for k, v in BEFORE[cls].items() if not (cls is SensitivityConfig and k == "max_cache_mb")}
    assert _fingerprint_part(cls()) == json.dumps(before, sort_keys=True, default=str)


@pytest.mark.parametrize("make,before", CUSTOM, ids=["ptq", "qat", "sensitivity", "pruning"])
def test_fingerprints_of_non_default_configs_are_unchanged(make, before):
    assert _fingerprint_part(make()) == before
    assert hashlib.sha256(_fingerprint_part(make()).encode()).hexdigest() == hashlib.sha256(before.encode()).hexdigest()


@pytest.mark.parametrize("make,message", [
    (lambda: PTQConfig(weight_rounding="adaquant"), r"^ptq\.weight_rounding: expected one of nearest, gptq, gpfq, adaround; got 'adaquant'$"),
    (lambda: PTQConfig(calib_samples=0), r"^ptq\.calib_samples: expected an integer >= 1, or None for the whole calibration split; got 0$"),
    (lambda: PTQConfig(batch_size=True), r"^ptq\.batch_size: expected an integer >= 1; got True$"),
    (lambda: PTQConfig(act_equalization=float("nan")), r"^ptq\.act_equalization: expected an alpha in \(0, 1\) or None; got nan$"),
    (lambda: PTQConfig(rounding_layers="stem.0", weight_rounding="adaround"), r"^ptq\.rounding_layers: expected a list of layer names or globs; got 'stem\.0'$"),
    (lambda: PTQConfig(rounding_layers=["a"]), r"^ptq: rounding_layers applies to weight_rounding 'adaround'; got weight_rounding 'nearest'$"),
    (lambda: PTQConfig(calib_sample=64), r"^ptq\.calib_sample: unknown field; closest: calib_samples$"),
    (lambda: QATConfig(epochs=0), r"^qat\.epochs: expected an integer >= 1; got 0$"),
    (lambda: QATConfig(lr="1e-4"), r"^qat\.lr: expected a positive number; got '1e-4'$"),
    (lambda: QATConfig(seed=2**63), r"^qat\.seed: expected an integer in 0\.\.2\*\*63-1; got 9223372036854775808$"),
    (lambda: QATConfig(learning_rate=0.1), r"^qat\.learning_rate: unknown field; expected one of epochs, lr, "),
    (lambda: SensitivityConfig(weight_bits=(2, 9)), r"^weight_bits\[1\]: expected an integer in 2-8 or 16, a number format \(fp8_e4m3, fp8_e5m2\) or None for float; got 9$"),
    (lambda: SensitivityConfig(act_bits=(8, True)), r"^act_bits\[1\]: expected an integer in 2-8 or 16, a number format \(fp8_e4m3, fp8_e5m2\) or None for float; got True$"),
    (lambda: SensitivityConfig(weight_bits=[]), r"^weight_bits: expected at least one bit-width; got an empty list$"),
    (lambda: SensitivityConfig(mode="both"), r"^mode: expected one of quantise-one, leave-one-float; got 'both'$"),
    (lambda: SensitivityConfig(base={"weight_bits": 33}), r"^base\.weight_bits: expected an integer in 2-8 or 16, or 'float'; got 33$"),
    (lambda: SensitivityConfig(ptq={"batch_size": 0}), r"^ptq\.batch_size: expected an integer >= 1; got 0$"),
    (lambda: SensitivityConfig(hessian="yes"), r"^hessian: expected true or false; got 'yes'$"),
    (lambda: PruningSweepConfig(sparsities=(0.5, 1.5)), r"^sparsities\[1\]: sparsity: expected a value in \[0, 1\); got 1\.5$"),
    (lambda: PruningSweepConfig(sparsities=()), r"^sparsities: expected a non-empty list of values in \[0, 1\); got \(\)$"),
    (lambda: PruningSweepConfig(method="random"), r"^method: Input should be 'structured', 'unstructured' or 'nm'; got 'random'$"),
    (lambda: PruningSweepConfig(latency_runs=-1), r"^latency_runs: expected an integer >= 0; got -1$"),
    (lambda: PruningSweepConfig(per_layer=False, global_sweep=False), r"^per_layer and global_sweep are both off; expected at least one kind of row$"),
    (lambda: SearchConfig(objective="speed"), r"^objective: expected one of output_mse, metric; got 'speed'$"),
    (lambda: SearchConfig(uniform_bits=(8, "4")), r"^uniform_bits\[1\]: expected an integer >= 1; got '4'$"),
    (lambda: SearchConfig(ptq={"weight_rounding": "x"}), r"^ptq\.weight_rounding: expected one of nearest, gptq, gpfq, adaround; got 'x'$"),
    (lambda: SearchConfig(n_budget=3), r"^n_budget: unknown field; closest: n_budgets, budget_kind$"),
])
def test_bad_values_are_one_line_spec_errors_naming_the_field(make, message):
    with pytest.raises(wb.infra.SpecError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_nested_options_take_a_dict_or_the_object():
    assert SensitivityConfig(ptq={"calib_samples": 64}).ptq == PTQConfig(calib_samples=64) == SearchConfig(ptq={"calib_samples": 64}).ptq
    ptq = PTQConfig(weight_rounding="gptq")
    assert SensitivityConfig(ptq=ptq).ptq is ptq and SearchConfig(ptq=ptq).ptq is ptq
    assert hash(PTQConfig(rounding_layers=["a"], weight_rounding="adaround")) == hash(PTQConfig(rounding_layers=("a",), weight_rounding="adaround"))
    assert hash(QATConfig(lr=1)) == hash(QATConfig(lr=1.0))  # hashable, as the frozen dataclasses were
    base = wb.QuantSpec.uniform(4, 8)
    assert SensitivityConfig(base=base).base is base and SensitivityConfig(base={"weight_bits": 4}).base == base


def test_the_recipe_embeds_the_same_classes_with_full_field_paths():
    r = parse_recipe({"task": {"name": "digits-cnn"}, "ptq": {"calib_samples": 64, "weight_rounding": "adaround", "rounding_layers": ["a.*"]},
                      "qat": {"epochs": 2}})
    assert type(r.ptq) is PTQConfig and type(r.qat) is QATConfig and Recipe.model_fields["ptq"].annotation is PTQConfig
    assert r.ptq == PTQConfig(calib_samples=64, weight_rounding="adaround", rounding_layers=("a.*",)) and r.qat == QATConfig(epochs=2)
    assert parse_recipe({"task": {"name": "digits-cnn"}}).ptq == PTQConfig() and parse_recipe({"task": {"name": "digits-cnn"}}).qat is None
    for section, bad, message in (
            ("ptq", {"weight_rounding": "x"}, r"^ptq\.weight_rounding: expected one of nearest, gptq, gpfq, adaround; got 'x'$"),
            ("ptq", {"rounding_iters": 0}, r"^ptq\.rounding_iters: expected a positive integer; got 0$"),
            ("ptq", {"calib_sampels": 64}, r"^ptq\.calib_sampels: unknown field; closest: calib_samples$"),
            ("qat", {"epochs": 0}, r"^qat\.epochs: expected an integer >= 1; got 0$"),
            ("qat", {"seed": 2**64}, r"^qat\.seed: expected an integer in 0\.\.2\*\*63-1; got 18446744073709551616$"),
            ("qat", [1], r"^qat: Input should be a valid dictionary or instance of QATConfig; got \[1\]$")):
        with pytest.raises(RecipeError, match=message):
            parse_recipe({"task": {"name": "digits-cnn"}, section: bad})
    with pytest.raises(RecipeError, match=r"^quantization\.act_bit: unknown field; closest: act_bits$"):
        parse_recipe({"task": {"name": "digits-cnn"}, "quantization": {"act_bit": 8}})
    schema = Recipe.model_json_schema()
    assert schema["$defs"]["QATConfig"]["properties"]["seed"]["maximum"] == 2**63 - 1


def test_a_recipe_written_before_parses_and_reserializes_identically():
    before = ("recipe_version: 1\nname: digits-mixed\ntask:\n  name: digits-cnn\n  seed: 0\ndataset: {}\ntarget: cpu-int8-ort\nquantization:\n"
              "  weight_bits: 8\n  act_bits: 8\n  weight_granularity: per_channel\n  scale_type: float\n  layers:\n    features.3:\n      weight_bits: 4\n"
              "ptq:\n  calib_samples: 64\n  bias_correction: false\n  equalize_iters: 0\n  batch_size: 128\n  act_equalization: 0.5\n"
              "  weight_rounding: adaround\n  rounding_iters: 500\n  rounding_layers:\n  - features.*\npruning: null\nqat:\n  epochs: 2\n  lr: 0.001\n"
              "  batch_size: 64\n  distill: true\n  temperature: 4.0\n  alpha: 0.7\n  patience: 0\n  seed: 7\nexport:\n  formats:\n  - qcdq\n"
              "  weight_encoding: u8\nexpected: {}\n")
    assert parse_recipe(yaml.safe_load(before)).to_yaml() == before


def test_yaml_1_1_number_text_in_a_recipe_is_still_a_number():
    """PyYAML reads ``lr: 1e-4`` as the text '1e-4'; the former recipe sections accepted it, so the
    recipe still does, while QATConfig(lr='1e-4') in Python is refused (see above)."""
    r = parse_recipe(yaml.safe_load("task: {name: digits-cnn}\nptq: {act_equalization: 5e-1}\nqat: {lr: 1e-4, temperature: 2e0}\n"))
    assert r.qat.lr == 1e-4 and r.qat.temperature == 2.0 and r.ptq.act_equalization == 0.5
    with pytest.raises(RecipeError, match=r"^qat\.lr: expected a positive number; got 'fast'$"):
        parse_recipe({"task": {"name": "digits-cnn"}, "qat": {"lr": "fast"}})
    with pytest.raises(RecipeError, match=r"^qat\.epochs: expected an integer >= 1; got '5'$"):
        parse_recipe({"task": {"name": "digits-cnn"}, "qat": {"epochs": "5"}})


def test_the_memory_budget_is_not_part_of_a_sensitivity_fingerprint():
    assert fingerprint_settings(SensitivityConfig(max_cache_mb=64)) == fingerprint_settings(SensitivityConfig(max_cache_mb=None)) == fingerprint_settings(SensitivityConfig())
    assert fingerprint_settings(SensitivityConfig(hessian=True)) != fingerprint_settings(SensitivityConfig())
    assert SensitivityConfig(max_cache_mb=64).to_dict()["max_cache_mb"] == 64.0  # still a parameter runs record
