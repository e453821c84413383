"""Width-and-bits search: real pruning (Torch-Pruning), real Brevitas PTQ, a real Optuna study in a
journal file, and a real SIGKILL of a search running in another process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workbench as wb
from workbench.infra.errors import OutputPathError, SpecError
from workbench.core.pruning import PruningSpec, channel_groups, prune
from workbench.search.front import join_points
from workbench.search.width_search import WidthSearchConfig, stages, width_search

ROOT = Path(__file__).resolve().parents[1]
ARGS = dict(n_trials=6, bits=(8, 4), widths=(1.0, 0.75, 0.5), objective_kind="macs", budgets={"weight_kib": 7.0}, finetune_epochs=1, seed=3)


@pytest.fixture(scope="module")
def digits_small():
    task = wb.create_task("digits-cnn").small()
    return task, wb.load_or_train_baseline(task, seed=0, epochs=20, progress=False)


def _config(**kw):
    return WidthSearchConfig(**{**ARGS, "population_size": 4, **kw})  # two NSGA-II generations in six trials, the anchors in the first


@pytest.fixture(scope="module")
def first(digits_small, tmp_path_factory):
    task, model = digits_small
    return width_search(task, model, out=tmp_path_factory.mktemp("ws") / "a", config=_config(), progress=False)


def _trials(df):
    done = df[df["state"] == "COMPLETE"]
    return list(zip(done["widths"], done["bits"], done["measured_metric"], done["macs"]))


def test_layer_sparsity_prunes_each_channel_group_by_its_own_share(digits_small):
    task, model = digits_small
    pruned = prune(task, model, PruningSpec(method="structured", layer_sparsity={"features.0": 0.5, "features.7": 0.25}))
    channels = channel_groups(pruned, task.example_input()).set_index("layer")["channels"].to_dict()
    assert channels == {"features.0": 8, "features.3": 32, "features.7": 24, "classifier": 10}
    assert PruningSpec.parse(PruningSpec(layer_sparsity={"features.0": 0.5}).to_dict()).layer_sparsity == {"features.0": 0.5}
    assert "layer_sparsity" not in PruningSpec().to_dict()  # specs without it keep their dict (and digests)
    with pytest.raises(SpecError, match=r"^layer_sparsity\.features\.9: no such prunable layer; closest: features\.7") as e:
        prune(task, model, {"method": "structured", "layer_sparsity": {"features.9": 0.5}})
    assert "\n" not in str(e.value)
    with pytest.raises(SpecError, match="applies to method 'structured' only"):
        PruningSpec.parse({"method": "unstructured", "layer_sparsity": {"features.0": 0.5}})
    with pytest.raises(SpecError, match=r"features.0: expected a share of channels in \[0, 1\); got 1.0"):
        PruningSpec.parse({"layer_sparsity": {"features.0": 1.0}})


def test_rows_front_and_budget(first):
    df = first
    assert len(df) == 6 and (df["state"] == "COMPLETE").all() and df.attrs["computed"] + (df["reused"] >= 0).sum() == 6
    assert {"trial", "kind", "measured_metric", "bits", "widths", "pruning", "feasible", "on_front", "weight_kib", "macs", "bops"} <= set(df.columns)
    assert df.attrs["stages"] == {"features.0": ["features.0"], "features.3": ["features.3"], "features.7": ["features.7"]}
    for row in df.itertuples():
        widths, bits = json.loads(row.widths), json.loads(row.bits)
        assert set(widths.values()) <= {1.0, 0.75, 0.5} and set(bits) == {"features.0", "features.3", "features.7", "classifier"}
        assert row.feasible == (row.weight_kib <= 7.0) and row.bound_by == ("" if row.feasible else "weight_kib")
        assert (row.pruning == "") == (set(widths.values()) == {1.0})
    for trial, b in ((0, 8), (1, 4)):  # the anchors: the unpruned model at the widest and the narrowest bits
        assert set(json.loads(df.loc[trial, "widths"]).values()) == {1.0} and set(json.loads(df.loc[trial, "bits"]).values()) == {b}
    assert df["feasible"].any() and not df["feasible"].all(), "the budget should split these six trials"
    front = df[df["on_front"]]
    assert len(front) and front["feasible"].all()
    for f in front.itertuples():  # no feasible trial is at most as costly and strictly better
        ok = df[df["feasible"]]
        assert not ((ok["macs"] <= f.macs) & (ok["measured_metric"] > f.measured_metric)).any()
    joined = join_points(df[df["feasible"]].assign(kind="width"), df.iloc[:0], "macs")  # the bits search's table shape
    assert joined["on_front"].sum() == len(front)


def test_same_seed_same_trials_and_a_finished_run_is_read_back(digits_small, first, tmp_path):
    task, model = digits_small
    again = width_search(task, model, out=tmp_path / "b", config=_config(), progress=False)
    assert _trials(again) == _trials(first)
    other = width_search(task, model, out=tmp_path / "c", config=_config(seed=4, n_trials=3), progress=False)
    assert _trials(other) != _trials(first)[:3]
    read = width_search(task, model, out=tmp_path / "b", config=_config(), progress=False)
    assert read.attrs["computed"] == 0 and read.attrs["resumed"] == 6 and _trials(read) == _trials(first)


def _journal(journal: Path) -> tuple[dict[int, list], dict[int, int]]:
    """From an Optuna journal file: trial id -> values of the COMPLETE trials, and trial id -> the
    number of parameters set (a torn last line is skipped)."""
    done, params = {}, {}
    for line in journal.read_text().splitlines() if journal.exists() else []:
        try:
            op = json.loads(line)
        except ValueError:
            continue
        if op.get("op_code") == 6 and op.get("state") == 1:
            done[op["trial_id"]] = op["values"]
        elif op.get("op_code") == 5:
            params[op["trial_id"]] = params.get(op["trial_id"], 0) + 1
    return done, params


def _completed(journal: Path) -> dict[int, list]:
    return _journal(journal)[0]


def test_resume_after_sigkill_recomputes_nothing_done_and_ends_like_an_uninterrupted_run(digits_small, first, tmp_path):
    task, model = digits_small
    out = tmp_path / "killed"
    code = ("import workbench as wb\nfrom workbench.search.width_search import width_search, WidthSearchConfig\n"
            "task = wb.create_task('digits-cnn').small()\nmodel = wb.load_or_train_baseline(task, seed=0, epochs=20, progress=False)\n"
            f"width_search(task, model, out={str(out)!r}, config=WidthSearchConfig(**{{**{ARGS!r}, 'population_size': 4}}), progress=False)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # the test session's baseline cache too
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = None
    try:
        while proc.poll() is None:
            journal = next((out / "study").glob("*.journal"), None) if (out / "study").is_dir() else None
            if journal is not None:
                done, params = _journal(journal)
                if len(done) >= 2 and any(n == 7 and t not in done for t, n in params.items()):  # a trial mid-measurement
                    break
            time.sleep(0.01)
        assert proc.poll() is None, f"the search ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = _completed(journal)
    assert 2 <= len(before) < 6
    df = width_search(task, model, out=out, config=_config(), progress=False)
    done = df[df["state"] == "COMPLETE"]
    assert len(done) == 6 and df.attrs["resumed"] == len(before)
    assert df.attrs["computed"] == ((df["trial"] >= len(before)) & (df["state"] == "COMPLETE") & (df["reused"] < 0)).sum()
    for trial_id, values in before.items():  # optuna numbers trials of one study by their ids
        row = df[df["trial"] == trial_id].iloc[0]
        assert row["state"] == "COMPLETE" and [row["measured_metric"], row["macs"]] == values
    killed = df[df["state"] == "FAIL"]
    assert len(killed) == 1 and len(json.loads(killed["bits"].iloc[0])) == 4
    for row in killed.itertuples():  # the trial the kill interrupted ran again, same parameters
        assert ((done["widths"] == row.widths) & (done["bits"] == row.bits) & (done["trial"] > row.trial)).any()
    assert _trials(df) == _trials(first)  # re-seeded per trial: the same trials as a run never killed
    assert (out / "trials.csv").is_file() and not list(tmp_path.glob(".killed.wbtmp-*"))


def test_measured_objective_on_onnxruntime(digits_small, tmp_path):
    task, model = digits_small
    df = width_search(task, model, out=tmp_path / "lat", n_trials=2, objective_kind="latency_ms", target="onnxruntime",
                      finetune_epochs=0, progress=False)
    assert (df["latency_ms"] > 0).all() and (df["budget"] == df["latency_ms"]).all()


def test_bad_input_is_one_line(digits_small, tmp_path):
    task, model = digits_small
    cases = [(dict(objective_kind="macss"), r"objective_kind: unknown cost kind 'macss' \(did you mean 'macs'\?\)"),
             (dict(widths=()), r"widths: expected at least one of widths"),
             (dict(widths=(1.0, 1.5)), r"widths\[1\]: expected a share of channels kept in \(0, 1\]; got 1.5"),
             (dict(widths=(0.0,)), r"widths\[0\]: expected a share of channels kept in \(0, 1\]; got 0.0"),
             (dict(bits=(8, 1)), r"bits\[1\]: expected a weight bit-width in"),
             (dict(budgets={"flash": 3}), r"budgets: unknown cost kind 'flash'"),
             (dict(objective_kind="latency_ms"), r"objective_kind: cost kind 'latency_ms' is measured, not computed; name a target"),
             (dict(widths=(1.0, 0.01)), r"widths: keeping 0.01 of features.0's 16 channels leaves none")]
    for kw, message in cases:
        with pytest.raises(SpecError, match=message) as e:
            width_search(task, model, out=tmp_path / "bad", progress=False, **kw)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "bad").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="did not write"):
        width_search(task, model, out=tmp_path / "mine", n_trials=1, progress=False)
    assert stages(model, task.example_input(), max_stages=2) == {"features.0": ["features.0", "features.3"], "features.7": ["features.7"]}
