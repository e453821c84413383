"""`workbench quantize ... --recipe FILE` writes the recipe of a uniform or spec-file
configuration, and `workbench apply FILE` rebuilds the ONNX bytes the quantize run wrote; the file
is written like every other output: never over a file the workbench did not write."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

WORKBENCH = str(Path(sys.executable).parent / "workbench")

OLD_RECIPE = {"recipe_version": 1, "name": "old", "task": {"name": "digits-cnn"}, "quantization": {"weight_bits": 8, "act_bits": 8}}


def run(*args, cwd):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ}, timeout=600)


def test_a_spec_file_recipe_applies_to_the_quantize_run_s_bytes(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"weight_bits": 8, "act_bits": 8, "layers": {"features.3": {"weight_bits": 4},
                                                                                                    "classifier": {"weight_bits": 6}}}))
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(OLD_RECIPE))  # a recipe the workbench wrote earlier: --overwrite replaces it
    q = run("quantize", "digits-cnn", "--spec", "spec.yaml", "--format", "qcdq", "--recipe", "mixed.yaml", "--overwrite", "--out", "q", cwd=tmp_path)
    assert q.returncode == 0, q.stderr[-2000:]
    recipe = yaml.safe_load((tmp_path / "mixed.yaml").read_text())
    assert recipe["name"] == "mixed" and recipe["task"] == {"name": "digits-cnn", "seed": 0, "epochs": 30}
    assert recipe["quantization"]["layers"] == {"features.3": {"weight_bits": 4}, "classifier": {"weight_bits": 6}}
    assert recipe["export"]["formats"] == ["qcdq"] and recipe["export"]["weight_encoding"] in ("u8", "s8")  # resolved here, never auto
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert recipe["expected"]["quant_metric"]["value"] == round(summary["quant_metric"], 6)
    a = run("apply", "mixed.yaml", "--latency-runs", "10", "--out", "a", cwd=tmp_path)
    assert a.returncode == 0, a.stderr[-2000:]
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "q" / "model.onnx").read_bytes()
    assert "features.3,Conv2d,4," in (tmp_path / "a" / "layers_mixed.csv").read_text()


def test_a_uniform_recipe_inside_the_run_folder_is_one_of_its_files(tmp_path):
    q = run("quantize", "digits-cnn", "--weight-bits", "4", "--format", "qcdq", "--pack", "none", "--recipe", "q/w4.yaml", "--out", "q",
            cwd=tmp_path)
    assert q.returncode == 0, q.stderr[-2000:]
    manifest = json.loads((tmp_path / "q" / ".workbench-run.json").read_text())
    assert "w4.yaml" in manifest["files"]  # the workbench's own file: a later --overwrite replaces it, nothing else does
    recipe = yaml.safe_load((tmp_path / "q" / "w4.yaml").read_text())
    assert recipe["quantization"]["weight_bits"] == 4 and recipe["quantization"]["layers"] == {} and recipe["export"]["pack"] == "none"
    a = run("apply", "q/w4.yaml", "--latency-runs", "10", "--out", "a", cwd=tmp_path)
    assert a.returncode == 0, a.stderr[-2000:]
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "q" / "model.onnx").read_bytes()


def test_a_file_the_workbench_did_not_write_is_never_replaced(tmp_path):
    (tmp_path / "notes.yaml").write_text("my notes\n")
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(OLD_RECIPE))
    (tmp_path / "folder").mkdir()
    for args, message in [(["--recipe", "notes.yaml"], "exists; expected a new file, or --overwrite"),
                          (["--recipe", "notes.yaml", "--overwrite"], "is not a workbench recipe, so it is never replaced"),
                          (["--recipe", "old.yaml"], "exists; expected a new file, or --overwrite"),
                          (["--recipe", "folder"], "is not a regular file"),
                          (["--recipe", "notes.yaml/r.yaml"], "is a file; expected a folder"),
                          (["--recipe", "o"], "is the --out folder")]:
        res = run("quantize", "digits-cnn", "--weight-bits", "4", "--out", "o", *args, cwd=tmp_path)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.returncode == 2 and len(errors) == 1 and message in errors[0], (args, res.stderr[-1000:])
        assert not (tmp_path / "o").exists()  # refused before any work
    assert (tmp_path / "notes.yaml").read_text() == "my notes\n" and yaml.safe_load((tmp_path / "old.yaml").read_text()) == OLD_RECIPE
