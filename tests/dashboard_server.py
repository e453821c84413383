"""The dashboard's server started as ``make dashboard`` starts it, for tests/test_dashboard_auth.py and
tests/test_dashboard_browser.py.

The command is read from the Makefile's ``dashboard`` recipe (``$(BIN)/python`` is this
interpreter, ``$(PORT)`` a free loopback port), so the tests run what a user runs. The login URL is
read from what the server prints, as a user copies it from the terminal.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
URL_LINE = re.compile(r"^(http://127\.0\.0\.1:(\d+)/)(\?token=([A-Za-z0-9_-]+))?", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_dashboard_command(port: int) -> list[str]:
    """The Makefile's ``dashboard`` recipe, with this interpreter and ``port``."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("dashboard:"))
    recipe = [line.strip() for line in lines[start + 1:] if line.startswith("\t")][:1]
    assert recipe and lines[start + 1].startswith("\t"), "the Makefile's dashboard target has no recipe"
    command = recipe[0].replace("$(BIN)/python", sys.executable).replace("$(BIN)/", f"{Path(sys.executable).parent}/")
    words = shlex.split(command.replace("$(PORT)", str(port)))
    assert "$" not in " ".join(words), f"a make variable left in the dashboard recipe: {recipe[0]}"
    return [str(ROOT / w) if w.startswith(("scripts/", "dashboards/")) else w for w in words]


def server_env(**extra) -> dict:
    """The server's environment: the small data, this checkout's workbench and widgets, no password of the caller's."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_DASHBOARD_PASSWORD", "JUPYTER_TOKEN")}
    return dict(env, WORKBENCH_SMALL="1", PYTHONPATH=path, **extra)


def kernel_pids(proc: subprocess.Popen) -> set[int]:
    """The kernel processes the server runs now."""
    pids = set()
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if any("ipykernel" in part for part in child.cmdline()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


class Dashboard:
    """A running server: ``url`` (the printed login URL), ``base`` (without the token), ``token``
    (None with a password), ``port``, ``proc`` and its ``log`` (stdout and stderr)."""

    def __init__(self, proc: subprocess.Popen, log: Path, match: re.Match):
        self.proc, self.log = proc, log
        self.base, self.port, self.token = match.group(1), int(match.group(2)), match.group(4)
        self.url = match.group(0)

    def text(self) -> str:
        return self.log.read_text()

    def kernels_started(self) -> int:
        return self.text().count("Kernel started:")

    def kernels(self) -> set[int]:
        return kernel_pids(self.proc)


@contextmanager
def locked_dashboard(log: Path, *extra_args: str, env: dict | None = None, cwd: Path = ROOT, timeout_s: float = 180):
    """Run ``make dashboard``'s command on a free port until the block ends; yields a Dashboard once
    the server has printed its URL (it listens by then)."""
    cmd = make_dashboard_command(free_port()) + list(extra_args)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or server_env(), cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not (match := URL_LINE.search(log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start: {' '.join(cmd)}; see {log}:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Dashboard(proc, log, match)
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started in its own process group, and any kernel it left behind."""
    proc.terminate()  # the server shuts its kernels down
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a kernel left behind by this server
    except ProcessLookupError:
        pass
