import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

import workbench as wb
from workbench.analysis.sensitivity import COLUMNS, SensitivityConfig, parse_bits, sensitivity
from workbench.infra.store import ResultStore

METRICS = ["metric", "metric_delta", "sqnr_db", "output_mse", "kl"]


@pytest.fixture(scope="module")
def resnet():
    task = wb.create_task("ic-resnet8").small(n_train=256, n_calib=96, n_eval=160)
    return task, wb.load_or_train_baseline(task, epochs=2, progress=False)


@pytest.mark.parametrize("config", [
    SensitivityConfig(weight_bits=(2, 4, 8)),
    SensitivityConfig(weight_bits=(3, None), act_bits=(4, None)),
    SensitivityConfig(mode="leave-one-float", base=wb.QuantSpec.uniform(4, 6)),
], ids=["weights", "weights+acts", "leave-one-float"])
def test_engine_equals_full_rebuild(resnet, config):
    task, model = resnet
    cut = sensitivity(task, model, config, store=False, progress=False)
    naive = sensitivity(task, model, config, store=False, progress=False, engine="naive")
    assert list(cut.columns) == COLUMNS
    assert (cut["engine"] == "cut").all() and (naive["engine"] == "naive").all()
    assert len(cut) == 10 * len(config.cases())
    np.testing.assert_allclose(cut[METRICS].to_numpy(float), naive[METRICS].to_numpy(float), rtol=0, atol=1e-6)
    assert list(cut["layer"]) == list(naive["layer"]) and cut["depth"].is_monotonic_increasing


def test_rows_say_what_was_quantised(resnet):
    task, model = resnet
    df = sensitivity(task, model, SensitivityConfig(weight_bits=(2, 8)), store=False, progress=False)
    assert set(df["weight_bits"]) == {2, 8} and df["act_bits"].isna().all() and set(df["mode"]) == {"quantise-one"}
    eight, two = df[df.weight_bits == 8], df[df.weight_bits == 2]
    assert (eight["sqnr_db"].to_numpy() > two["sqnr_db"].to_numpy()).all()  # more bits, less error, every layer
    assert df.loc[df.layer == "stack3.conv2", "params"].iloc[0] == 64 * 64 * 9 + 64
    assert df.loc[df.layer == "stem.0", "macs"].iloc[0] == 16 * 32 * 32 * 27


def test_store_returns_rows_at_once(resnet, tmp_path):
    task, model = resnet
    config = SensitivityConfig(weight_bits=(2, 4))
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = sensitivity(task, model, config, store=store, progress=False)
        assert first.attrs["computed"] == 20 and store.count() == 20
        second = sensitivity(task, model, config, store=store, progress=False)
        assert second.attrs["computed"] == 0 and second.attrs["from_store"] == 20
        assert second[METRICS + ["layer", "weight_bits"]].equals(first[METRICS + ["layer", "weight_bits"]])
        other = sensitivity(task, model, SensitivityConfig(weight_bits=(3,)), store=store, progress=False)
        assert other.attrs["computed"] == 10  # another configuration is another sweep


CHILD = textwrap.dedent("""
    import sys, warnings
    warnings.filterwarnings("ignore")
    import workbench as wb
    from workbench.analysis.sensitivity import SensitivityConfig, sensitivity
    from workbench.infra.store import ResultStore
    task = wb.create_task("ic-resnet8").small(n_train=256, n_calib=96, n_eval=160)
    model = wb.load_or_train_baseline(task, epochs=2, progress=False)
    print("ready", flush=True)
    sensitivity(task, model, SensitivityConfig(weight_bits=(2, 3, 4, 5, 6, 7, 8)), store=ResultStore(sys.argv[1]), progress=False)
""")


