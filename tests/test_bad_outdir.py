"""Output folders and the cache, from the issue-28 audit: every case through the real CLI.

A user's file is never deleted, renamed or overwritten, whatever the flags, the folder's history or
the timing: ``--overwrite`` removes exactly the files the old run's marker accounts for (kept
folders included), a file appearing during the final check or the swap survives, and ``--out``
inside the cache, an empty ``WORKBENCH_CACHE`` or an over-long path are one-line errors before any
work. Each case runs the ``workbench`` typer app (in this process, or as a real subprocess where the
process itself matters) in its own folder with its own cache.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_bad_inputs import error_lines, snapshot, write_recipe
from workbench.cli import app
from workbench.infra.errors import OutputPathError
from workbench.infra.outdir import MARKER, ForeignFileWarning, RunDir

WORKBENCH = str(Path(sys.executable).parent / "workbench")
QAT = {"epochs": 1, "lr": 1e-3}


@pytest.fixture
def box(tmp_path, monkeypatch):
    """A working folder with the recipes r.yaml (PTQ) and rq.yaml (QAT), as the working directory."""
    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path / "r.yaml")
    write_recipe(tmp_path / "rq.yaml", name="rq", qat=QAT)
    return tmp_path


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok(res) -> None:
    assert res.exit_code == 0, (res.exit_code, res.stdout[-800:], res.stderr[-1500:], res.exception)


def refused(res, *expected: str) -> str:
    """Exit 2 with exactly one one-line ``error:`` naming ``expected``, no traceback."""
    assert res.exit_code == 2, (res.exit_code, res.stdout[-800:], res.stderr[-1500:], res.exception)
    assert "Traceback" not in res.stderr
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and all(e in errors[0] for e in expected), res.stderr[-1500:]
    assert len(errors[0]) < 700
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary folders of the output machinery beside the results."""
    return sorted(p.name for p in folder.iterdir() if ".wbtmp-" in p.name or ".wbold-" in p.name or ".wbprobe-" in p.name)


# ------------------------------------------------------------------- case 1: user files in kept folders
def test_apply_overwrite_of_a_qat_folder_never_deletes_a_user_file_in_checkpoints(box):
    ok(cli("qat", "rq.yaml", "--out", "o", "--latency-runs", "10"))
    ours = sorted(p.name for p in (box / "o" / "checkpoints").iterdir())
    assert "qat-last.safetensors" in ours
    (box / "o" / "checkpoints" / "notes.txt").write_text("my notes")
    (box / "o" / "checkpoints" / "mine").mkdir()
    (box / "o" / "checkpoints" / "mine" / "thesis.tex").write_text("my thesis")
    write_recipe(box / "rq2.yaml", name="rq2", qat={**QAT, "lr": 2e-3})
    before = snapshot(box)
    err = refused(cli("apply", "r.yaml", "--out", "o", "--overwrite", "--latency-runs", "10"), "holds files the workbench did not write")
    assert "checkpoints/mine/thesis.tex" in err and "checkpoints/notes.txt" in err
    # resuming the same QAT run, or another recipe's QAT with --overwrite: refused alike (the kept folder is no exception)
    refused(cli("qat", "rq.yaml", "--out", "o", "--latency-runs", "10"), "checkpoints/mine/thesis.tex")
    refused(cli("qat", "rq2.yaml", "--out", "o", "--overwrite", "--latency-runs", "10"), "checkpoints/mine/thesis.tex")
    assert snapshot(box) == before
    # the user's files moved out, --overwrite replaces the run: its checkpoints (the workbench's) go with it
    (box / "o" / "checkpoints" / "notes.txt").unlink()
    (box / "o" / "checkpoints" / "mine" / "thesis.tex").unlink()
    (box / "o" / "checkpoints" / "mine").rmdir()
    ok(cli("apply", "r.yaml", "--out", "o", "--overwrite", "--latency-runs", "10"))
    assert not (box / "o" / "checkpoints").exists()
    assert json.loads((box / "o" / MARKER).read_text())["command"] == "apply"
    assert leftovers(box) == []


