"""Training gives the same bytes whatever the caller's thread count.

Floating-point sums split across another number of threads come out in another order, so before
the workbench fixed its own count (``workbench.infra.determinism.fixed_threads``), a baseline trained
under ``OMP_NUM_THREADS=1`` and one trained under ``OMP_NUM_THREADS=2`` differed. Each run here is
a fresh process with its own empty ``WORKBENCH_CACHE``, as two users' machines would be.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

import workbench as wb
from workbench.infra.determinism import fixed_threads, training_threads

CHILD = r"""
import hashlib, json, os, sys, warnings
import torch
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
import workbench as wb
from workbench.core.pruning import PruningSpec, prune
from workbench.core.ptq import learned_rounding
from workbench.core.qat import QATConfig, train_qat
warnings.filterwarnings("ignore")

def sha(model):
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode()); h.update(v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

task = wb.create_task("digits-cnn").small(n_train=320, n_calib=64, n_eval=64)
model = wb.load_or_train_baseline(task, epochs=3, progress=False)
out = {"baseline": sha(model)}
pruned = prune(task, model, PruningSpec(method="unstructured", sparsity=0.5, criterion="taylor", finetune_epochs=2), progress=False)
out["pruned"] = sha(pruned)
with wb.infra.determinism.fixed_threads():  # calibration (forward passes) is the job's to fix; here only training is compared
    q = wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 4))
    r = wb.quantize_task(task, model, wb.QuantSpec.uniform(4, 8))
q, _ = train_qat(task, model, q, QATConfig(epochs=1, lr=1e-3), progress=False)
out["qat"] = sha(q)
out["adaround"] = sha(learned_rounding(r, task.data.calib.x, iters=30, batch_size=16))
out["threads_after"] = torch.get_num_threads()
out["cache"] = sorted(os.listdir(os.path.join(os.environ["WORKBENCH_CACHE"], "baselines")))
print("RESULT " + json.dumps(out))
"""


def _runs(tmp_path, settings):
    """Start one child per ``(OMP_NUM_THREADS, WORKBENCH_THREADS or None)`` at once; their results."""
    procs = []
    for i, (omp, wb_threads) in enumerate(settings):
        env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_THREADS", "MKL_NUM_THREADS")}
        env.update(OMP_NUM_THREADS=str(omp), WORKBENCH_CACHE=str(tmp_path / f"cache{i}"))
        if wb_threads is not None:
            env["WORKBENCH_THREADS"] = str(wb_threads)
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
        results.append(json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):]))
    return results


def test_one_and_two_caller_threads_train_the_same_bytes(tmp_path):
    one, two = _runs(tmp_path, [(1, None), (2, None)])
    for what in ("baseline", "pruned", "qat", "adaround"):
        assert one[what] == two[what], (what, one[what], two[what])
    assert one["threads_after"] == 1 and two["threads_after"] == 2  # the caller's count is given back
    assert one["cache"] == two["cache"] and len(one["cache"]) == 1  # one fingerprint: either cache serves the other


def test_fixed_threads_restores_the_callers_count_and_reads_the_environment(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("WORKBENCH_THREADS", "3")
    assert training_threads() == 3
    with fixed_threads() as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), fixed_threads(2):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    monkeypatch.setenv("WORKBENCH_THREADS", "many")
    with pytest.raises(wb.infra.SpecError, match="WORKBENCH_THREADS='many'; expected an integer thread count in 1-1024"):
        training_threads()
    monkeypatch.delenv("WORKBENCH_THREADS")
    assert training_threads() == 1


def test_the_baseline_fingerprint_names_the_thread_count(monkeypatch):
    """WORKBENCH_THREADS=2 is another build: its baseline is cached under another fingerprint, never mixed."""
    task = wb.create_task("digits-cnn")
    monkeypatch.delenv("WORKBENCH_THREADS", raising=False)
    one = wb.tasks.baseline.baseline_fingerprint(task, 0, 5)
    monkeypatch.setenv("WORKBENCH_THREADS", "2")
    assert wb.tasks.baseline.baseline_fingerprint(task, 0, 5) != one
