"""Issue 28, build item 2: every number reported is right or refused.

One test per audit case (the eight silent wrong results and the early checks), each reproducing
the case as the audit ran it (the real CLI as a subprocess where the audit used the CLI, the API
otherwise) and asserting the clean outcome: a one-line documented error, or the right number.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import workbench as wb
from workbench.tasks.metrics import ACCURACY
from workbench.core.quantize import validate_spec
from workbench.runs.recipe import RecipeError, load_recipe
from workbench.infra.store import ResultStore

WORKBENCH = str(Path(sys.executable).parent / "workbench")
SMALL = {"name": "digits-cnn", "seed": 0, "subset": [256, 128, 128], "epochs": 2}
RECIPE = {"recipe_version": 1, "name": "r", "task": SMALL, "quantization": {"weight_bits": 8, "act_bits": 8}, "export": {"formats": ["qcdq"]}}


def cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


def one_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, exactly one 'error:' line, holding every needle; returns it."""
    lines = [line for line in re.split(r"[\r\n]", res.stderr) if line.startswith("error:")]
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr and len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ------------------------------------------------------------------ 1. selectors: literal names win
class Bracketed(nn.Module):
    """Layers whose names hold glob characters, beside the name a glob would match."""

    def __init__(self, with_plain: bool = True):
        super().__init__()
        self.blocks = nn.ModuleDict({"conv[0]": nn.Conv2d(1, 4, 3, padding=1)})
        if with_plain:
            self.blocks["conv0"] = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        for m in self.blocks.values():
            x = torch.relu(m(x))
        return self.fc(x.flatten(1))


def test_selector_that_is_a_layer_name_with_glob_characters():
    # alone, the exact name selects its own layer (a glob would have matched nothing)
    resolved = validate_spec({"weight_bits": 8, "layers": {"blocks.conv[0]": {"weight_bits": 4}}}, Bracketed(with_plain=False))
    assert resolved["blocks.conv[0]"].weight_bits == 4 and resolved["fc"].weight_bits == 8
    # beside blocks.conv0 (what the glob matches) it hit conv0 and left conv[0] at 8 bits: now an error naming both
    with pytest.raises(wb.infra.SpecError) as info:
        validate_spec({"weight_bits": 8, "layers": {"blocks.conv[0]": {"weight_bits": 4}}}, Bracketed())
    msg = str(info.value)
    assert "\n" not in msg and "'blocks.conv[0]'" in msg and "'blocks.conv0'" in msg and "ambiguous" in msg
    # a glob that matches both still selects both; another layer's exact name is unaffected
    resolved = validate_spec({"weight_bits": 8, "layers": {"blocks.*": {"weight_bits": 4}, "fc": {"weight_bits": 6}}}, Bracketed())
    assert [resolved[n].weight_bits for n in ("blocks.conv[0]", "blocks.conv0", "fc")] == [4, 4, 6]


# ------------------------------------------------------------------ 2. expectations
@pytest.mark.parametrize("expected, message", [
    ({"quant_metric": {"value": 0.99}}, "expected.quant_metric: value 0.99 needs a tolerance"),
    ({"quant_metric": {"value": ".nan", "tolerance": 0.01}}, "expected.quant_metric.value: Input should be a finite number"),
    ({"quant_metric": {"min": ".nan"}}, "expected.quant_metric.min: Input should be a finite number"),
    ({"onnx_agreement": {"max": ".inf"}}, "expected.onnx_agreement.max: Input should be a finite number"),
    ({"quant_metric": {"value": 0.9, "tolerance": ".nan"}}, "expected.quant_metric.tolerance: Input should be a finite number"),
    ({"quant_metric": {"tolerance": 0.01}}, "tolerance 0.01 needs a value"),
    ({"quant_metric": {}}, "expected.quant_metric: checks nothing"),
    ({"quant_metric": {"min": 0.9, "max": 0.1}}, "min 0.9 is above max 0.1"),
])
def test_expectation_without_tolerance_or_with_nan(tmp_path, expected, message):
    text = yaml.safe_dump({**RECIPE, "expected": expected}, sort_keys=False)
    for key in (".nan", ".inf"):  # YAML's own NaN and infinity, as a user writes them
        text = text.replace(f"'{key}'", key)
    (tmp_path / "r.yaml").write_text(text)
    res = cli("apply", "r.yaml", "--out", "o", cwd=tmp_path)
    one_error(res, message, "r.yaml")
    assert not (tmp_path / "o").exists()


