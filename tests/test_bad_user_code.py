"""Issue 28, no traceback ever: the user's own code failing (a metric, a forward, a factory, weights
on the meta device), a glob --layers, an MLflow server failing after the probe, where MLflow's
local store goes, passwords in URIs, suggestions of options a command lacks, errors glued to a
progress bar and Ray's token file mode. Each case runs through the real CLI (a user module, as a
user writes one) and, where it has one, the Python API."""

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import workbench as wb
from workbench.infra.errors import UserCodeError

WORKBENCH = str(Path(sys.executable).parent / "workbench")

MODULE = textwrap.dedent('''
    from collections import OrderedDict

    import torch
    from torch import nn

    import workbench as wb

    torch.manual_seed(0)
    X = torch.randn(48, 1, 8, 8)
    Y = torch.randint(0, 10, (48,))


    def accuracy(outputs, targets):
        return float((outputs.argmax(1) == targets).float().mean())


    def high(outputs, targets):
        return "high"


    def per_sample(outputs, targets):
        return (outputs.argmax(1) == targets).float()


    def broken(outputs, targets):
        raise ZeroDivisionError("no samples in this batch")


    CALLS = []


    def flaky(outputs, targets):
        CALLS.append(1)
        if len(CALLS) > 2:
            raise ConnectionError("the metric service went away")
        return accuracy(outputs, targets)


    def net():
        torch.manual_seed(0)
        return nn.Sequential(OrderedDict(features=nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
                                         flatten=nn.Flatten(), classifier=nn.Linear(256, 10)))


    class Unfinished(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            raise NotImplementedError("forward is still to be written")


    def good():
        return wb.make_task(net(), X, (X, Y), accuracy, name="mine")


    def metric_string():
        return wb.make_task(net(), X, (X, Y), high, name="mine")


    def metric_tensor():
        return wb.make_task(net(), X, (X, Y), per_sample, name="mine")


    def metric_raises():
        return wb.make_task(net(), X, (X, Y), broken, name="mine")


    def metric_flaky():
        return wb.make_task(net(), X, (X, Y), flaky, name="mine")


    def forward_raises():
        return wb.make_task(Unfinished(), X, (X, Y), accuracy, name="mine")


    def on_meta():
        with torch.device("meta"):
            model = net()
        return wb.make_task(model, X, (X, Y), accuracy, name="mine")


    def factory_fails():
        raise FileNotFoundError("weights.pt is not there")


    def build_model():
        raise RuntimeError("the checkpoint server is down")


    def model_factory_fails():
        task = good()
        task.model_factory = build_model
        return task
''')


def run(*args, cwd, env=None, timeout=600):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def shown_lines(stderr: str) -> list[str]:
    """stderr's lines as a terminal shows them: a carriage return starts the line over."""
    return [line.rsplit("\r", 1)[-1] for line in stderr.split("\n")]


