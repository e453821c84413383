"""Executors neither open the machine nor leave processes behind: a local Ray cluster listens on
the loopback interface only, and a process pool's workers and resource tracker end within 5 s
of the sweep's process being killed. Each sweep runs in a process of its own (real Ray, real
processes), so no state of this one (a Ray cluster joined before, its auth mode) carries over."""

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

RAY_SWEEP = """
import json
import psutil
import ray
import workbench as wb
from workbench.infra.executors import RayExecutor

def listeners():  # (pid, name, ip, port) of every listening TCP socket of this process and its descendants
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            found.append((conn.pid, name, conn.laddr.ip, conn.laddr.port))
    return found

if __name__ == "__main__":
    task = wb.create_task("digits-cnn").small(n_train=64, n_calib=16, n_eval=32)
    model = wb.load_or_train_baseline(task, progress=False)
    seen = []

    def look(row):  # while the cluster computes: driver, GCS, raylet, agents and busy workers are all up
        if not seen:
            seen.extend(listeners())

    config = wb.SensitivityConfig(weight_bits=(2, 4), act_bits=(None,))
    df = wb.sensitivity(task, model, config, store=False, progress=False, executor=RayExecutor(workers=2), on_row=look)
    node = ray.util.get_node_ip_address()
    ray.shutdown()
    print(json.dumps({"listeners": seen, "node": node, "rows": len(df), "computed": df.attrs["computed"]}))
"""


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def test_a_local_ray_cluster_listens_on_loopback_only_and_ignores_ray_address(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is part of make test's install")
    script = tmp_path / "ray_sweep.py"
    script.write_text(textwrap.dedent(RAY_SWEEP))
    # RAY_ADDRESS names another cluster: executor "ray" still starts a local one (joining stays explicit)
    env = dict(os.environ, RAY_ADDRESS="127.0.0.1:9")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["rows"] == out["computed"] > 0
    seen = [tuple(s) for s in out["listeners"]]
    assert {"gcs_server", "raylet"} <= {s[1] for s in seen}, seen  # the listeners really were found
    exposed = sorted(s for s in seen if not _loopback(s[2]))
    assert not exposed, f"listening beyond this machine: {exposed}"
    assert out["node"] == "127.0.0.1"


POOL_SWEEP = """
import os, sys, time
import workbench as wb

def main(marks):
    task = wb.create_task("digits-cnn").small(n_train=64, n_calib=16, n_eval=32)
    model = wb.load_or_train_baseline(task, progress=False)
    parent = os.getpid()

    def metric(out, y):  # each worker says it is busy, then stays busy until killed
        if os.getpid() != parent:
            open(os.path.join(marks, str(os.getpid())), "w").close()
            time.sleep(600)
        return float((out.argmax(1) == y).float().mean())

    slow = wb.make_task(model, task.data.calib.x, (task.data.eval.x, task.data.eval.y), metric=metric, name="slow")
    wb.sensitivity(slow, model, wb.SensitivityConfig(weight_bits=(4,), act_bits=(None,)), store=False, progress=False,
                   executor="process:2")

if __name__ == "__main__":
    main(sys.argv[1])
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_killed_process_pool_sweep_leaves_no_process_behind(tmp_path):
    script, marks = tmp_path / "pool_sweep.py", tmp_path / "marks"
    script.write_text(textwrap.dedent(POOL_SWEEP))
    marks.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(marks)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while len(os.listdir(marks)) < 2:  # both workers are inside a unit
            assert parent.poll() is None, parent.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the workers never started their units"
            time.sleep(0.2)
        family = psutil.Process(parent.pid).children(recursive=True)  # the workers and the resource tracker
        workers = {int(name) for name in os.listdir(marks)}
        assert workers <= {p.pid for p in family}
        named = {p.pid: " ".join(p.cmdline())[-80:] for p in family}
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    killed = time.monotonic()
    while time.monotonic() - killed < 5 and not all(_gone(p) for p in named):
        time.sleep(0.1)
    left = {pid: cmd for pid, cmd in named.items() if not _gone(pid)}
    for pid in left:  # do not leave them to the next test either
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    assert not left, f"still running 5 s after the sweep's process was killed: {left}"