def test_expectation_check_fails_a_nan_measurement():
    from workbench.runs.recipe import Expectation

    assert Expectation(value=0.99, tolerance=0.01).check(0.09) == "0.09 is outside 0.99 +/- 0.01"
    for bad in (math.nan, math.inf):
        assert "is not a finite number" in Expectation(min=0.5).check(bad)
        assert "is not a finite number" in Expectation(value=0.5, tolerance=0.1).check(bad)
    assert Expectation(value=0.5, tolerance=0.1).check(0.55) is None


# ------------------------------------------------------------------ 3. store rows validated on read
def _edit(path: Path, sweep_kind: str, edits: dict[int, dict]) -> list[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT case_key, payload FROM rows WHERE kind = ? ORDER BY seq", (sweep_kind,)).fetchall()
        for i, change in edits.items():
            key, payload = rows[i]
            db.execute("UPDATE rows SET payload = ? WHERE case_key = ?", (json.dumps({**json.loads(payload), **change}), key))
    return [rows[i][0] for i in edits]


def test_edited_store_rows_are_set_aside_and_computed_again(tmp_path, digits):
    task, model = digits
    task = task.small(64, 64, 64)
    path = tmp_path / "results.sqlite"
    config = wb.SensitivityConfig(weight_bits=(4, 8), layers=("features.0",))
    first = wb.sensitivity(task, model, config, store=ResultStore(path), progress=False)
    keys = _edit(path, "sensitivity", {0: {"metric": "high"}, 1: {"weight_bits": None}})
    with pytest.warns(RuntimeWarning) as caught:
        again = wb.sensitivity(task, model, config, store=ResultStore(path), progress=False)
    said = [str(w.message) for w in caught if "set_aside" in str(w.message)]
    assert len(said) == 2 and all("\n" not in s for s in said)
    assert any(keys[0] in s and "metric is 'high'; expected a number" in s for s in said)
    assert any(keys[1] in s and "not those of its case" in s for s in said)
    assert again.attrs["computed"] == 2 and again.attrs["from_store"] == 0
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"))
    store = ResultStore(path)
    aside = store.set_aside_rows()
    assert sorted(r["case_key"] for r in aside) == sorted(keys)  # kept, not lost
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recomputed rows were stored: read back cleanly
        third = wb.sensitivity(task, model, config, store=store, progress=False)
    assert third.attrs["from_store"] == 2 and third.attrs["computed"] == 0


# ------------------------------------------------------------------ 4. duplicate YAML keys
@pytest.mark.parametrize("kind", ["recipe", "spec", "target"])
def test_duplicate_yaml_key_is_an_error(tmp_path, kind):
    if kind == "recipe":
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False) + "name: other\n")
        res = cli("recipe", "check", "r.yaml", cwd=tmp_path)
        line = len(yaml.safe_dump(RECIPE, sort_keys=False).splitlines()) + 1
        one_error(res, "duplicate key 'name'", f"line {line}", "first given on line 2", "r.yaml")
    elif kind == "spec":
        (tmp_path / "s.yaml").write_text("weight_bits: 8\nlayers:\n  fc: {weight_bits: 4}\n  fc: {weight_bits: 2}\n")
        res = cli("quantize", "digits-cnn", "--spec", "s.yaml", "--out", "o", cwd=tmp_path)
        one_error(res, "duplicate key 'fc'", "line 4", "first given on line 3", "s.yaml")
        assert not (tmp_path / "o").exists()
    else:
        (tmp_path / "t.yaml").write_text("name: t\nweight_bits: [4, 8]\nact_bits: [8]\nbudgets:\n  weight_kib: 100\n  weight_kib: 1\n")
        with pytest.raises(wb.infra.SpecError, match=r"duplicate key 'weight_kib' \(line 6, first given on line 5\)") as info:
            wb.load_target(tmp_path / "t.yaml")
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------ 5. NaN / inf in eval data
def test_nan_in_eval_data_is_refused_like_calibration_data(tmp_path, digits):
    task, model = digits
    x = task.data.eval.x.clone()
    x[3, 0, 2, 2] = float("nan")
    with pytest.raises(wb.infra.DatasetError, match=r"^eval data \(inputs\) holds 1 NaN or inf values; expected finite numbers$"):
        wb.make_task(model, task.data.calib.x, (x, task.data.eval.y), metric=ACCURACY)
    calib = task.data.calib.x.clone()
    calib[0, 0, 0, 0] = float("inf")
    with pytest.raises(wb.infra.CalibrationError, match=r"^calibration data holds 1 NaN or inf values; expected finite numbers$"):
        wb.make_task(model, calib, (task.data.eval.x, task.data.eval.y), metric=ACCURACY)
    # through the CLI, as the audit ran it: a task factory of the user's with NaN in its eval data
    (tmp_path / "nan_tasks.py").write_text(
        "import workbench as wb\nfrom workbench.tasks.metrics import ACCURACY\n"
        "def make():\n"
        "    t = wb.create_task('digits-cnn')\n"
        "    x = t.data.eval.x.clone(); x[0, 0, 0, 0] = float('nan')\n"
        "    return wb.make_task(t.model_factory(), t.data.calib.x, (x, t.data.eval.y), ACCURACY, name='nan-eval')\n")
    res = cli("quantize", "nan_tasks:make", "--out", "o", cwd=tmp_path)
    one_error(res, "eval data (inputs) holds 1 NaN or inf values")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 6. booleans are not numbers
