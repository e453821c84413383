"""Issue 28, items 4, 8 and 5 (onnxruntime telemetry): kills and Ctrl-C, through the real ``workbench``
command in a subprocess.

- SIGKILL during ``deploy --target hls4ml`` while g++ compiles: no ``bash build_lib.sh``, ``g++`` or
  ``cc1plus`` outlives it, nor its temporary folder (and a killed run's folder goes at the next run);
- a process-pool sweep whose parent is killed: the workers end quietly (no ``EOFError`` or other
  traceback) and nothing outlives the parent;
- Ctrl-C (SIGINT to the command's process group, as a terminal sends it) at several points of a
  deploy: exit 130, one line, nothing written;
- no command writes onnxruntime's telemetry store (or anything else) under ``$HOME`` or the
  working folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

WORKBENCH = str(Path(sys.executable).parent / "workbench")
TASK = {"name": "digits-cnn", "seed": 0, "subset": [256, 128, 128], "epochs": 2}
#: Seconds to wait for what a kill must bring about (folders gone, pipes closed).
SETTLE_S = 60
#: Seconds within which a killed run's processes must be gone: far above what killing them takes (the
#: guard's killpg, milliseconds), far below what they would otherwise still run (a g++ compile, a sweep).
GONE_S = 10


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its bytes (folders: 'dir')."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def _recipe(box: Path, **quantization) -> Path:
    path = box / "r.yaml"
    path.write_text(yaml.safe_dump({"recipe_version": 1, "name": "r", "task": TASK,
                                    "quantization": {"weight_bits": 8, "act_bits": 8, **quantization},
                                    "export": {"formats": ["qcdq"]}}, sort_keys=False))
    return path


class _Run:
    """A ``workbench`` command in its own session (so a signal can go to its whole group, as a
    terminal's Ctrl-C does), its stderr read as it comes."""

    def __init__(self, *args: str, cwd: Path, env: dict | None = None):
        self.proc = subprocess.Popen([WORKBENCH, *args], cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.err: list[str] = []
        self.out: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stderr, self.err), (self.proc.stdout, self.out))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into):
        for chunk in iter(lambda: stream.read(1), ""):
            into.append(chunk)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, what, timeout: float = 600) -> None:
        """Until ``what()`` is true (a callable) or ``what`` (a regex) appears on stderr."""
        test = what if callable(what) else (lambda: re.search(what, self.stderr) is not None)
        end = time.monotonic() + timeout
        while not test():
            assert self.proc.poll() is None, f"the command ended before {what!r}: {self.stderr[-1500:]}"
            assert time.monotonic() < end, f"{what!r} did not happen within {timeout} s: {self.stderr[-1500:]}"
            time.sleep(0.05)

    def finish(self, timeout: float = SETTLE_S) -> int:
        """The exit status, once the command and every holder of its output pipes are gone."""
        rc = self.proc.wait(timeout=timeout)
        for t in self._readers:  # EOF: no process (worker, toolchain) still holds stdout / stderr
            t.join(timeout)
            assert not t.is_alive(), f"something still holds the command's output pipes: {self.stderr[-800:]}"
        return rc


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return ""


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waiting for init to reap it has ended)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            pass
    return alive


def _settle(test, timeout: float = SETTLE_S) -> bool:
    end = time.monotonic() + timeout
    while not test():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


# --------------------------------------------------------------------------- item 4: hls4ml's g++


def test_sigkill_during_hls4ml_deploy_leaves_no_compiler_and_no_temp_folder(tmp_path, digits):
    box, tmp = tmp_path / "box", tmp_path / "tmp"
    box.mkdir()
    tmp.mkdir()
    recipe = _recipe(box, scale_type="po2")
    run = _Run("deploy", str(recipe), "--target", "hls4ml", "--out", "o", "--latency-runs", "10", cwd=box, env={"TMPDIR": str(tmp)})
    try:
        seen: list[psutil.Process] = []

        def compiling() -> bool:  # cc1plus (g++'s compiler proper) under the workbench, with what runs beside it
            seen[:] = _descendants(run.proc.pid)
            return any(os.path.basename(_name(p).split(" ")[0]) == "cc1plus" for p in seen)

        run.wait_for(compiling)
        before = seen
        names = " | ".join(_name(p) for p in before)
        assert "build_lib.sh" in names and "g++" in names, names
        folders = {b.parent.parent for b in tmp.rglob("build_lib.sh")}  # <temporary folder>/myproject/build_lib.sh
        assert folders  # the project g++ is compiling
        run.proc.kill()  # SIGKILL: no handler of the workbench runs
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert run.finish() == -signal.SIGKILL
    assert _settle(lambda: not _running(before), GONE_S), f"outlived the run: {[_name(p) for p in _running(before)]}"
    assert _settle(lambda: not any(f.exists() for f in folders)), f"left behind: {[str(f) for f in folders if f.exists()]}"
    # nor the run's own temporary output folder (.o.wbtmp-*): removed now, not only by a next run on "o"
    assert _settle(lambda: sorted(p.name for p in box.iterdir()) == ["r.yaml"]), sorted(p.name for p in box.iterdir())


