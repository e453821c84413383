"""Issue 28, item 7: target profiles are names or explicit files.

A recipe's ``target:`` is a registered profile name (``workbench/targets/*.yaml``) or names a file
the user gives on the command line (``--target-file PATH``) or in Python (``target_file=PATH``);
a value from a recipe is never joined to the profiles folder (``../`` traversal), never read as a
path (absolute or with separators), and a symlink in the profiles folder pointing out is not a
registered profile. Each refusal is one line naming the value and listing the registered names.
Every route is tried: the recipe field (``recipe check``, ``apply``, ``qat``, ``deploy``), the CLI
options (``--target-file``, ``search --target``) and the API (``load_target``, ``recipe_target``,
``check_recipe_against``, ``apply_recipe``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import workbench as wb
import workbench.core.cost as cost
from workbench.cli import app
from workbench.core.cost import list_targets, load_target, recipe_target, target_path
from workbench.runs.recipe import RecipeError, check_recipe_against, parse_recipe

WORKBENCH = str(Path(sys.executable).parent / "workbench")
SMALL = {"name": "digits-cnn", "seed": 0, "subset": [256, 128, 128], "epochs": 2}
RECIPE = {"recipe_version": 1, "name": "r", "task": SMALL, "quantization": {"weight_bits": 8, "act_bits": 8}, "export": {"formats": ["qcdq"]}}
# a profile that would let the recipe pass: reading it is the bug, so a refusal proves it was not read
EVIL = "name: evil\nweight_bits: [2, 3, 4, 5, 6, 7, 8]\nact_bits: [8]\n"
KNOWN = "expected one of cpu-int8-ort, fpga-dataflow, mcu"


def evil_file(root: Path) -> Path:
    (root / "x").mkdir(parents=True, exist_ok=True)
    path = root / "x" / "evil.yaml"
    path.write_text(EVIL)
    return path


def write_recipe(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**RECIPE, **changes}, sort_keys=False))
    return path


def one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-1500:]
    return lines[0]


def traversal(evil: Path) -> str:
    """The issue's value: a name that, joined to the profiles folder with .yaml, is ``evil``."""
    return os.path.relpath(evil.with_suffix(""), cost.TARGETS_DIR)


