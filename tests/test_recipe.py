import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.infra.fileio import inside
from workbench.runs.recipe import RecipeError, check_recipe_against, load_recipe, parse_recipe, promote, recipe_diff

WORKBENCH = str(Path(sys.executable).parent / "workbench")

GOOD = {
    "recipe_version": 1,
    "name": "digits-mixed",
    "task": {"name": "digits-cnn"},
    "target": "cpu-int8-ort",
    "quantization": {"weight_bits": 8, "act_bits": 8, "layers": {"features.3": {"weight_bits": 4}, "classifier": {"weight_bits": 6}}},
    "export": {"formats": ["qcdq"]},
    "expected": {"quant_metric": {"value": 0.99, "tolerance": 0.03}, "onnx_agreement": {"min": 0.99}},
}


def write(tmp_path, obj, name="r.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(obj))
    return p


def run(*args):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, env=dict(os.environ), timeout=600)


def test_apply_twice_gives_byte_identical_onnx(tmp_path, digits):
    path = write(tmp_path, GOOD)
    a = run("apply", str(path), "--out", str(tmp_path / "a"), "--latency-runs", "10")
    b = run("apply", str(path), "--out", str(tmp_path / "b"), "--latency-runs", "10")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-1500:]
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    sa = json.loads((tmp_path / "a" / "summary.json").read_text())
    for key in ("fp_metric", "quant_metric", "onnx_metric", "onnx_agreement", "int_kernel_nodes", "recipe_sha256", "onnx_sha256"):
        assert key in sa
    import hashlib

    assert sa["recipe_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sa["onnx_sha256"] == hashlib.sha256((tmp_path / "a" / "model.onnx").read_bytes()).hexdigest()
    layers = (tmp_path / "a" / "layers_digits-mixed.csv").read_text()
    assert "features.3,Conv2d,4," in layers and "classifier,Linear,6," in layers


def test_apply_exits_1_when_a_metric_is_out_of_tolerance(tmp_path, digits):
    bad = copy.deepcopy(GOOD)
    bad["expected"]["quant_metric"] = {"value": 0.5, "tolerance": 0.01}
    res = run("apply", str(write(tmp_path, bad)), "--out", str(tmp_path / "o"), "--latency-runs", "10")
    assert res.returncode == 1
    assert "FAILED expected.quant_metric:" in res.stderr and "is outside 0.5 +/- 0.01" in res.stderr


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r["quantization"]["layers"]["features.3"].update(weight_bits=33), r"^quantization\.layers\.features\.3\.weight_bits: expected an integer"),
    (lambda r: r.update(colour="red"), r"^colour: unknown field"),
    (lambda r: r["quantization"].update(act_bit=8), r"^quantization\.act_bit: unknown field"),
    (lambda r: r.pop("task"), r"^task: required field is missing"),
    (lambda r: r.update(task={"name": "digits-cnn", "factory": "os:system"}), r"^task: .*exactly one of name"),
    (lambda r: r.update(task={"factory": "os.system('rm')"}), r"^task: .*factory must look like"),
    (lambda r: r.update(recipe_version=2), r"^recipe_version: "),
    (lambda r: r["ptq"].update(calib_samples=0) if "ptq" in r else r.update(ptq={"calib_samples": 0}), r"^ptq\.calib_samples: "),
    (lambda r: r.update(expected={"speed": {"min": 1}}), r"^expected: .*cannot expect 'speed'"),
    (lambda r: r["export"].update(formats=["tflite"]), r"^export\.formats: unknown export format 'tflite'.*known: qcdq, qonnx"),
    (lambda r: r.update(ptq={"weight_rounding": "gptq", "rounding_layers": ["features.*"]}),
     r"^ptq: rounding_layers applies to weight_rounding 'adaround'; got weight_rounding 'gptq'"),
    (lambda r: r.update(ptq={"weight_rounding": "adaround", "rounding_iters": 0}), r"^ptq\.rounding_iters: "),
])
def test_malformed_recipes_name_the_field(mutate, message):
    obj = copy.deepcopy(GOOD)
    mutate(obj)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(obj)


def test_recipe_checks_against_model_data_and_target(digits):
    task, model = digits
    r = parse_recipe({**GOOD, "quantization": {"layers": {"features.4": {"weight_bits": 4}}}})
    with pytest.raises(RecipeError, match=r"quantization\.layers\.features\.4: no such quantisable layer; closest"):
        check_recipe_against(r, task, model)
    r = parse_recipe({**GOOD, "target": "mcu"})
    with pytest.raises(RecipeError, match=r"quantization\.layers\.classifier\.weight_bits: 6 bits is not allowed by target mcu; it allows \[4, 8\]"):
        check_recipe_against(r, task, model)
    r = parse_recipe({**GOOD, "dataset": {"sha256": "0" * 64}})
    with pytest.raises(RecipeError, match=r"dataset\.sha256: the task's data hashes to [0-9a-f]{64}; the recipe expects 0{64}"):
        check_recipe_against(r, task, model)
    check_recipe_against(parse_recipe({**GOOD, "dataset": {"sha256": task.data.fingerprint()}}), task, model)
    with pytest.raises(RecipeError, match="^target: unknown target 'npu'"):
        check_recipe_against(parse_recipe({**GOOD, "target": "npu"}), task, model)


