"""Every bad input from the issue-13 audit, through the CLI and the API.

Each CLI case runs the real ``workbench`` command line (typer app, in this process through click's
runner, or as a real subprocess where the process itself matters) inside a sandbox folder and
asserts: exit code 2, exactly one ``error:`` line on stderr naming what was wrong, no traceback,
and that no file in the sandbox appeared, disappeared or changed. API cases assert the documented
exception type and a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import workbench as wb
from workbench.cli import app

WORKBENCH = str(Path(sys.executable).parent / "workbench")
SMALL = {"name": "digits-cnn", "seed": 0, "subset": [256, 128, 128], "epochs": 2}
BILLION_LAUGHS = "".join(  # ~350 bytes; 9**9 values once expanded
    ['a: &a [' + ", ".join(["lol"] * 9) + "]\n"] + [f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi")])
RECIPE = {"recipe_version": 1, "name": "r", "task": SMALL, "quantization": {"weight_bits": 8, "act_bits": 8}, "export": {"formats": ["qcdq"]}}


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its bytes (folders: 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def error_lines(stderr: str) -> list[str]:
    """The lines starting 'error:' (a progress bar's carriage returns end a line too)."""
    return [line for line in re.split(r"[\r\n]", stderr) if line.startswith("error:")]


def write_recipe(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**RECIPE, **changes}, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------- sandboxes
def _user_folder(box: Path) -> None:
    (box / "mine").mkdir()
    (box / "mine" / "notes.txt").write_text("my thesis")


def _earlier_run(box: Path, extra: str | None = None, edited: bool = False) -> None:
    """A folder an earlier workbench run wrote (its marker and listed files, with their hashes)."""
    d = box / "runs" / "a"
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(b"onnx")
    (d / ".workbench-run.json").write_text(json.dumps({"command": "apply", "complete": True, "files": ["model.onnx"], "kept": [],
                                                       "sha256": {"model.onnx": hashlib.sha256(b"onnx").hexdigest()}}))
    if edited:
        (d / "model.onnx").write_bytes(b"my own edit")
    if extra:
        (d / extra).write_text("mine")


def _repo(box: Path) -> None:
    (box / "proj" / ".git").mkdir(parents=True)
    (box / "proj" / "code.py").write_text("x = 1\n")


def _links(box: Path) -> None:
    (box / "real").mkdir()
    (box / "link").symlink_to(box / "real")
    (box / "afile").write_text("data")


def _factories(box: Path) -> None:
    # Importing this module would leave a file behind: it must never be imported without consent.
    (box / "evil_tasks.py").write_text(textwrap.dedent("""
        from pathlib import Path
        Path(__file__).with_name("IMPORTED").write_text("ran")
        def make():
            raise RuntimeError("boom")
    """))
    (box / "raising_tasks.py").write_text("def make():\n    raise RuntimeError('the factory broke')\ndef none():\n    return None\n")
    (box / "broken_tasks.py").write_text("def make(:\n    pass\n")
    (box / "import_raises.py").write_text("raise ImportError('needs a GPU library')\n")


def _recipe(box: Path, **changes) -> None:
    write_recipe(box / "r.yaml", **changes)


# (id, sandbox setup, CLI arguments, expected text in the error line)
CLI_CASES = [
    ("out-user-folder", _user_folder, ["apply", "r.yaml", "--out", "mine"], "holds files the workbench did not write"),
    ("out-user-folder-quantize", _user_folder, ["quantize", "digits-cnn", "--out", "mine"], "holds files the workbench did not write"),
    ("out-user-folder-demo", _user_folder, ["demo", "--out", "mine"], "holds files the workbench did not write"),
    ("out-user-folder-sensitivity", _user_folder, ["sensitivity", "digits-cnn", "--out", "mine"], "holds files the workbench did not write"),
    ("out-user-folder-search", _user_folder, ["search", "digits-cnn", "--budget-kib", "6", "--out", "mine"], "holds files the workbench did not write"),
    ("out-user-folder-prune", _user_folder, ["prune", "digits-cnn", "--out", "mine"], "holds files the workbench did not write"),
    ("out-user-folder-qat", lambda b: (_user_folder(b), _recipe(b, qat={"epochs": 1})), ["qat", "r.yaml", "--out", "mine"], "holds files the workbench did not write"),
    ("out-user-folder-overwrite", _user_folder, ["apply", "r.yaml", "--out", "mine", "--overwrite"], "holds files the workbench did not write"),
    ("out-dot", None, ["apply", "r.yaml", "--out", "."], "is the working directory"),
    ("out-ancestor", None, ["apply", "r.yaml", "--out", ".."], "is an ancestor of the working directory"),
    ("out-root", None, ["apply", "r.yaml", "--out", "/"], "is the file-system root"),
    ("out-home", None, ["apply", "r.yaml", "--out", "~"], "is your home folder"),
    ("out-repo-root", _repo, ["apply", "r.yaml", "--out", "proj"], "is a repository root"),
    ("out-symlink", _links, ["apply", "r.yaml", "--out", "link"], "is a symlink"),
    ("out-file", _links, ["apply", "r.yaml", "--out", "afile"], "is a file"),
    ("out-under-file", _links, ["apply", "r.yaml", "--out", "afile/sub"], "is a file"),
    ("out-earlier-run", _earlier_run, ["apply", "r.yaml", "--out", "runs/a"], "pass --overwrite"),
    ("out-earlier-run-plus-user-file", lambda b: _earlier_run(b, "notes.txt"), ["apply", "r.yaml", "--out", "runs/a", "--overwrite"],
     "holds files the workbench did not write (notes.txt)"),
    ("out-earlier-run-file-edited", lambda b: _earlier_run(b, edited=True), ["apply", "r.yaml", "--out", "runs/a", "--overwrite"],
     "holds files the workbench did not write (model.onnx, changed since it was written)"),
    ("factory-without-consent", lambda b: (_factories(b), _recipe(b, task={"factory": "evil_tasks:make"})),
     ["apply", "r.yaml", "--out", "o"], "would import module 'evil_tasks' and call make(); run code from a recipe only if you trust it"),
    ("factory-qat-without-consent", lambda b: (_factories(b), _recipe(b, task={"factory": "evil_tasks:make"}, qat={"epochs": 1})),
     ["qat", "r.yaml", "--out", "o"], "would import module 'evil_tasks'"),
    ("factory-sys-exit", lambda b: _recipe(b, task={"factory": "sys:exit"}), ["apply", "r.yaml", "--out", "o", "--allow-code"],
     "task.factory sys:exit called sys.exit(None); expected it to return a Task"),
    ("factory-raises", lambda b: (_factories(b), _recipe(b, task={"factory": "raising_tasks:make"})), ["apply", "r.yaml", "--out", "o", "--allow-code"],
     "task.factory raising_tasks:make raised RuntimeError: the factory broke"),
    ("factory-returns-none", lambda b: (_factories(b), _recipe(b, task={"factory": "raising_tasks:none"})), ["apply", "r.yaml", "--out", "o", "--allow-code"],
     "returned NoneType; expected a workbench Task"),
    ("factory-syntax-error", lambda b: (_factories(b), _recipe(b, task={"factory": "broken_tasks:make"})), ["apply", "r.yaml", "--out", "o", "--allow-code"],
     "importing module 'broken_tasks' failed: SyntaxError"),
    ("factory-import-raises", lambda b: (_factories(b), _recipe(b, task={"factory": "import_raises:make"})), ["apply", "r.yaml", "--out", "o", "--allow-code"],
     "cannot import module 'import_raises' (needs a GPU library)"),
    ("factory-missing-module", lambda b: _recipe(b, task={"factory": "no_such_module_xyz:make"}), ["apply", "r.yaml", "--out", "o", "--allow-code"],
     "cannot import module 'no_such_module_xyz'"),
    ("seed-huge", lambda b: _recipe(b, task={**SMALL, "seed": 10**30}), ["apply", "r.yaml", "--out", "o"], "task.seed"),
    ("seed-negative", lambda b: _recipe(b, task={**SMALL, "seed": -1}), ["apply", "r.yaml", "--out", "o"], "task.seed"),
    ("qat-seed-huge", lambda b: _recipe(b, qat={"epochs": 1, "seed": 2**63}), ["qat", "r.yaml", "--out", "o"], "qat.seed"),
    ("name-with-slash", lambda b: _recipe(b, name="a/b"), ["apply", "r.yaml", "--out", "o"], "name"),
    ("name-dotdot", lambda b: _recipe(b, name=".."), ["apply", "r.yaml", "--out", "o"], "name"),
    ("recipe-not-utf8", lambda b: (b / "r.yaml").write_bytes(b"recipe_version: 1\nname: \xff\xfe\n"), ["apply", "r.yaml", "--out", "o"],
     "r.yaml is not UTF-8 text"),
    ("recipe-alias-bomb", lambda b: (b / "r.yaml").write_text(BILLION_LAUGHS), ["apply", "r.yaml", "--out", "o"], "not an alias bomb"),
    ("recipe-not-yaml", lambda b: (b / "r.yaml").write_text("task: [unclosed\n"), ["apply", "r.yaml", "--out", "o"], "r.yaml is not valid YAML"),
    ("recipe-missing", None, ["apply", "nowhere.yaml", "--out", "o"], "nowhere.yaml"),
    ("recipe-check-alias-bomb", lambda b: (b / "r.yaml").write_text(BILLION_LAUGHS), ["recipe", "check", "r.yaml"], "not an alias bomb"),
    ("target-yaml-is-a-list", lambda b: ((b / "tgt.yaml").write_text("- 1\n- 2\n"), _recipe(b, target="tgt.yaml")),
     ["apply", "r.yaml", "--out", "o", "--target-file", "tgt.yaml"], "the file holds a list; expected a mapping with name, weight_bits"),
    ("target-yaml-bad-field", lambda b: ((b / "tgt.yaml").write_text("name: t\nweight_bits: [8, eight]\nact_bits: [8]\n"), _recipe(b, target="tgt.yaml")),
     ["apply", "r.yaml", "--out", "o", "--target-file", "tgt.yaml"], "weight_bits: expected a non-empty list of bit-widths in 2-8 or 16; got [8, 'eight'] (item 1"),
    ("search-target-malformed", lambda b: (b / "tgt.yaml").write_text("name: [\n"), ["search", "digits-cnn", "--budget-kib", "6", "--target", "tgt.yaml",
                                                                                      "--out", "o"], "tgt.yaml is not valid YAML"),
    ("spec-not-utf8", lambda b: (b / "s.yaml").write_bytes(b"weight_bits: \xff\n"), ["quantize", "digits-cnn", "--spec", "s.yaml", "--out", "o"],
     "s.yaml is not UTF-8 text"),
    ("spec-huge-list", lambda b: (b / "s.yaml").write_text("weight_bits: [" + ", ".join(map(str, range(20000))) + "]\n"),
     ["quantize", "digits-cnn", "--spec", "s.yaml", "--out", "o"], "weight_bits: expected an integer in 2-8 or 16"),
    ("prune-sparsity-1", None, ["prune", "digits-cnn", "--sparsity", "1.0", "--out", "o"], "expected a value in [0, 1)"),
    ("executor-unknown", None, ["sensitivity", "digits-cnn", "--executor", "gpu-cluster", "--out", "o"], "executor 'gpu-cluster'"),
    ("mlflow-bad-scheme", None, ["apply", "r.yaml", "--out", "o", "--mlflow", "ftp://x"], "mlflow tracking URI 'ftp://x'"),
    ("threads-env", None, ["apply", "r.yaml", "--out", "o", "ENV:WORKBENCH_THREADS=zero"], "WORKBENCH_THREADS='zero'; expected an integer thread count"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2_and_touches_nothing(case, tmp_path, monkeypatch):
    name, setup, args, expected = case
    box = tmp_path / "box"
    (box / "work").mkdir(parents=True)
    (box / "home").mkdir()
    work = box / "work"
    if not (work / "r.yaml").exists():
        write_recipe(work / "r.yaml")
    if setup is not None:
        setup(work)
    env = {"HOME": str(box / "home"), "WORKBENCH_ALLOW_CODE": None, "WORKBENCH_CACHE": str(box / "cache")}  # no baseline trained, no store made
    for a in [a for a in args if a.startswith("ENV:")]:
        key, _, value = a[4:].partition("=")
        env[key] = value
    args = [a for a in args if not a.startswith("ENV:")]
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    before = snapshot(box)
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2, (result.exit_code, result.stdout[-500:], result.stderr[-1500:], result.exception)
    assert "Traceback" not in result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and expected in errors[0], result.stderr[-1500:]
    assert len(errors[0]) < 700
    assert snapshot(box) == before  # nothing appeared, disappeared or changed
    for mod in ("evil_tasks", "raising_tasks", "broken_tasks", "import_raises"):
        sys.modules.pop(mod, None)


def test_recipe_check_and_diff_never_import_code_without_consent(tmp_path, monkeypatch):
    _factories(tmp_path)
    a = write_recipe(tmp_path / "a.yaml", task={"factory": "evil_tasks:make"})
    b = write_recipe(tmp_path / "b.yaml", task={"factory": "evil_tasks:make"}, quantization={"weight_bits": 4, "act_bits": 8})
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("WORKBENCH_ALLOW_CODE", raising=False)
    check = CliRunner().invoke(app, ["recipe", "check", str(a)])
    assert check.exit_code == 0 and check.stdout.startswith("ok (schema only)") and "--allow-code" in check.stdout
    diff = CliRunner().invoke(app, ["recipe", "diff", str(a), str(b)])
    assert diff.exit_code == 0 and "quantization.weight_bits: 8 -> 4" in diff.stdout
    assert not (tmp_path / "IMPORTED").exists() and "evil_tasks" not in sys.modules
    allowed = CliRunner().invoke(app, ["recipe", "check", str(a), "--allow-code"])
    assert allowed.exit_code == 2 and "task.factory evil_tasks:make raised RuntimeError: boom" in allowed.stderr
    assert (tmp_path / "IMPORTED").exists()  # with consent the module really ran
    sys.modules.pop("evil_tasks", None)


def test_api_refuses_factories_without_consent(tmp_path, monkeypatch):
    _factories(tmp_path)
    path = write_recipe(tmp_path / "r.yaml", task={"factory": "evil_tasks:make"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("WORKBENCH_ALLOW_CODE", raising=False)
    from workbench.runs.job import apply_recipe
    from workbench.runs.recipe import CodeNotAllowedError

    with pytest.raises(CodeNotAllowedError) as info:
        apply_recipe(path, tmp_path / "o", progress=False)
    assert "\n" not in str(info.value) and not (tmp_path / "IMPORTED").exists() and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ output folders, for real
def _cli(*args, cwd, env=None, preexec_fn=None, timeout=600):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
                          preexec_fn=preexec_fn, timeout=timeout)


def test_overwrite_replaces_only_a_workbench_folder_and_keeps_the_old_result_until_the_new_is_complete(tmp_path):
    write_recipe(tmp_path / "r.yaml")
    first = _cli("apply", "r.yaml", "--out", "runs/a", "--latency-runs", "10", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-1500:]
    out = tmp_path / "runs" / "a"
    manifest = json.loads((out / ".workbench-run.json").read_text())
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {".workbench-run.json"} and manifest["complete"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {oct(0o666 & ~umask)}
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~umask)
    again = _cli("apply", "r.yaml", "--out", "runs/a", "--latency-runs", "10", cwd=tmp_path)
    assert again.returncode == 2 and "pass --overwrite" in error_lines(again.stderr)[0]
    # a run killed mid-way leaves a temporary folder: the next run removes it; the result stays whole
    kept = (out / "model.onnx").read_bytes()
    proc = subprocess.Popen([WORKBENCH, "apply", "r.yaml", "--out", "runs/a", "--overwrite", "--latency-runs", "10"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".a.wbtmp-") for p in (tmp_path / "runs").iterdir()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "model.onnx").read_bytes() == kept
    assert json.loads((out / "summary.json").read_text())["onnx_sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    third = _cli("apply", "r.yaml", "--out", "runs/a", "--overwrite", "--latency-runs", "10", cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-1500:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a"]  # no temporary folder left


def test_two_concurrent_runs_on_one_folder_one_wins_the_other_fails_cleanly(tmp_path):
    write_recipe(tmp_path / "r.yaml")
    procs = [subprocess.Popen([WORKBENCH, "apply", "r.yaml", "--out", "runs/c", "--latency-runs", "10"], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "Traceback" not in loser
    assert len(error_lines(loser)) == 1 and ("being written by another workbench run" in loser or "holds an earlier workbench run" in loser)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["c"]
    assert (tmp_path / "runs" / "c" / "model.onnx").exists()


def _limit_file_size():
    """A full disk as the process sees it: writes past 64 KiB fail with EFBIG (SIGXFSZ ignored)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, digits):
    write_recipe(tmp_path / "r.yaml")
    before = snapshot(tmp_path)
    res = _cli("apply", "r.yaml", "--out", "runs/full", "--latency-runs", "10", cwd=tmp_path, preexec_fn=_limit_file_size)
    assert res.returncode == 2, res.stderr[-1500:]
    assert "Traceback" not in res.stderr
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "cannot write" in errors[0] and "File too large" in errors[0], res.stderr[-1500:]
    after = snapshot(tmp_path)
    assert after == before  # no result, no temporary folder, no half-written file, not even runs/


def test_sweep_outputs_are_written_together_or_not_at_all(tmp_path, digits):
    """sensitivity.csv never lands without sensitivity.html (the disk fills between them)."""
    res = _cli("sensitivity", "digits-cnn", "--weight-bits", "8", "--out", "runs/s", cwd=tmp_path, preexec_fn=_limit_file_size)
    assert res.returncode == 2 and "cannot write" in error_lines(res.stderr)[0], res.stderr[-1500:]
    assert not (tmp_path / "runs").exists()


# -------------------------------------------------------------------------------- API cases
API_CASES = [
    ("run-job-user-folder", lambda t: (_user_folder(t), lambda task, model: wb.run_job(task, {"w8": wb.QuantSpec.uniform(8, 8)}, t / "mine", float_model=model,
                                                                                      progress=False)), wb.infra.OutputPathError, "did not write"),
    ("create-task-seed", lambda t: (None, lambda task, model: wb.create_task("digits-cnn", seed=-5)), wb.infra.TaskError, "seed -5; expected an integer in 0-4294967295"),
    ("qat-config-seed", lambda t: (None, lambda task, model: wb.QATConfig(seed=2**70)), wb.infra.SpecError, "seed"),
    ("pruning-spec-sparsity-1", lambda t: (None, lambda task, model: wb.PruningSpec(sparsity=1.0)), wb.infra.SpecError, "sparsity: expected a value in [0, 1); got 1.0"),
    ("quant-spec-bits", lambda t: (None, lambda task, model: wb.QuantSpec(weight_bits=33)), wb.infra.SpecError, "weight_bits: expected an integer in 2-8 or 16"),
    ("calibration-channels", lambda t: (None, lambda task, model: wb.core.calibrate(wb.quantize_model(model, wb.QuantSpec.uniform(8, 8)), torch.randn(16, 3, 8, 8))),
     wb.infra.CalibrationError, "the model expects (N, 1, 8, 8)"),
    ("apply-missing-recipe", lambda t: (None, lambda task, model: __import__("workbench.runs.job").runs.job.apply_recipe(t / "none.yaml", t / "o", progress=False)),
     wb.infra.SpecError, "none.yaml"),
    ("threads-env-api", lambda t: (None, lambda task, model: _with_env("WORKBENCH_THREADS", "-3", lambda: wb.run_job(task, {"w8": wb.QuantSpec.uniform(8, 8)}, t / "o",
                                                                                                                       float_model=model, progress=False))),
     wb.infra.SpecError, "WORKBENCH_THREADS='-3'"),
]


def _with_env(key, value, fn):
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        return fn()
    finally:
        os.environ.pop(key) if old is None else os.environ.__setitem__(key, old)


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_raises_documented_one_line_error(case, tmp_path, digits):
    name, build, error, expected = case
    _, call = build(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(error) as info:
        call(*digits)
    assert isinstance(info.value, wb.WorkbenchError)
    assert "\n" not in str(info.value) and expected in str(info.value) and len(str(info.value)) < 700
    assert snapshot(tmp_path) == before


def _read_only(folder: Path, *args: str) -> list[str]:
    """Run ``workbench ARGS`` with ``folder`` mounted read-only (a private mount namespace)."""
    mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec \"$0\" \"$@\""
    return ["unshare", "--map-root-user", "--mount", "sh", "-c", mount, WORKBENCH, *args]


def test_a_read_only_disk_is_one_line_before_any_work(tmp_path, digits):
    probe = subprocess.run(["unshare", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine cannot make a private mount namespace: {probe.stderr.decode()[:200]}")
    ro = tmp_path / "ro"
    ro.mkdir()
    write_recipe(ro / "r.yaml")
    before = snapshot(tmp_path)
    res = subprocess.run(_read_only(ro, "apply", str(ro / "r.yaml"), "--out", str(ro / "runs" / "x"), "--latency-runs", "10"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-1500:]
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "cannot write" in errors[0] and "Read-only file system" in errors[0], res.stderr[-1500:]
    assert "it/s" not in res.stderr  # refused before any work
    assert snapshot(tmp_path) == before


# ----------------------------------------------------- files the workbench owns heal themselves
def test_a_truncated_baseline_cache_is_moved_aside_and_retrained_to_the_same_bytes(tmp_path):
    write_recipe(tmp_path / "r.yaml")
    env = {"WORKBENCH_CACHE": str(tmp_path / "cache")}
    first = _cli("apply", "r.yaml", "--out", "a", "--latency-runs", "10", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-1500:]
    (cached,) = (tmp_path / "cache" / "baselines").glob("digits-cnn-*.safetensors")
    cached.write_bytes(cached.read_bytes()[:100])  # a kill or a full disk mid-copy
    second = _cli("apply", "r.yaml", "--out", "b", "--latency-runs", "10", cwd=tmp_path, env=env)
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr[-1500:]
    assert f"{cached} is damaged" in second.stderr and "training the baseline again" in second.stderr
    assert len(list(cached.parent.glob(cached.name + ".corrupt-*"))) == 1
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


def test_a_corrupt_result_store_is_moved_aside_and_the_sweep_runs(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "results.sqlite").write_bytes(os.urandom(8192))
    res = _cli("sensitivity", "digits-cnn", "--weight-bits", "4", "--out", "s", cwd=tmp_path, env={"WORKBENCH_CACHE": str(cache)})
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-1500:]
    assert "results.sqlite is damaged" in res.stderr and "started a fresh result store" in res.stderr
    assert len(list(cache.glob("results.sqlite.corrupt-*"))) == 1 and (tmp_path / "s" / "sensitivity.csv").exists()


def test_a_read_only_result_store_is_refused_before_any_work(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    from workbench.infra.store import ResultStore

    ResultStore(cache / "results.sqlite").close()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(cache)], capture_output=True).returncode != 0:
            pytest.skip("root on a file system without chattr: a read-only folder cannot be made here")
    else:
        cache.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        res = _cli("sensitivity", "digits-cnn", "--weight-bits", "4", "--out", "s", cwd=tmp_path, env={"WORKBENCH_CACHE": str(cache)})
    finally:
        subprocess.run(["chattr", "-i", str(cache)], capture_output=True) if os.geteuid() == 0 else cache.chmod(0o755)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-1500:]
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "results.sqlite" in errors[0] and "--no-store" in errors[0], res.stderr[-1500:]
    assert snapshot(tmp_path) == before


def test_an_open_port_that_is_not_mlflow_is_refused_before_any_work(tmp_path):
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        write_recipe(tmp_path / "r.yaml")
        before = snapshot(tmp_path)
        res = _cli("apply", "r.yaml", "--out", "o", "--mlflow", f"http://127.0.0.1:{server.server_address[1]}", cwd=tmp_path, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-1500:]
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "does not answer MLflow's REST API" in errors[0]
    assert "it/s" not in res.stderr and snapshot(tmp_path) == before  # before any work


def _nan_metric_rows(tmp_path):
    """A metric that returns NaN: every row says so instead of 'ok'."""
    task = wb.create_task("digits-cnn").small(128, 64, 64)
    model = wb.load_or_train_baseline(task, progress=False)
    nan_task = wb.make_task(model, task.data.calib.x, (task.data.eval.x, task.data.eval.y), metric=lambda o, t: float("nan"), name="nan-metric")
    df = wb.sensitivity(nan_task, model, wb.SensitivityConfig(weight_bits=(4,)), store=False, progress=False)
    assert set(df["status"]) == {"nonfinite"}, df["status"].tolist()


def test_a_nan_metric_gives_nonfinite_rows_not_ok(tmp_path):
    _nan_metric_rows(tmp_path)


def test_a_read_only_baseline_cache_costs_time_not_the_result(tmp_path):
    cache = tmp_path / "cache"
    (cache / "baselines").mkdir(parents=True)
    write_recipe(tmp_path / "r.yaml")
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(cache / "baselines")], capture_output=True).returncode != 0:
        pytest.skip("root on a file system without chattr: a read-only folder cannot be made here")
    if not root:
        (cache / "baselines").chmod(0o555)
    try:
        res = _cli("apply", "r.yaml", "--out", "o", "--latency-runs", "10", cwd=tmp_path, env={"WORKBENCH_CACHE": str(cache)})
    finally:
        subprocess.run(["chattr", "-i", str(cache / "baselines")], capture_output=True) if root else (cache / "baselines").chmod(0o755)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-1500:]
    assert "the trained baseline was not cached" in res.stderr and (tmp_path / "o" / "model.onnx").exists()
    assert list((cache / "baselines").iterdir()) == []