def test_sensitivity_overwrite_of_a_width_search_never_deletes_a_user_file_in_widths(box, digits):
    search = ["search", "digits-cnn", "--budget", "weight_kib=64", "--widths", "--finetune-epochs", "0", "--trials", "2"]
    ok(cli(*search, "--out", "o"))
    assert any((box / "o" / "widths" / "study").glob("*.journal"))
    (box / "o" / "widths" / "notes.txt").write_text("my notes")
    (box / "o" / "widths" / "study" / "mine.txt").write_text("my study notes")
    before = snapshot(box)
    err = refused(cli("sensitivity", "digits-cnn", "--weight-bits", "4", "--out", "o", "--overwrite"), "holds files the workbench did not write")
    assert "widths/notes.txt" in err and "widths/study/mine.txt" in err
    refused(cli(*search, "--out", "o"), "widths/notes.txt")  # continuing the same search: refused alike
    other = [("weight_kib=32" if a == "weight_kib=64" else a) for a in search]
    refused(cli(*other, "--out", "o", "--overwrite"), "widths/notes.txt")  # another search taking over
    assert snapshot(box) == before
    (box / "o" / "widths" / "notes.txt").unlink()
    (box / "o" / "widths" / "study" / "mine.txt").unlink()
    ok(cli("sensitivity", "digits-cnn", "--weight-bits", "4", "--out", "o", "--overwrite"))
    assert not (box / "o" / "widths").exists() and (box / "o" / "sensitivity.csv").exists()
    assert leftovers(box) == []


# ---------------------------------------------------------- case 1: a file written during the final check
def test_a_user_file_written_during_the_final_check_of_overwrite_survives(box, monkeypatch):
    ok(cli("apply", "r.yaml", "--out", "o", "--latency-runs", "10"))
    real_check = RunDir._check_existing
    calls = []

    def check_then_user_writes(self, *args, **kwargs):
        manifest = real_check(self, *args, **kwargs)
        calls.append(self.path)
        if len(calls) == 2:  # the final check, at the commit: the folder passed it, and now the user writes
            (self.path / "thesis.tex").write_text("my thesis")
            (self.path / "notes").mkdir()
            (self.path / "notes" / "a.txt").write_text("my notes")
            (self.path / "drafts").mkdir()  # an empty folder of the user's is theirs too
        return manifest

    monkeypatch.setattr(RunDir, "_check_existing", check_then_user_writes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = cli("apply", "r.yaml", "--out", "o", "--overwrite", "--latency-runs", "10")
    ok(res)
    assert len(calls) == 2
    assert (box / "o" / "thesis.tex").read_text() == "my thesis" and (box / "o" / "notes" / "a.txt").read_text() == "my notes"
    assert (box / "o" / "drafts").is_dir()
    assert any(issubclass(w.category, ForeignFileWarning) and "thesis.tex" in str(w.message) for w in caught)
    assert (box / "o" / "model.onnx").exists() and leftovers(box) == []
    # the next --overwrite refuses the folder: the user's files are in it
    monkeypatch.setattr(RunDir, "_check_existing", real_check)
    refused(cli("apply", "r.yaml", "--out", "o", "--overwrite", "--latency-runs", "10"), "notes/a.txt", "thesis.tex")


def test_a_listed_file_edited_during_the_final_check_is_left_as_it_was_and_nothing_replaced(box, monkeypatch):
    ok(cli("apply", "r.yaml", "--out", "o", "--latency-runs", "10"))
    real_check = RunDir._check_existing
    calls = []

    def check_then_user_edits(self, *args, **kwargs):
        manifest = real_check(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            (self.path / "model.onnx").write_text("my own edit")
        return manifest

    monkeypatch.setattr(RunDir, "_check_existing", check_then_user_edits)
    refused(cli("apply", "r.yaml", "--out", "o", "--overwrite", "--latency-runs", "10"), "model.onnx appeared or changed while the result was moved in")
    assert (box / "o" / "model.onnx").read_text() == "my own edit" and (box / "o" / "summary.json").exists()
    assert leftovers(box) == []


def test_a_writer_racing_the_swap_never_loses_a_file(tmp_path):
    """A thread writes user files into the folder, as fast as it can, while --overwrite commits
    (the real RunDir, 40 times): every file it managed to create is still there, with its bytes."""
    out = tmp_path / "o"
    with RunDir(out) as work:
        (work / "model.onnx").write_bytes(b"first")
    created: list[Path] = []
    for round_ in range(40):
        run = RunDir(out, overwrite=True)
        work = run.__enter__()
        for i in range(20):
            (work / f"f{i}.bin").write_bytes(os.urandom(64))
        stop = threading.Event()

        def writer():
            k = 0
            time.sleep(random.random() * 0.002)
            while not stop.is_set():
                name = out / f"user-{round_}-{k}.txt"
                try:
                    with open(name, "x") as f:
                        f.write(name.name)
                    created.append(name)
                except OSError:  # the folder is renamed away for a moment: the user's open fails, nothing is lost
                    pass
                k += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ForeignFileWarning)
                run.__exit__(None, None, None)
        except OutputPathError as exc:  # the file came before the final check: refused, nothing replaced
            assert "did not write" in str(exc) or "while the result was moved in" in str(exc)
        finally:
            stop.set()
            thread.join()
        for name in created:
            assert name.read_text() == name.name, f"round {round_}: {name.name} lost"
            name.unlink()  # the user moves their file out before the next round
        created.clear()
        assert leftovers(tmp_path) == []
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, *(f"f{i}.bin" for i in range(20))])