@pytest.fixture
def box(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WORKBENCH_ALLOW_CODE", raising=False)
    return tmp_path


def _model(task):
    return task.create_model()


# ----------------------------------------------------------------------------- the recipe field


def test_recipe_target_dotdot_traversal_is_refused_by_recipe_check(box):
    """The issue's case, as a real subprocess: ``target: ../../../../tmp/x/evil`` read any YAML."""
    evil = evil_file(box)
    value = traversal(evil)
    assert value.startswith("../") and (cost.TARGETS_DIR / f"{value}.yaml").resolve() == evil.resolve()
    write_recipe(box / "r.yaml", target=value)
    run = subprocess.run([WORKBENCH, "recipe", "check", "r.yaml"], capture_output=True, text=True, cwd=box,
                         env={**os.environ, "HOME": str(box / "home")}, timeout=600)
    assert run.returncode == 2, (run.stdout, run.stderr[-1500:])
    line = one_error(run.stderr)
    assert line.startswith(f"error: target: unknown target {value!r}; {KNOWN} (a registered profile)") and "--target-file" in line, line
    assert len(line) < 700


@pytest.mark.parametrize("command", ["apply", "qat", "deploy"])
def test_recipe_target_absolute_path_is_refused_by_every_recipe_command(box, command):
    evil = evil_file(box)
    changes = {"qat": {"epochs": 1}} if command == "qat" else {"targets": ["tflite-int8"]} if command == "deploy" else {}
    write_recipe(box / "r.yaml", target=str(evil), **changes)
    result = CliRunner().invoke(app, [command, "r.yaml", "--out", "o"], env={"WORKBENCH_CACHE": str(box / "cache")})
    assert result.exit_code == 2, (result.stdout[-500:], result.stderr[-1500:], result.exception)
    line = one_error(result.stderr)
    assert f"unknown target {str(evil)!r}; {KNOWN}" in line and "--target-file" in line, line
    assert not (box / "o").exists()


@pytest.mark.parametrize("value", ["x/evil.yaml", "x/evil", "./mcu", "targets/mcu", "mcu/", "..", "mcu\\..\\mcu", "mcu.yaml"])
def test_recipe_target_name_with_path_separators_is_refused(box, digits, value):
    evil_file(box)
    task, _ = digits
    recipe = parse_recipe({**RECIPE, "target": value})
    with pytest.raises(RecipeError) as info:
        check_recipe_against(recipe, task, _model(task))
    text = str(info.value)
    assert text.startswith(f"target: unknown target {value!r}; {KNOWN}") and "\n" not in text


def test_recipe_target_symlink_in_the_profiles_folder_pointing_out_is_not_registered(box, digits, monkeypatch):
    evil = evil_file(box)
    profiles = box / "profiles"
    profiles.mkdir()
    for name in ("cpu-int8-ort", "fpga-dataflow", "mcu"):
        (profiles / f"{name}.yaml").write_bytes((cost.TARGETS_DIR / f"{name}.yaml").read_bytes())
    (profiles / "evil.yaml").symlink_to(evil)
    (profiles / "loop.yaml").symlink_to(profiles / "loop.yaml")  # a broken link: not a profile either, and no traceback
    monkeypatch.setattr(cost, "TARGETS_DIR", profiles)
    assert list_targets() == ["cpu-int8-ort", "fpga-dataflow", "mcu"]
    for route in (lambda: load_target("evil"), lambda: target_path("evil"), lambda: recipe_target("evil"), lambda: load_target("loop")):
        with pytest.raises(wb.infra.SpecError, match=rf"^unknown target '(evil|loop)'; {KNOWN}"):
            route()
    task, _ = digits
    with pytest.raises(RecipeError, match=rf"^target: unknown target 'evil'; {KNOWN} \(a registered profile\)"):
        check_recipe_against(parse_recipe({**RECIPE, "target": "evil"}), task, _model(task))
    assert load_target("mcu").name == "mcu"  # the registered ones still resolve, from the folder's own files
    env = {"WORKBENCH_CACHE": str(box / "cache")}  # the CLI routes, in this process (the folder is patched here)
    write_recipe(box / "r.yaml", target="evil")
    check = CliRunner().invoke(app, ["recipe", "check", "r.yaml"], env=env)
    assert check.exit_code == 2 and f"target: unknown target 'evil'; {KNOWN}" in one_error(check.stderr)
    search = CliRunner().invoke(app, ["search", "digits-cnn", "--budget-kib", "6", "--target", "evil", "--out", "o"], env=env)
    assert search.exit_code == 2 and "unknown target 'evil'; expected a profile (cpu-int8-ort, fpga-dataflow, mcu)" in one_error(search.stderr)
    assert not (box / "o").exists()
    inner = profiles / "inner.yaml"  # a link to a file of the folder itself stays registered
    inner.symlink_to(profiles / "mcu.yaml")
    assert "inner" in list_targets() and load_target("inner").name == "mcu"


def test_recipe_target_registered_name_still_works(box, digits):
    task, _ = digits
    recipe = parse_recipe({**RECIPE, "target": "mcu", "quantization": {"weight_bits": 3, "act_bits": 8}})
    with pytest.raises(RecipeError, match=r"^quantization\.weight_bits: 3 bits is not allowed by target mcu; it allows \[4, 8\]"):
        check_recipe_against(recipe, task, _model(task))
    check_recipe_against(parse_recipe({**RECIPE, "target": "mcu", "quantization": {"weight_bits": 4, "act_bits": 8}}), task, _model(task))


def test_recipe_target_control_characters_and_empty_are_refused_by_the_parser():
    for value in ("", "  ", "mcu\n../x", "a\x00b"):
        with pytest.raises(RecipeError, match=r"^target: expected a registered target profile name") as info:
            parse_recipe({**RECIPE, "target": value})
        assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- the CLI options


def test_cli_target_file_is_the_explicit_way_to_a_profile_of_ones_own(box):
    evil = evil_file(box)  # here the user's own profile, given on the command line
    write_recipe(box / "r.yaml", target="evil", quantization={"weight_bits": 3, "act_bits": 8})
    env = {"WORKBENCH_CACHE": str(box / "cache")}
    refused = CliRunner().invoke(app, ["recipe", "check", "r.yaml"], env=env)
    assert refused.exit_code == 2 and f"unknown target 'evil'; {KNOWN}" in one_error(refused.stderr)
    ok = CliRunner().invoke(app, ["recipe", "check", "r.yaml", "--target-file", str(evil)], env=env)
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: r.yaml"), (ok.stdout, ok.stderr)
    # the recipe may name the file by its path too (a recipe promoted from `search --target FILE`)
    write_recipe(box / "p.yaml", target="x/evil.yaml", quantization={"weight_bits": 3, "act_bits": 8})
    assert CliRunner().invoke(app, ["recipe", "check", "p.yaml", "--target-file", "x/evil.yaml"], env=env).exit_code == 0
    # a file that is not the profile the recipe names is refused, not silently used
    write_recipe(box / "m.yaml", target="mcu")
    other = CliRunner().invoke(app, ["recipe", "check", "m.yaml", "--target-file", str(evil)], env=env)
    assert other.exit_code == 2
    assert f"target: the recipe names target 'mcu'; --target-file {evil} holds profile 'evil'" in one_error(other.stderr)
    # --target-file with a recipe that names no target is a mistake, said so
    write_recipe(box / "n.yaml")
    none = CliRunner().invoke(app, ["apply", "n.yaml", "--out", "o", "--target-file", str(evil)], env=env)
    assert none.exit_code == 2 and "the recipe names no target profile" in one_error(none.stderr) and not (box / "o").exists()
    missing = CliRunner().invoke(app, ["recipe", "check", "r.yaml", "--target-file", "nowhere.yaml"], env=env)
    assert missing.exit_code == 2 and "target file 'nowhere.yaml' does not exist" in one_error(missing.stderr)


@pytest.mark.parametrize("how", ["dotdot", "separators"])
def test_cli_search_target_option_never_joins_a_name_to_the_profiles_folder(box, how):
    evil = evil_file(box)
    value = traversal(evil) if how == "dotdot" else "x/evil"
    result = CliRunner().invoke(app, ["search", "digits-cnn", "--budget-kib", "6", "--target", value, "--out", "o"],
                                env={"WORKBENCH_CACHE": str(box / "cache")})
    assert result.exit_code == 2
    assert f"unknown target {value!r}; expected a profile (cpu-int8-ort, fpga-dataflow, mcu)" in one_error(result.stderr)
    assert not (box / "o").exists()


# ----------------------------------------------------------------------------- the API


def test_api_load_target_refuses_traversal_and_reads_only_files_given_as_files(box):
    evil = evil_file(box)
    for value in (traversal(evil), "x/evil", "/" + str(evil.with_suffix("")).lstrip("/"), "", "mcu/../mcu"):
        with pytest.raises(wb.infra.SpecError, match=rf"^unknown target .*; {KNOWN} or a YAML file$") as info:
            load_target(value)
        assert "\n" not in str(info.value)
    for value in (None, 8, ["mcu"]):
        with pytest.raises(wb.infra.SpecError, match=rf"^unknown target .*; {KNOWN}"):
            load_target(value)
    # a file the caller gives (a Path, or a string ending in .yaml) is the caller's explicit choice
    assert load_target(evil).name == "evil" and load_target(str(evil)).name == "evil"
    assert load_target(load_target("mcu")) == load_target("mcu")


def test_api_recipe_target_reads_a_file_only_when_given(box, digits):
    evil = evil_file(box)
    for value in (str(evil), traversal(evil), "x/evil.yaml"):
        with pytest.raises(wb.infra.SpecError, match=rf"^unknown target .*; {KNOWN} \(a registered profile\); a profile of your own is a file "
                                                r"given on the command line \(--target-file PATH; Python: target_file=PATH\)$"):
            recipe_target(value)
    assert recipe_target("evil", evil).name == "evil" and recipe_target(str(evil), evil).name == "evil"
    assert recipe_target("mcu").name == "mcu"
    task, _ = digits
    recipe = parse_recipe({**RECIPE, "target": str(evil), "quantization": {"weight_bits": 3, "act_bits": 8}})
    with pytest.raises(RecipeError, match="^target: unknown target"):
        check_recipe_against(recipe, task, _model(task))
    check_recipe_against(recipe, task, _model(task), target_file=evil)


def test_api_apply_recipe_refuses_a_path_in_the_recipe_before_any_work(box):
    evil = evil_file(box)
    path = write_recipe(box / "r.yaml", target=str(evil))
    from workbench.runs.job import apply_recipe

    with pytest.raises(RecipeError, match=rf"^target: unknown target {str(evil)!r}; {KNOWN}") as info:
        apply_recipe(path, box / "o", progress=False)
    assert "\n" not in str(info.value) and not (box / "o").exists()
    with pytest.raises(RecipeError, match=rf"^target: the recipe names target {str(evil)!r}; --target-file .*holds profile 'mcu'"):
        apply_recipe(path, box / "o", progress=False, target_file=target_path("mcu"))
    assert not (box / "o").exists()