def test_boolean_target_budget_is_not_a_number(tmp_path):
    (tmp_path / "t.yaml").write_text("name: t\nweight_bits: [4, 8]\nact_bits: [8]\nbudgets:\n  weight_kib: true\n")
    res = cli("search", "digits-cnn", "--target", "t.yaml", "--budget-kib", "6", "--out", "o", cwd=tmp_path)
    one_error(res, "budgets.weight_kib: expected a number, not true", "t.yaml")
    assert not (tmp_path / "o").exists()
    for text, field in (("weight_bits: [true, 8]", "weight_bits: .*item 0: True is not an integer"),
                        ("act_bits: [8, false]", "act_bits: .*item 1: False is not an integer")):
        (tmp_path / "u.yaml").write_text(f"name: u\n{text}\n" + ("act_bits: [8]\n" if "weight" in text else "weight_bits: [4, 8]\n"))
        with pytest.raises(wb.infra.SpecError, match=field):
            wb.load_target(tmp_path / "u.yaml")
    # recipes: seeds, subsets, expectations and target tolerances
    from workbench.runs.recipe import parse_recipe

    for change, field in (({"task": {**SMALL, "seed": True}}, "task.seed"), ({"task": {**SMALL, "subset": [True, 64, 64]}}, "task.subset[0]"),
                          ({"expected": {"quant_metric": {"min": True}}}, "expected.quant_metric.min"),
                          ({"targets": {"tflite-int8": {"min_agreement": True}}}, "targets.tflite-int8.min_agreement"),
                          ({"pruning": {"sparsity": 0.5, "seed": False}}, "pruning.seed")):
        with pytest.raises(RecipeError, match=rf"^{re.escape(field)}: expected (a number, not (true|false)|an integer; got (True|False))"):
            parse_recipe({**RECIPE, **change})


# ------------------------------------------------------------------ 7. repeated bit-widths
@pytest.mark.parametrize("args, message", [
    (["sensitivity", "digits-cnn", "--weight-bits", "4,4,4"], "weight_bits: expected distinct bit-widths, each given once; got [4, 4, 4] (4 given 3 times)"),
    (["sensitivity", "digits-cnn", "--act-bits", "8,float,8"], "act_bits: expected distinct bit-widths"),
    (["sensitivity", "digits-cnn", "--layers", "features.0,features.0"], "layers: expected distinct names"),
    (["prune", "digits-cnn", "--sparsity", "0.5,0.50"], "sparsities: expected distinct sparsity levels"),
    (["search", "digits-cnn", "--budget-kib", "6", "--widths", "--width-choices", "1.0,1.0"], "expected distinct comma-separated shares"),
])
def test_repeated_bit_widths_are_refused(tmp_path, args, message):
    res = cli(*args, "--out", "o", cwd=tmp_path)
    one_error(res, message)
    assert files(tmp_path) == set()