# ------------------------------------------------------------------------- case 2: --out in the cache
def test_out_at_the_store_files_or_inside_the_cache_is_refused_before_any_work(box):
    from workbench.infra.store import ResultStore

    cache = box / "cache"
    env = {"WORKBENCH_CACHE": str(cache)}
    before = snapshot(box)
    # before a store exists: --out at the path the store will take
    refused(cli("sensitivity", "digits-cnn", "--weight-bits", "4", "--out", cache / "results.sqlite", env=env), "inside the workbench's cache")
    assert snapshot(box) == before
    ResultStore(cache / "results.sqlite").close()
    before = snapshot(box)
    for out in [cache / "results.sqlite-shm", cache / "results.sqlite", cache / "baselines" / "x", cache, "cache/sub/dir"]:
        refused(cli("sensitivity", "digits-cnn", "--weight-bits", "4", "--out", out, env=env), "inside the workbench's cache")
        refused(cli("apply", "r.yaml", "--out", out, "--overwrite", env=env), "inside the workbench's cache")
    (box / "outer").mkdir()
    refused(cli("apply", "r.yaml", "--out", "outer", env={"WORKBENCH_CACHE": str(box / "outer" / "cache")}), "holding the workbench's cache")
    assert snapshot(box) == {**before, "outer": "dir"}


# ------------------------------------------------------------------------ case 3: WORKBENCH_CACHE=""
def test_an_empty_workbench_cache_is_a_one_line_error(box):
    before = snapshot(box)
    for args in (["apply", "r.yaml", "--out", "o"], ["sensitivity", "digits-cnn", "--weight-bits", "4", "--out", "s"],
                 ["quantize", "digits-cnn", "--out", "q"]):
        refused(cli(*args, env={"WORKBENCH_CACHE": ""}), "WORKBENCH_CACHE is empty")
        refused(cli(*args, env={"WORKBENCH_CACHE": "  "}), "WORKBENCH_CACHE is empty")
    assert snapshot(box) == before and not (box / "baselines").exists()


def test_an_empty_workbench_cache_is_refused_by_the_api_too(monkeypatch, digits):
    import workbench as wb
    from workbench.infra.store import ResultStore

    monkeypatch.setenv("WORKBENCH_CACHE", "")
    with pytest.raises(OutputPathError, match="WORKBENCH_CACHE is empty"):
        wb.load_or_train_baseline(digits[0], progress=False)
    with pytest.raises(OutputPathError, match="WORKBENCH_CACHE is empty"):
        ResultStore()


# ----------------------------------------------------------------------------- case 4: over-long paths
@pytest.mark.parametrize("out", ["d/" * 2100 + "o", "a" * 300, "b" * 230, "ok/" + "c" * 256 + "/o"], ids=["past-PATH_MAX", "past-NAME_MAX",
                                                                                                     "no-room-for-temp-names", "long-middle"])
def test_an_out_longer_than_the_file_system_allows_is_one_line_before_any_work(box, out):
    cache = box / "cache"
    before = snapshot(box)
    for args in (["apply", "r.yaml"], ["sensitivity", "digits-cnn", "--weight-bits", "4"], ["qat", "rq.yaml"]):
        err = refused(cli(*args, "--out", out, env={"WORKBENCH_CACHE": str(cache)}), "bytes", "expected at most")
        assert "..." in err or len(out) < 80
    assert snapshot(box) == before and not cache.exists()  # nothing trained, no store made: refused before any work