def one_error(res, *needles):
    """Exit 2, one `error:` line on a line of its own holding every needle, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in shown_lines(res.stderr) if line.startswith("error:")]
    assert len(errors) == 1, res.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "mymod.py").write_text(MODULE)
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == "mymod"]:
        del sys.modules[name]


# ------------------------------------------------------------------ 1. the user's own code failing
USER_CODE_CASES = {
    "metric_returns_a_string": ("metric_string", "metric mymod:high returned str 'high'; expected a number"),
    "metric_returns_a_tensor": ("metric_tensor", "metric mymod:per_sample returned a torch.Tensor of shape (48,); expected one number"),
    "metric_raises": ("metric_raises", "metric mymod:broken raised ZeroDivisionError: no samples in this batch"),
    "forward_raises": ("forward_raises", "model mymod:Unfinished: forward on 2 samples of the calibration data raised NotImplementedError: "
                                         "forward is still to be written"),
    "model_on_the_meta_device": ("on_meta", "is on the meta device"),
    "task_factory_fails": ("factory_fails", "task mymod:factory_fails raised FileNotFoundError: weights.pt is not there"),
    "model_factory_fails": ("model_factory_fails", "model factory mymod:build_model raised RuntimeError: the checkpoint server is down"),
}


@pytest.mark.parametrize("case", list(USER_CODE_CASES))
def test_user_code_failure_is_one_line_naming_the_function(case, user_dir):
    func, message = USER_CODE_CASES[case]
    res = run("sensitivity", f"mymod:{func}", "--weight-bits", "8", "--no-store", "--out", "o", cwd=user_dir)
    one_error(res, message)
    assert not (user_dir / "o").exists()
    # the Python API: the same one line, as a documented UserCodeError (a TaskError, a WorkbenchError)
    with pytest.raises(UserCodeError) as info:
        task = wb.tasks.task_from_factory(f"mymod:{func}")
        model = wb.load_or_train_baseline(task, progress=False)
        wb.sensitivity(task, model, wb.SensitivityConfig(weight_bits=(8,)), store=False, progress=False)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, wb.infra.TaskError) and isinstance(info.value, wb.WorkbenchError)


def test_user_code_failure_in_a_recipe_applied_with_allow_code(user_dir):
    import yaml

    for func, message in (USER_CODE_CASES["metric_returns_a_tensor"], USER_CODE_CASES["forward_raises"]):
        recipe = {"recipe_version": 1, "name": "mine-w8", "task": {"factory": f"mymod:{func}"}, "quantization": {"weight_bits": 8, "act_bits": 8},
                  "export": {"formats": ["qcdq"]}}
        (user_dir / "r.yaml").write_text(yaml.safe_dump(recipe))
        res = run("apply", "r.yaml", "--allow-code", "--latency-runs", "10", "--out", "o", cwd=user_dir)
        one_error(res, message)
        assert not (user_dir / "o").exists()


def test_make_task_refuses_a_model_on_the_meta_device_and_a_metric_that_is_not_a_function():
    with torch.device("meta"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)
    with pytest.raises(UserCodeError, match=r"parameter 1.weight is on the meta device .*expected every weight on the CPU"):
        wb.make_task(model, x, (x, y), lambda o, t: 0.5)
    with pytest.raises(wb.infra.TaskError, match="metric 'accuracy'; expected a function fn"):
        wb.make_task(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x, (x, y), "accuracy")
    # a number in a 0-d tensor or a NumPy scalar is one number: accepted as it was
    task = wb.make_task(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x, (x, y), lambda o, t: torch.tensor(0.25))
    assert task.score(torch.randn(8, 10), task.data.eval) == 0.25


# ------------------------------------------------------------------ 2. a glob in sensitivity --layers
def test_sensitivity_layers_glob_selects_the_matching_layers(user_dir):
    res = run("sensitivity", "mymod:good", "--layers", "features.*", "--weight-bits", "4,8", "--no-store", "--out", "o", cwd=user_dir)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    df = pd.read_csv(user_dir / "o" / "sensitivity.csv")
    assert sorted(set(df["layer"])) == ["features.0", "features.2"] and len(df) == 4  # the classifier is not swept
    none = run("sensitivity", "mymod:good", "--layers", "head.*", "--no-store", "--out", "o2", cwd=user_dir)
    one_error(none, "layers.head.*: pattern matches no quantisable layer; layers are features.0, features.2, classifier")
    assert not (user_dir / "o2").exists()
    import mymod  # the Python API: the same selection

    task = mymod.good()
    df = wb.sensitivity(task, task.create_model(), wb.SensitivityConfig(weight_bits=(8,), layers=("features.*", "type:Linear")),
                        store=False, progress=False)
    assert list(df["layer"]) == ["features.0", "features.2", "classifier"]


# ------------------------------------------------------------------ 3. MLflow failing after the probe
class _FakeMlflow(BaseHTTPRequestHandler):
    """Answers the probe (GET experiments/get-by-name) as MLflow does, and 500 on every POST."""

    posts = 0

    def do_GET(self):  # noqa: N802
        body = json.dumps({"experiment": {"experiment_id": "1", "name": "workbench", "artifact_location": "/nowhere",
                                          "lifecycle_stage": "active"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        type(self).posts += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error_code": "INTERNAL_ERROR", "message": "database is locked"}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_mlflow():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_mlflow_failing_on_post_keeps_the_results_and_warns(user_dir, failing_mlflow):
    _FakeMlflow.posts = 0
    res = run("sensitivity", "mymod:good", "--weight-bits", "8", "--no-store", "--mlflow", failing_mlflow, "--out", "o", cwd=user_dir)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert _FakeMlflow.posts >= 1  # the server was really asked, and failed
    df = pd.read_csv(user_dir / "o" / "sensitivity.csv")
    assert len(df) == 3 and (user_dir / "o" / "sensitivity.html").is_file()
    warned = [line for line in shown_lines(res.stderr) if line.startswith("warning:") and "not tracked" in line]
    assert len(warned) == 1 and failing_mlflow in warned[0], res.stderr[-2000:]
    # the Python API: the rows come back, with a TrackingWarning and the reason in attrs
    import mymod

    task = mymod.good()
    with pytest.warns(wb.infra.TrackingWarning, match="the results are kept, the run is not tracked"):
        df = wb.sensitivity(task, task.create_model(), wb.SensitivityConfig(weight_bits=(8,)), store=False, progress=False,
                            tracking=failing_mlflow)
    assert len(df) == 3 and "mlflow_run_id" not in df.attrs and "INTERNAL_ERROR" in df.attrs["mlflow_error"]


# ------------------------------------------------------------------ 4. MLflow's local store: in the cache, and only for an accepted run
def test_mlflow_local_store_only_after_the_out_folder_is_accepted_and_in_the_cache(user_dir):
    cache = user_dir / "cache"
    env = {"WORKBENCH_CACHE": str(cache)}
    (user_dir / "o").mkdir()
    (user_dir / "o" / "thesis.tex").write_text("mine")
    refused = run("sensitivity", "mymod:good", "--weight-bits", "8", "--no-store", "--mlflow", "local", "--out", "o", cwd=user_dir, env=env)
    one_error(refused, "o")
    assert not (user_dir / "mlruns").exists() and not (cache / "mlruns").exists()
    assert (user_dir / "o" / "thesis.tex").read_text() == "mine"
    ok = run("sensitivity", "mymod:good", "--weight-bits", "8", "--no-store", "--mlflow", "local", "--out", "o2", cwd=user_dir, env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (cache / "mlruns" / "mlflow.db").is_file() and not (user_dir / "mlruns").exists()  # never the working folder
    assert "mlflow run " in ok.stdout and str(cache / "mlruns") in ok.stdout


# ------------------------------------------------------------------ 5. no password in any message
class _NotMlflow(BaseHTTPRequestHandler):
    seen_auth: list = []

    def do_GET(self):  # noqa: N802
        type(self).seen_auth.append(self.headers.get("Authorization"))
        body = b"<html>a wiki</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_uri_passwords_are_never_echoed(user_dir, failing_mlflow):
    from workbench.infra.errors import redact_uri

    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    wiki = f"http://alice:s3cret@127.0.0.1:{server.server_address[1]}"
    try:
        res = run("sensitivity", "mymod:good", "--no-store", "--mlflow", wiki, "--out", "o", cwd=user_dir)
        one_error(res, f"http://***@127.0.0.1:{server.server_address[1]} does not answer MLflow's REST API")
        assert "s3cret" not in res.stderr + res.stdout
        assert _NotMlflow.seen_auth[-1] == "Basic YWxpY2U6czNjcmV0"  # the userinfo went as basic auth, not in the URL
    finally:
        server.shutdown()
        server.server_close()
    for args in (["--mlflow", "ftp://alice:s3cret@example.org/runs"], ["--executor", "ray:alice:s3cret@127.0.0.1:9"]):
        res = run("sensitivity", "mymod:good", "--weight-bits", "8", "--no-store", *args, "--out", "o", cwd=user_dir)
        one_error(res, "***@")
        assert "s3cret" not in res.stderr + res.stdout
    # a server failing after the probe: its error, in the warning, without the password
    with_password = failing_mlflow.replace("http://", "http://alice:s3cret@")
    res = run("sensitivity", "mymod:good", "--weight-bits", "8", "--no-store", "--mlflow", with_password, "--out", "o3", cwd=user_dir)
    assert res.returncode == 0 and "s3cret" not in res.stderr + res.stdout and "warning:" in res.stderr, res.stderr[-2000:]
    assert redact_uri("https://bob:pw@mlflow.example:443/x") == "https://***@mlflow.example:443/x"
    assert redact_uri("bob:pw@10.0.0.1:6379") == "***@10.0.0.1:6379" and redact_uri("10.0.0.1:6379") == "10.0.0.1:6379"
    with pytest.raises(wb.infra.TrackingError) as info:
        wb.infra.Tracker("ftp://alice:s3cret@example.org/runs")
    assert "s3cret" not in str(info.value)


# ------------------------------------------------------------------ 6. suggestions name options the command has
def test_store_errors_suggest_an_option_the_command_has(user_dir):
    cache = user_dir / "cache"
    cache.mkdir()
    import sqlite3

    with sqlite3.connect(cache / "results.sqlite") as other:  # another program's SQLite file where the store should be
        other.execute("CREATE TABLE rows (id INTEGER, name TEXT)")
    other.close()
    env = {"WORKBENCH_CACHE": str(cache)}
    res = run("search", "mymod:good", "--budget-kib", "2", "--out", "o", cwd=user_dir, env=env)
    one_error(res, "--no-store")
    res = run("search", "mymod:good", "--budget-kib", "2", "--no-store", "--out", "o", cwd=user_dir, env=env)
    assert res.returncode == 0 and (user_dir / "o" / "recipe.yaml").is_file(), res.stderr[-2000:]
    # every command that opens the store has the option its errors suggest
    import inspect

    from typer.main import get_command

    import workbench.cli as cli

    group = get_command(cli.app)
    for name, command in group.commands.items():
        callback = command.callback
        if callback is not None and "_open_store()" in inspect.getsource(callback):
            assert any("--no-store" in p.opts for p in command.params), name


# ------------------------------------------------------------------ 7. an error during a progress bar starts on a fresh line
def test_an_error_during_a_sweep_progress_bar_starts_on_a_fresh_line(user_dir):
    res = run("sensitivity", "mymod:metric_flaky", "--weight-bits", "2,4,8", "--no-store", "--out", "o", cwd=user_dir)
    assert "sensitivity mine" in res.stderr  # the bar was drawn before the failure
    one_error(res, "metric mymod:flaky raised ConnectionError: the metric service went away")
    assert not any("error:" in line and not line.startswith("error:") for line in shown_lines(res.stderr)), res.stderr[-2000:]


# ------------------------------------------------------------------ 8. Ray's token file is the owner's only
RAY_TOKEN = textwrap.dedent('''
    import os
    os.umask(0o022)
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from workbench.infra.executors import protect_token_file
    path = os.path.expanduser("~/.ray/auth_token")
    # Ray's own step of a new local ray.init (token auth is its default): it writes ~/.ray/auth_token
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)
    before = os.stat(path).st_mode & 0o777
    token = open(path).read()
    protect_token_file()  # what RayExecutor.connect runs once ray.init returns
    print(oct(before), oct(os.stat(path).st_mode & 0o777), open(path).read() == token)
''')


def test_ray_token_file_is_mode_0600(tmp_path):
    script = tmp_path / "ray_token_check.py"
    script.write_text(RAY_TOKEN)
    home = tmp_path / "home"
    home.mkdir()
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["0o644", "0o600", "True"]  # Ray alone leaves it readable by every local user; fixed, token kept
    assert stat.S_IMODE((home / ".ray" / "auth_token").stat().st_mode) == 0o600
    # a symlink there is never followed: its target keeps its mode
    target = tmp_path / "elsewhere"
    target.write_text("not a token")
    target.chmod(0o644)
    link_home = tmp_path / "link"
    (link_home / ".ray").mkdir(parents=True)
    (link_home / ".ray" / "auth_token").symlink_to(target)
    from workbench.infra.executors import protect_token_file

    protect_token_file(str(link_home / ".ray" / "auth_token"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