# ------------------------------------------------------------------ 8. inf / nan budgets
@pytest.mark.parametrize("args, message", [
    (["--budget-kib", "inf"], "--budget-kib inf: expected a positive finite number"),
    (["--budget-kib", "nan"], "--budget-kib nan: expected a positive finite number"),
    (["--budget-bops", "inf"], "--budget-bops inf: expected a positive finite number"),
    (["--budget", "weight_kib=nan"], "expected a positive finite number"),
    (["--budget", "inf"], "expected a positive finite number"),
])
def test_inf_and_nan_budgets_are_refused_before_any_work(tmp_path, args, message):
    cache = tmp_path / "cache"
    res = cli("search", "digits-cnn", *args, "--out", "o", cwd=tmp_path, env={"WORKBENCH_CACHE": str(cache)})
    one_error(res, message)
    assert not (tmp_path / "o").exists() and not (cache / "baselines").exists()  # no baseline trained, nothing swept


def test_inf_and_nan_budgets_are_refused_by_the_api(digits):
    task, model = digits
    empty = pd.DataFrame()  # refused before the sensitivity table is read
    for budgets, field in (([float("inf")], "budgets[0]"), ([4.0, float("nan")], "budgets[1]"), ([True], "budgets[0]"),
                           ({"weight_kib": float("inf")}, "budget weight_kib=inf"), ({"weight_kib": float("nan")}, "budget weight_kib=nan")):
        with pytest.raises(wb.infra.SpecError, match=re.escape(field)) as info:
            wb.search.search(task, model, empty, wb.SearchConfig(), budgets=budgets, progress=False, store=False)
        assert "\n" not in str(info.value) and "positive" in str(info.value)
    with pytest.raises(wb.infra.SpecError, match=r"extra_budgets\[0\] inf; expected a positive finite number"):
        wb.search.search(task, model, empty, wb.SearchConfig(), extra_budgets=(float("inf"),), progress=False, store=False)
    for value in (True, float("inf"), float("nan")):  # a limit (mcu's flash_kib tightened): true is not 1
        with pytest.raises(wb.infra.SpecError, match=r"^limit flash_kib=.*; expected a positive finite number$"):
            wb.search.search(task, model, empty, wb.SearchConfig(target="mcu"), budgets=[4.0], limits={"flash_kib": value}, progress=False, store=False)


# ------------------------------------------------------------------ 9. arguments that would fail late
def test_search_arguments_fail_before_the_sensitivity_sweep(tmp_path):
    cache = tmp_path / "cache"
    env = {"WORKBENCH_CACHE": str(cache)}
    # an activation width the target does not run: before the baseline is even trained
    res = cli("search", "digits-cnn", "--budget-kib", "6", "--act-bits", "4", "--out", "o", cwd=tmp_path, env=env)
    one_error(res, "--act-bits 4 is not allowed by target cpu-int8-ort; it allows 8")
    assert not (cache / "baselines").exists()
    res = cli("search", "digits-cnn", "--budget-kib", "6", "--act-bits", "33", "--out", "o", cwd=tmp_path, env=env)
    one_error(res, "--act-bits 33 is not allowed by target cpu-int8-ort")
    # a budget no assignment meets: refused from the model's costs, before any sensitivity case runs
    res = cli("search", "digits-cnn", "--budget-kib", "0.01", "--out", "o", cwd=tmp_path, env=env)
    one_error(res, "no assignment meets a budget of 0.01 KiB; the smallest reachable is")
    with sqlite3.connect(cache / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 0
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["sensitivity", "digits-cnn", "--layers", "features.0,nosuch"], "layers.nosuch: no such quantisable layer"),
    (["sensitivity", "digits-cnn", "--mode", "leave-one-float", "--base", "b.yaml"], "layers.fc: no such quantisable layer"),
    (["prune", "digits-cnn", "--layers", "nosuch"], "layers.nosuch: no such prunable layer"),
    (["prune", "digits-cnn", "--finetune-lr", "nan"], "finetune_lr"),
])
def test_layer_names_and_options_fail_before_the_baseline_is_trained(tmp_path, args, message):
    (tmp_path / "b.yaml").write_text("weight_bits: 8\nlayers:\n  fc: {weight_bits: 4}\n")
    cache = tmp_path / "cache"
    res = cli(*args, "--out", "o", cwd=tmp_path, env={"WORKBENCH_CACHE": str(cache)})
    one_error(res, message)
    assert not (cache / "baselines").exists() and not (tmp_path / "o").exists()