def test_factory_reference_is_imported_only_with_consent(tmp_path, monkeypatch, digits):
    (tmp_path / "my_tasks.py").write_text("import workbench as wb\nMARK = []\ndef make():\n    MARK.append(1)\n    return wb.create_task('digits-cnn')\n"
                                          "def wrong():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("WORKBENCH_ALLOW_CODE", raising=False)
    import sys

    from workbench.runs.recipe import CodeNotAllowedError, resolve_task

    ref = parse_recipe({**GOOD, "task": {"factory": "my_tasks:make"}}).task
    with pytest.raises(CodeNotAllowedError, match="would import module 'my_tasks' and call make\\(\\); .*--allow-code"):
        resolve_task(ref)
    assert "my_tasks" not in sys.modules  # nothing was imported
    assert resolve_task(ref, allow_code=True).name == "digits-cnn"
    assert sys.modules["my_tasks"].MARK == [1]
    monkeypatch.setenv("WORKBENCH_ALLOW_CODE", "1")
    assert resolve_task(ref).name == "digits-cnn"
    with pytest.raises(CodeNotAllowedError):
        resolve_task(ref, allow_code=False)  # the argument wins over the environment
    with pytest.raises(RecipeError, match="returned int; expected a workbench Task or \\(model, calibration inputs"):
        resolve_task(parse_recipe({**GOOD, "task": {"factory": "my_tasks:wrong"}}).task)
    with pytest.raises(RecipeError, match="has no function 'nope'"):
        resolve_task(parse_recipe({**GOOD, "task": {"factory": "my_tasks:nope"}}).task)


def test_promote_and_diff(digits, tmp_path):
    task, model = digits
    row = {"bits": json.dumps({"features.0": 8, "features.3": 4, "features.7": 3, "classifier": 8}), "measured_metric": 0.97}
    r = promote(task, row, target="cpu-int8-ort", name="p")
    check_recipe_against(r, task, model)
    path = tmp_path / "p.yaml"
    path.write_text(r.to_yaml())
    again, sha = load_recipe(path)
    assert again == r and len(sha) == 64
    other = parse_recipe({**yaml.safe_load(r.to_yaml()), "quantization": {**r.quantization.to_dict(), "layers": {"features.3": {"weight_bits": 6}}}})
    lines = recipe_diff(r, other, model)
    assert "features.3: weight_bits 4 -> 6" in lines and "features.7: weight_bits 3 -> 8" in lines
    res = run("recipe", "diff", str(path), str(path))
    assert res.returncode == 0 and res.stdout.strip() == "no differences"


def test_outputs_cannot_escape_the_output_directory(tmp_path):
    assert inside(tmp_path, "a/b.onnx") == (tmp_path / "a" / "b.onnx").resolve()
    for bad in ("../x.onnx", "/etc/passwd", "a/../../x"):
        with pytest.raises(wb.infra.OutputPathError, match="escapes the output directory"):
            inside(tmp_path, bad)


leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True), st.text(max_size=8),
                 st.sampled_from(["digits-cnn", "features.3", "float", "qcdq", "u8", "os:system", "a" * 64]))
tree = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.sampled_from(
    ["name", "factory", "seed", "weight_bits", "act_bits", "layers", "features.3", "value", "min", "tolerance", "formats", "sha256", "x"]), kids, max_size=4)),
    max_leaves=12)
sections = st.sampled_from(["recipe_version", "name", "task", "dataset", "target", "quantization", "ptq", "pruning", "export", "expected", "bogus"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(tree, st.dictionaries(sections, tree, max_size=6), st.builds(lambda extra: {**GOOD, **extra}, st.dictionaries(sections, tree, max_size=3))))
def test_fuzzed_recipes_only_raise_recipe_errors(digits, obj):
    task, model = digits
    try:
        recipe = parse_recipe(obj)
    except RecipeError as exc:
        assert "\n" not in str(exc)
        return
    try:
        if recipe.task.name == "digits-cnn":
            check_recipe_against(recipe, task, model)
    except RecipeError as exc:
        assert "\n" not in str(exc)


def test_recipe_schema_and_check_commands(tmp_path, digits):
    res = run("recipe", "schema")
    schema = json.loads(res.stdout)
    assert res.returncode == 0 and "quantization" in schema["properties"] and schema["additionalProperties"] is False
    good = write(tmp_path, GOOD)
    assert run("recipe", "check", str(good)).stdout.startswith("ok: ")
    bad = copy.deepcopy(GOOD)
    bad["quantization"]["layers"]["features.3"]["weight_bits"] = 33
    res = run("recipe", "check", str(write(tmp_path, bad, "bad.yaml")))
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: quantization.layers.features.3.weight_bits:")