def test_sweep_killed_by_sigkill_resumes_without_loss_or_duplicates(resnet, tmp_path):
    task, model = resnet
    config = SensitivityConfig(weight_bits=(2, 3, 4, 5, 6, 7, 8))
    db = tmp_path / "kill.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, env=dict(os.environ))
    assert child.stdout.readline().strip() == b"ready"
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline:
        if db.exists():
            with ResultStore(db) as s:
                stored = s.count()
            if stored >= 8:
                break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    with ResultStore(db) as store:
        assert store.integrity_ok()
        before = store.count()
        assert 8 <= before < 70, before
        resumed = sensitivity(task, model, config, store=store, progress=False)
        assert resumed.attrs["computed"] == 70 - before and resumed.attrs["from_store"] == before
        assert store.count() == 70
    reference = sensitivity(task, model, config, store=False, progress=False)
    keys = ["layer", "weight_bits"]
    assert not resumed.duplicated(keys).any()
    merged = resumed.set_index(keys).loc[reference.set_index(keys).index]
    np.testing.assert_allclose(merged[METRICS].to_numpy(float), reference[METRICS].to_numpy(float), atol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"weight_bits": (2, 9)}, r"weight_bits\[1\]: expected an integer in 2-8 or 16"),
    ({"weight_bits": (0,)}, r"weight_bits\[0\]"),
    ({"act_bits": ("eight",)}, r"act_bits\[0\]: .* got 'eight'"),
    ({"weight_bits": ()}, "expected at least one bit-width"),
    ({"weight_bits": 4}, "expected a list of bit-widths"),
    ({"mode": "one-at-a-time"}, "mode: expected one of quantise-one, leave-one-float; got 'one-at-a-time'"),
])
def test_bad_configs(kwargs, message):
    with pytest.raises(wb.infra.SpecError, match=message):
        SensitivityConfig(**kwargs)


def test_bad_bit_lists_from_text():
    assert parse_bits("2, 4,float") == (2, 4, None)
    with pytest.raises(wb.infra.SpecError, match=r"bits\[1\]: .* got 'x'"):
        parse_bits("2,x")


def test_unknown_layer_names(resnet):
    task, model = resnet
    with pytest.raises(wb.infra.SpecError, match="layers.stack1.conv3: no such quantisable layer; closest: stack1.conv2"):
        sensitivity(task, model, SensitivityConfig(layers=("stack1.conv3",)), store=False, progress=False)


class Reciprocal(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.01]]))
        self.head = nn.Linear(1, 2)

    def forward(self, x):
        return self.head(torch.reciprocal(self.fc(x)))


def test_nonfinite_outputs_are_recorded_not_raised():
    x = torch.tensor([[0.0, 1.0]] * 8)
    task = wb.make_task(Reciprocal().eval(), x, (x, torch.zeros(8, dtype=torch.long)), lambda o, t: float((o.argmax(1) == t).float().mean()))
    df = sensitivity(task, task.create_model(), SensitivityConfig(weight_bits=(2, 8), layers=("fc",)), store=False, progress=False)
    two = df[df.weight_bits == 2].iloc[0]
    assert two["status"] == "nonfinite" and np.isnan(two["metric"])
    assert df[df.weight_bits == 8].iloc[0]["status"] == "ok"


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        if x.sum() > 0:
            x = x + 0
        return self.b(torch.relu(self.a(x)))


def test_untraceable_model_swaps_layers_or_runs_in_full_and_says_so():
    torch.manual_seed(0)
    model = Untraceable().eval()
    x = torch.randn(32, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    task = wb.make_task(model, x[:16], (x[16:], y[16:]), lambda o, t: float((o.argmax(1) == t).float().mean()))
    config = SensitivityConfig(weight_bits=(2, 4), act_bits=(None, 4))
    with pytest.warns(UserWarning, match="swap engine: fx cannot trace the model .*no repeated blocks found.*every case runs the whole model"):
        df = sensitivity(task, model, config, store=False, progress=False)
    assert set(df["engine"]) == {"swap"} and (df["status"] == "ok").all()
    naive = sensitivity(task, model, config, store=False, progress=False, engine="naive")
    cols = ["metric", "sqnr_db", "output_mse", "kl"]
    assert np.nanmax(np.abs(df[cols].to_numpy(float) - naive[cols].to_numpy(float))) <= 1e-6
    with pytest.warns(UserWarning, match="fx tracing failed .*using the per-module path"):
        lof = sensitivity(task, model, SensitivityConfig(mode="leave-one-float", base=wb.QuantSpec.uniform(4, 8)), store=False, progress=False)
    assert set(lof["engine"]) == {"full"}


def test_hessian_trace_column(resnet):
    task, model = resnet
    df = sensitivity(task, model, SensitivityConfig(weight_bits=(4,), hessian=True, layers=("stem.0", "classifier")), store=False, progress=False)
    assert "hessian_trace" in df.columns and np.isfinite(df["hessian_trace"]).all()
    assert df["hessian_trace"].nunique() == 2
