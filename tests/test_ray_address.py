"""Joining a running Ray cluster by its address (a head started here with `ray start`), as a team
would join its own cluster: the sweep's rows equal the local run's."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import workbench as wb

ray = pytest.importorskip("ray", reason="the ray extra is part of make test's install")
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def head():
    import os

    env = dict(os.environ, RAY_AUTH_MODE="disabled")  # a throw-away local head; a team's cluster would hand out its token
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                              "--include-dashboard=false", "--disable-usage-stats"], capture_output=True, text=True, timeout=180, env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_a_sweep_joins_a_running_cluster_by_address(head, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    task = wb.create_task("ic-resnet8").small(128, 64, 96)
    model = wb.load_or_train_baseline(task, progress=False)
    config = wb.SensitivityConfig(weight_bits=(2, 4), act_bits=(None, 4))
    local = wb.sensitivity(task, model, config, store=False, progress=False)
    if ray.is_initialized():  # a local cluster left by another test module
        ray.shutdown()
    joined = wb.sensitivity(task, model, config, store=False, progress=False, executor=f"ray:{head}")
    assert ray.get_runtime_context().gcs_address.endswith(head.split(":")[1])  # the driver joined that head
    assert joined.attrs["executor"] == f"ray:{head}"
    assert joined.drop(columns="seconds").equals(local.drop(columns="seconds"))
