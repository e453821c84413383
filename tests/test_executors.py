"""Sweeps on other executors: a process pool and a local Ray cluster give the rows the local run
gives, stream them into the same store, resume each other's sweeps and survive a dying worker."""

import os

import pytest

import workbench as wb
from workbench.infra.executors import ExecutorError, ProcessExecutor, RayExecutor, make_executor

CONFIG = wb.SensitivityConfig(weight_bits=(2, 4), act_bits=(None, 4))


def _rows(df):
    return df.drop(columns="seconds").reset_index(drop=True)


@pytest.fixture(scope="module")
def resnet():
    task = wb.create_task("ic-resnet8").small(128, 64, 96)
    return task, wb.load_or_train_baseline(task, progress=False)


@pytest.fixture(scope="module")
def local_rows(resnet):
    task, model = resnet
    return wb.sensitivity(task, model, CONFIG, store=False, progress=False)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is part of make test's install")
    ex = RayExecutor(workers=2)
    ex.connect()
    yield ex
    ray.shutdown()


def test_process_pool_gives_the_local_rows_and_resumes_a_local_sweep(resnet, local_rows, tmp_path):
    task, model = resnet
    store = wb.infra.ResultStore(tmp_path / "r.sqlite")
    seen = []

    def stop_after_10(row):
        seen.append(row)
        if len(seen) == 10:
            raise KeyboardInterrupt  # the sweep is stopped here, as a user would stop it

    with pytest.raises(KeyboardInterrupt):
        wb.sensitivity(task, model, CONFIG, store=store, progress=False, on_row=stop_after_10)
    assert store.count() == 10
    df = wb.sensitivity(task, model, CONFIG, store=store, progress=False, executor="process:2")
    assert df.attrs["from_store"] == 10 and df.attrs["computed"] == len(local_rows) - 10 and df.attrs["executor"] == "process:2"
    assert store.count() == len(local_rows)
    assert _rows(df).equals(_rows(local_rows))


def test_ray_sweep_equals_the_local_one_row_for_row(resnet, local_rows, ray_cluster, tmp_path):
    task, model = resnet
    store = wb.infra.ResultStore(tmp_path / "r.sqlite")
    df = wb.sensitivity(task, model, CONFIG, store=store, progress=False, executor=ray_cluster)
    assert df.attrs["computed"] == len(local_rows) and df.attrs["executor"] == "ray"
    assert _rows(df).equals(_rows(local_rows))
    again = wb.sensitivity(task, model, CONFIG, store=store, progress=False)  # resumes on the local executor: nothing left to compute
    assert again.attrs["computed"] == 0 and _rows(again).equals(_rows(local_rows))


def _dying_task(model, task, marker):
    """A task whose metric kills the worker process computing it, the first time only."""
    parent = os.getpid()

    def metric(out, y):
        if os.getpid() != parent and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        return float((out.argmax(1) == y).float().mean())

    return wb.make_task(model, task.data.calib.x, (task.data.eval.x, task.data.eval.y), metric=metric, name="dying")


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_a_worker_that_dies_mid_sweep_loses_no_row_and_duplicates_none(resnet, executor, tmp_path, request):
    task, model = resnet
    dying = _dying_task(model, task, str(tmp_path / "died"))
    reference = wb.sensitivity(dying, model, CONFIG, store=False, progress=False)
    ex = ProcessExecutor(2) if executor == "process" else request.getfixturevalue("ray_cluster")
    store = wb.infra.ResultStore(tmp_path / "r.sqlite")
    df = wb.sensitivity(dying, model, CONFIG, store=store, progress=False, executor=ex)
    assert (tmp_path / "died").exists()  # a worker really died
    assert _rows(df).equals(_rows(reference))
    assert store.count() == len(reference) and df.attrs["computed"] == len(reference)


def test_bad_executors_fail_fast_with_one_line():
    with pytest.raises(ExecutorError, match="executor 'threads'; expected 'local', 'process\\[:N\\]', 'ray'"):
        make_executor("threads")
    with pytest.raises(ExecutorError, match="expected process:N with N a worker count"):
        make_executor("process:two")
    with pytest.raises(ExecutorError, match="ray address 'nohost'; expected HOST:PORT"):
        make_executor("ray:nohost").connect()
    with pytest.raises(ExecutorError, match="ray address 127.0.0.1:9 is unreachable .*run the sweep locally"):
        make_executor("ray:127.0.0.1:9").connect()  # checked with a 3 s connect, before Ray's own minute of retries


def test_pruning_sweep_on_a_process_pool_gives_the_local_rows(resnet):
    task, model = resnet
    config = wb.analysis.PruningSweepConfig(method="unstructured", sparsities=(0.5, 0.9), latency_runs=0, layers=("stem.0", "stack2.conv1"))
    local = wb.pruning_sweep(task, model, config, store=False, progress=False)
    pooled = wb.pruning_sweep(task, model, config, store=False, progress=False, executor="process:2")
    assert pooled.attrs["executor"] == "process:2" and len(pooled) == len(local) == 7
    assert pooled.drop(columns="seconds").equals(local.drop(columns="seconds"))