# -------------------------------------------------- case 5: qat --overwrite on another recipe's folder
def test_qat_overwrite_on_another_recipes_folder_starts_afresh(box):
    write_recipe(box / "rq2.yaml", name="rq2", qat={**QAT, "lr": 2e-3})
    ok(cli("qat", "rq.yaml", "--out", "o", "--latency-runs", "10"))
    refused(cli("qat", "rq2.yaml", "--out", "o", "--latency-runs", "10"), "pass --overwrite")
    ok(cli("qat", "rq2.yaml", "--out", "o", "--overwrite", "--latency-runs", "10"))
    ok(cli("qat", "rq2.yaml", "--out", "fresh", "--latency-runs", "10"))
    got, fresh = (json.loads((box / d / "summary.json").read_text()) for d in ("o", "fresh"))
    assert got["recipe"] == "rq2" and got["onnx_sha256"] == fresh["onnx_sha256"]  # as if the folder had been new
    assert got["qat"]["history"] == fresh["qat"]["history"]
    assert sorted(p.name for p in (box / "o" / "checkpoints").iterdir()) == sorted(p.name for p in (box / "fresh" / "checkpoints").iterdir())
    assert leftovers(box) == []


# --------------------------------------------------- case 6: temporary folders at exit and after SIGKILL
def _killed_when(proc: subprocess.Popen, seen, sig=signal.SIGKILL, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not seen():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(sig)
    proc.wait(timeout=120)


def test_temp_folders_are_removed_at_exit_and_by_the_next_run_even_after_sigkill(box):
    write_recipe(box / "rq.yaml", name="rq", qat={**QAT, "epochs": 6})
    proc = subprocess.Popen([WORKBENCH, "qat", "rq.yaml", "--out", "o", "--latency-runs", "10"], cwd=box,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _killed_when(proc, lambda: (box / "o" / "checkpoints" / "qat-last.safetensors").exists())
    # SIGKILL: the run's guard process (workbench.infra.children) removes its temporary folder at once
    deadline = time.time() + 60  # a bound, not a speed claim: the guard takes milliseconds on a quiet machine
    while [n for n in leftovers(box) if ".wbtmp-" in n] and time.time() < deadline:
        time.sleep(0.05)
    assert not [n for n in leftovers(box) if ".wbtmp-" in n]
    # a run killed with no guard left (or one from an older workbench) left its temporary folder: the next run removes it
    stale = box / ".o.wbtmp-99999-abcd"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    # a kill between the swap and the removal of the old result left it aside, too
    aside = box / ".o.wbold-99999-1"
    aside.mkdir()
    (aside / "model.onnx").write_bytes(b"old")
    (aside / MARKER).write_text(json.dumps({"files": ["model.onnx"], "kept": []}))
    res = subprocess.run([WORKBENCH, "qat", "rq.yaml", "--out", "o", "--latency-runs", "10"], cwd=box, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-1500:]
    assert leftovers(box) == [] and (box / "o" / "model.onnx").exists()
    # Ctrl-C mid-run: the run's own temporary folder goes at exit
    proc = subprocess.Popen([WORKBENCH, "apply", "r.yaml", "--out", "p", "--latency-runs", "10"], cwd=box,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _killed_when(proc, lambda: bool(leftovers(box)), sig=signal.SIGINT)
    assert proc.returncode != 0 and leftovers(box) == [] and not (box / "p").exists()


def test_a_user_file_in_an_old_result_left_aside_by_a_killed_run_is_put_back_never_deleted(box):
    ok(cli("apply", "r.yaml", "--out", "o", "--latency-runs", "10"))
    aside = box / ".o.wbold-99999-1"  # a previous result, set aside by a run killed before it could be removed...
    (aside / "mine").mkdir(parents=True)
    (aside / "model.onnx").write_bytes(b"old")
    (aside / MARKER).write_text(json.dumps({"files": ["model.onnx"], "kept": []}))
    (aside / "mine" / "thesis.tex").write_text("my thesis")  # ...and a file of the user's that slipped in during the swap
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = cli("apply", "r.yaml", "--out", "o", "--overwrite", "--latency-runs", "10")
    refused(res, "mine/thesis.tex")  # put back into the folder, where the check names it
    assert (box / "o" / "mine" / "thesis.tex").read_text() == "my thesis"
    assert any(issubclass(w.category, ForeignFileWarning) for w in caught)
    assert leftovers(box) == []