def test_a_killed_runs_temp_folder_goes_at_the_next_run(tmp_path, monkeypatch):
    """What the guard could not remove (it was killed too): the next temp folder of any run reaps it."""
    import tempfile

    from workbench.infra import children

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    root = children.temp_root()
    stale = root / f"{dead.pid}.0-wb-hls4ml-x1"
    (stale / "myproject").mkdir(parents=True)
    (stale / "myproject" / "build_lib.sh").write_text("g++ ...\n")
    mine = root / f"{os.getpid()}.0-wb-hls4ml-x2"  # a live owner's folder stays
    mine.mkdir()
    foreign = root / "notes"  # not a name the workbench writes: left alone
    foreign.mkdir()
    with children.temp_dir("wb-hls4ml-") as new:
        assert Path(new).parent == root
        assert not stale.exists() and mine.is_dir() and foreign.is_dir()
    assert not Path(new).exists()


# --------------------------------------------------------------------------- item 4: process pools


@pytest.mark.parametrize("when", ["workers starting", "workers running units"])
def test_process_pool_sweep_parent_killed_workers_exit_quietly(tmp_path, digits, when):
    box = tmp_path / "box"
    box.mkdir()
    run = _Run("sensitivity", "digits-cnn", "--executor", "process:2", "--no-store", "--out", "s", cwd=box)
    try:
        if when == "workers starting":
            run.wait_for(lambda: sum("multiprocessing" in _name(p) and "spawn_main" in _name(p) for p in _descendants(run.proc.pid)) >= 2)
        else:
            run.wait_for(r"sensitivity digits-cnn:\s+\d+%\|[^|]*\| [1-9]\d*/\d+")
        before = _descendants(run.proc.pid)
        assert sum("spawn_main" in _name(p) for p in before) >= 2, [_name(p) for p in before]
        seen = len(run.stderr)
        run.proc.kill()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert run.finish() == -signal.SIGKILL
    after = run.stderr[seen:]
    assert "Traceback" not in after and "Error" not in after and "leaked" not in after, after[-2000:]
    assert _settle(lambda: not _running(before), GONE_S), f"outlived the parent: {[_name(p) for p in _running(before)]}"
    assert not (box / "s").exists()


# --------------------------------------------------------------------------- item 8: Ctrl-C


@pytest.mark.parametrize("point", ["importing", "calibrating", "export + verify", "export + verify, later"])
def test_ctrl_c_during_deploy_exits_130_with_nothing_written(tmp_path, digits, point):
    box = tmp_path / "box"
    box.mkdir()
    _recipe(box)
    before = snapshot(box)
    run = _Run("deploy", "r.yaml", "--target", "tflite-int8", "--out", "o", "--latency-runs", "10", cwd=box)
    try:
        if point == "importing":
            time.sleep(1.5)
        elif point == "calibrating":
            run.wait_for("quantise \\+ calibrate")
        else:
            run.wait_for("export \\+ verify")
            if point.endswith("later"):
                time.sleep(1.0)
        os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    except BaseException:
        run.proc.kill()
        raise
    rc = run.finish(timeout=300)
    lines = [ln for ln in re.split(r"[\r\n]", run.stderr) if ln.strip()]
    assert rc == 130, run.stderr[-2000:]
    assert lines[-1] == "interrupted" and "Traceback" not in run.stderr and "error:" not in run.stderr, run.stderr[-2000:]
    assert snapshot(box) == before  # no output folder, no temporary folder beside it
    assert not _running(_descendants(run.proc.pid))


# --------------------------------------------------------------------------- item 5: telemetry


def test_no_command_writes_onnxruntime_telemetry_under_home(tmp_path, digits):
    home, box = tmp_path / "home", tmp_path / "box"
    home.mkdir()
    box.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}  # the workbench must set it itself
    env["HOME"] = str(home)
    commands = [["--no-such-option"], ["quantize", "digits-cnn", "--no-such-option"], ["targets"],
                ["quantize", "digits-cnn", "--out", "o", "--format", "qcdq"]]
    for args in commands:
        res = subprocess.run([WORKBENCH, *args], cwd=box, env=env, capture_output=True, text=True, timeout=600)
        assert "Traceback" not in res.stderr, res.stderr[-1500:]
    assert res.returncode == 0, res.stderr[-1500:]
    assert snapshot(home) == {}, sorted(snapshot(home))  # e.g. .cache/Microsoft/DeveloperTools/.onnxruntime/deviceid
    assert sorted(p.name for p in box.iterdir()) == ["o"]
