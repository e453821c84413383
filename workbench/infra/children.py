"""Toolchain processes and temporary folders that never outlive the workbench run that made them.

- :func:`run` starts a toolchain (hls4ml's ``build_lib.sh`` and the g++ / cc1plus it runs, Vela)
  in its own process group and session (a terminal's Ctrl-C goes to the workbench alone, which
  then stops it), and kills that whole group when the call returns, fails, times out or is
  interrupted: grandchildren included, which a plain ``subprocess.run`` leaves running.
- :func:`temp_dir` is a ``TemporaryDirectory`` under one folder of the user's
  (``$TMPDIR/workbench-<uid>``), named after the owning process (pid and start time); each new one
  first removes those whose owner is gone, so a killed run's folder goes at the next run at the
  latest.
- A *guard* process, started with the first of them, holds the read end of a pipe whose only
  writer is this process: when this process ends in any way (SIGKILL included, which no handler
  sees) the pipe closes, and the guard kills every toolchain group still registered and removes
  every temporary folder still registered, then exits. It runs in a session of its own, with
  Python's site imports off, and takes no input but this pipe.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

#: Seconds the guard waits for a killed group to be gone before removing the folders.
GUARD_GRACE_S = 5.0

_GUARD_CODE = r"""# the workbench's guard: kills its toolchains and removes its temporary folders when it ends
import json, os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups, dirs = set(), set()
for line in sys.stdin:  # until every writer is gone: the workbench process ended, however
    try:
        op, arg = json.loads(line)
    except ValueError:
        continue
    {"+g": groups.add, "-g": groups.discard, "+d": dirs.add, "-d": dirs.discard}.get(op, lambda a: None)(arg)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
def running(g):  # a member of group g that is not a zombie (Linux /proc; elsewhere: any member)
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(g, 0)
            return True
        except OSError:
            return False
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(g) and fields[0] not in ("Z", "X"):
            return True
    return False
end = time.monotonic() + float(sys.argv[1])
while groups and time.monotonic() < end:
    groups = {g for g in groups if running(g)}
    time.sleep(0.02)
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""

_LOCK = threading.Lock()
_GUARD: dict = {}


def _guard_pipe():
    """The write end of the guard's pipe (started on first use; None where it cannot start)."""
    with _LOCK:
        proc = _GUARD.get("proc")
        if proc is not None and _GUARD.get("pid") == os.getpid() and proc.poll() is None:
            return proc.stdin
        if _GUARD.get("failed") == os.getpid():
            return None
        try:
            proc = subprocess.Popen([sys.executable, "-S", "-c", _GUARD_CODE, str(GUARD_GRACE_S)], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                                    text=True, cwd="/")
        except OSError:
            _GUARD["failed"] = os.getpid()
            return None
        _GUARD.update(proc=proc, pid=os.getpid())
        return proc.stdin


def _tell(op: str, arg) -> None:
    pipe = _guard_pipe()
    if pipe is None:
        return
    try:
        with _LOCK:
            pipe.write(json.dumps([op, arg]) + "\n")
            pipe.flush()
    except (OSError, ValueError):  # the guard is gone: this process still cleans up itself
        pass


def guard_pid() -> int | None:
    """The guard process's pid (None before first use or where it could not start)."""
    proc = _GUARD.get("proc")
    return proc.pid if proc is not None and _GUARD.get("pid") == os.getpid() else None


# ------------------------------------------------------------------------------ toolchains


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:  # already gone
        pass


def run(cmd: list[str], *, cwd: str | os.PathLike | None = None, timeout: float | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in a new process group that dies with
    the call: killed whole (the command and everything it started) when it returns, raises (Ctrl-C,
    ``subprocess.TimeoutExpired`` past ``timeout`` seconds) or when this process dies."""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:
        _tell("+g", proc.pid)
        try:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.communicate()
                raise
            except BaseException:  # Ctrl-C or any failure here: the toolchain goes with it
                _kill_group(proc.pid)
                proc.wait()
                raise
        finally:
            _kill_group(proc.pid)  # whatever the command left running in its group
            _tell("-g", proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# ------------------------------------------------------------------------------ temporary folders


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, Linux), to tell it from a later one with its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_tag(pid: int) -> str:
    return f"{pid}.{_start_time(pid) or 0}"


def _alive(tag: str) -> bool:
    pid, _, start = tag.partition(".")
    if not pid.isdigit():
        return True  # not a name this module wrote: left alone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(int(pid))
    return now is None or start in ("0", now)


def temp_root() -> Path | None:
    """``$TMPDIR/workbench-<uid>`` (0700), or None where it cannot be made safely (then folders go
    to the plain temporary folder, and only the guard and their own cleanup remove them)."""
    root = Path(tempfile.gettempdir()) / f"workbench-{os.getuid()}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(root)
    except OSError:
        return None
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None  # a symlink, or a folder someone else made or can write into: not ours to use
    return root


def reap(root: Path | None = None) -> list[Path]:
    """Remove the folders under :func:`temp_root` whose owning process is gone; returns them."""
    root = temp_root() if root is None else root
    gone = []
    if root is None:
        return gone
    for entry in root.iterdir():
        tag = entry.name.split("-", 1)[0]
        if entry.is_dir() and not entry.is_symlink() and not _alive(tag):
            shutil.rmtree(entry, ignore_errors=True)
            gone.append(entry)
    return gone


def guard_folder(path: str | os.PathLike) -> None:
    """Have the guard remove ``path`` (a folder this process made and fills) if this process dies
    before :func:`release_folder`."""
    _tell("+d", os.path.abspath(path))


def release_folder(path: str | os.PathLike) -> None:
    """``path`` is no longer the guard's to remove (it was moved into place, or removed)."""
    _tell("-d", os.path.abspath(path))


class _Guarded(tempfile.TemporaryDirectory):
    def cleanup(self) -> None:
        super().cleanup()
        release_folder(self.name)


def temp_dir(prefix: str = "wb-") -> tempfile.TemporaryDirectory:
    """A ``TemporaryDirectory`` (``.name``, ``.cleanup()``, a context manager) that is removed when
    it is cleaned up or collected, when this process exits, when it dies (by the guard), and at the
    latest by the next :func:`temp_dir` of any workbench process."""
    root = temp_root()
    if root is not None:
        reap(root)
    tmp = _Guarded(prefix=f"{_owner_tag(os.getpid())}-{prefix}", dir=root)
    guard_folder(tmp.name)
    return tmp
