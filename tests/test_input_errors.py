"""Every bad input is a one-line error of a documented type (issue 13): YAML files (specs, targets,
recipes), pydantic validation, the result store (self-healing when corrupt, refused when
read-only), MLflow URIs that are not MLflow servers, NaN metrics and calibration data that does
not fit the model. Real components throughout: real files, real SQLite databases, real HTTP
servers on 127.0.0.1, real (tiny) tasks."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import workbench as wb
from workbench.infra import store as store_module
from workbench.core.cost import load_target
from workbench.infra.fileio import CorruptFileWarning
from workbench.infra.errors import CalibrationError, SpecError, StoreError, WorkbenchError
from workbench.analysis.pruning_sweep import PruningSweepConfig, pruning_sweep
from workbench.core.ptq import calibrate
from workbench.runs.recipe import RecipeError, load_recipe, parse_recipe
from workbench.infra.store import ResultStore
from workbench.infra.tracking import Tracker, TrackingError


def one_line(exc: BaseException, *names: str) -> str:
    """The message, checked: one line, under 700 characters, naming each of ``names``."""
    msg = str(exc)
    assert "\n" not in msg and len(msg) < 700, msg
    for name in names:
        assert name in msg, f"{name!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------- YAML

BILLION_LAUGHS = "".join(  # ~350 bytes; 9**9 values once expanded
    [f'a: &a [{", ".join(["lol"] * 9)}]\n']
    + [f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi")]
)
YAML_CASES = {
    "not-utf8": (b"weight_bits: 8\nname: \xff\xfe\xfa\n", r"is not UTF-8 text \(byte 0xff at offset 21\)"),
    "bad-yaml": (b"weight_bits: [8\n", r"is not valid YAML: expected ',' or '\]'"),
    "billion-laughs": (BILLION_LAUGHS.encode(), r"is not valid YAML: it expands to more than 1,000,000 values through aliases"),
    "many-aliases": (("x: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n").encode(), r"is not valid YAML: more than 100 aliases"),
    "recursive-alias": (b"a: &a [*a]\n", r"is not valid YAML: a recursive alias"),
    "deep-nesting": (b"[" * 500 + b"]" * 500, r"is not valid YAML: nested more than 200 levels deep"),
    "too-big": (b"# " + b"x" * (10 * 1024 * 1024) + b"\n", r"is 10,485,763 bytes; expected a YAML \w+ of at most 10 MB"),
}
LOADERS = {
    "spec": (lambda p: wb.QuantSpec.from_yaml(p), SpecError),
    "target": (load_target, SpecError),
    "recipe": (load_recipe, RecipeError),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_bad_yaml_files_are_one_line_errors_naming_the_file(tmp_path, loader, case):
    content, pattern = YAML_CASES[case]
    path = tmp_path / f"bad-{case}.yaml"
    path.write_bytes(content)
    load, error = LOADERS[loader]
    t0 = time.perf_counter()
    with pytest.raises(error, match=pattern) as info:
        load(path)
    assert type(info.value) is error
    assert time.perf_counter() - t0 < 5  # an alias bomb fails fast, it does not hang
    one_line(info.value, str(path))


def test_the_yaml_text_of_a_spec_goes_through_the_same_loader():
    with pytest.raises(SpecError, match="^spec is not valid YAML: it expands to more than") as info:
        wb.QuantSpec.from_yaml(BILLION_LAUGHS)
    one_line(info.value)
    assert wb.QuantSpec.from_yaml("weight_bits: 4\n").weight_bits == 4
    with pytest.raises(SpecError, match=r"^spec file '.*nowhere\.yaml' does not exist"):
        wb.QuantSpec.from_yaml("nowhere.yaml")


TARGET_CASES = {
    "list": ("- 4\n- 8\n", r"the file holds a list; expected a mapping with name, weight_bits"),
    "empty": ("", r"the file holds nothing \(an empty document\); expected a mapping"),
    "scalar": ("just text\n", r"the file holds a str; expected a mapping"),
    "missing-field": ("name: t\nact_bits: [8]\n", r": weight_bits: required field is missing"),
    "wrong-type": ("name: t\nweight_bits: 8\nact_bits: [8]\n", r": weight_bits: expected a non-empty list of bit-widths in 2-8 or 16; got 8$"),
    "wrong-item": ("name: t\nweight_bits: [4, eight]\nact_bits: [8]\n", r": weight_bits: expected a non-empty list of bit-widths in 2-8 or 16; got \[4, 'eight'\] \(item 1: 'eight' is not an integer\)"),
    "bad-bits": ("name: t\nweight_bits: [4, 33]\nact_bits: [8]\n", r": weight_bits: expected a non-empty list of bit-widths in 2-8 or 16; got \[4, 33\]"),
    "bad-cost": ("name: t\nweight_bits: [8]\nact_bits: [8]\ncost: speed\n", r": cost: unknown cost kind 'speed'; expected one of weight_kib, .*latency_ms, cycles; got 'speed'"),
    "unknown-budget": ("name: t\nweight_bits: [8]\nact_bits: [8]\nbudgets: {flash_kb: 256}\n",
                       r": budgets: unknown cost kind 'flash_kb' \(did you mean 'flash_kib'\?\); expected one of weight_kib, .*; got \{'flash_kb': 256"),
    "measured-budget": ("name: t\nweight_bits: [8]\nact_bits: [8]\nbudgets: {latency_ms: 3}\n", r": budgets: latency_ms is measured, not computed"),
    "negative-budget": ("name: t\nweight_bits: [8]\nact_bits: [8]\nbudgets: {flash_kib: -1}\n", r": budgets: flash_kib: expected a positive limit or null"),
    "bad-budget": ("name: t\nweight_bits: [8]\nact_bits: [8]\nbudgets: {weight_kib: lots}\n", r": budgets: weight_kib: expected a positive limit or null; got 'lots'"),
    "unknown-field": ("name: t\nweight_bits: [8]\nact_bits: [8]\nspeed: 3\n", r": speed: unknown field"),
    "huge-list": ("name: t\nweight_bits: [" + ", ".join(["99"] * 20000) + "]\nact_bits: [8]\n", r": weight_bits: .*\(20000 items, 80000 characters\)"),
}


@pytest.mark.parametrize("case", list(TARGET_CASES))
def test_malformed_target_files_name_the_file_and_the_field(tmp_path, case):
    text, pattern = TARGET_CASES[case]
    path = tmp_path / f"target-{case}.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=pattern) as info:
        load_target(path)
    one_line(info.value, f"target {path}")


def test_a_malformed_recipe_file_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("recipe_version: 1\ntask: {name: digits-cnn}\nquantization: {layers: {features.3: {weight_bits: 33}}}\n")
    with pytest.raises(RecipeError, match=r"^quantization\.layers\.features\.3\.weight_bits: expected an integer in 2-8 or 16, or 'float'; got 33 \(in .*r\.yaml\)$") as info:
        load_recipe(path)
    one_line(info.value, str(path))
    path.write_text("- a list\n")
    with pytest.raises(RecipeError, match=r"^recipe is a list; expected a mapping.* \(in .*r\.yaml\)$") as info:
        load_recipe(path)
    one_line(info.value, str(path))


def test_a_spec_file_that_fails_validation_names_the_file(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("weight_bits: 33\n")
    with pytest.raises(SpecError, match=r"^weight_bits: expected an integer in 2-8 or 16, or 'float'; got 33 \(in .*w\.yaml\)$") as info:
        wb.QuantSpec.from_yaml(path)
    one_line(info.value, str(path))


@pytest.mark.parametrize("build", [
    lambda: wb.QuantSpec.parse({"weight_bits": list(range(100_000))}),
    lambda: wb.QuantSpec.parse({"weight_granularity": "x" * 100_000}),
    lambda: wb.QuantSpec.parse({"layers": {"conv": {"act_bits": {"k": "v" * 100_000}}}}),
    lambda: wb.QuantSpec.parse({"layers": list(range(100_000))}),
    lambda: wb.PruningSpec.parse({"sparsity": [0.5] * 100_000}),
    lambda: wb.PruningSpec.parse({"layers": "x" * 100_000}),
], ids=["bits-list", "granularity-str", "nested-dict", "layers-list", "sparsity-list", "layers-str"])
def test_validation_errors_never_echo_a_huge_input(build):
    with pytest.raises(SpecError) as info:
        build()
    msg = one_line(info.value)
    assert len(msg) < 450, msg  # path + message + at most ~200 characters of the input
    assert "characters)" in msg


# ----------------------------------------------------------------------------- direct construction


@pytest.mark.parametrize("build,pattern", [
    (lambda: wb.PruningSpec(sparsity=1.0), r"^sparsity: expected a value in \[0, 1\); got 1\.0$"),
    (lambda: wb.PruningSpec(sparsity=-0.1), r"^sparsity: expected a value in \[0, 1\); got -0\.1$"),
    (lambda: wb.PruningSpec(sparsity="half"), r"^sparsity: expected a value in \[0, 1\); got 'half'$"),
    (lambda: wb.PruningSpec(method="random"), r"^method: Input should be 'structured', 'unstructured' or 'nm'; got 'random'$"),
    (lambda: wb.PruningSpec(m=1), r"^m: Input should be greater than or equal to 2; got 1$"),
    (lambda: wb.PruningSpec(colour="red"), r"^colour: unknown field; got 'red'$"),
    (lambda: wb.PruningSpec(method="nm", sparsity=0.3), r"^N:M sparsity 0\.3 is not a whole number of weights out of m=4"),
    (lambda: wb.QuantSpec(weight_bits=33), r"^weight_bits: expected an integer in 2-8 or 16, or 'float'; got 33$"),
    (lambda: wb.QuantSpec(layers={"conv": {"act_bits": 1}}), r"^layers\.conv\.act_bits: expected an integer in 2-8 or 16"),
], ids=["sparsity-1", "sparsity-neg", "sparsity-str", "method", "m", "unknown", "nm", "quantspec", "quantspec-layer"])
def test_constructing_a_spec_directly_raises_spec_error(build, pattern):
    with pytest.raises(SpecError, match=pattern) as info:
        build()
    one_line(info.value)


def test_valid_specs_still_construct_and_nest():
    assert wb.PruningSpec(sparsity=0.25).sparsity == 0.25
    assert wb.QuantSpec(weight_bits=4, layers={"a": {"act_bits": 6}}).layers["a"].act_bits == 6
    with pytest.raises(RecipeError, match=r"^pruning\.sparsity: expected a value in \[0, 1\); got 1\.0"):  # nested: full path kept
        parse_recipe({"task": {"name": "digits-cnn"}, "pruning": {"sparsity": 1.0}})


# ----------------------------------------------------------------------------- tiny real tasks


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def accuracy(outputs, targets):
    return float((outputs.argmax(1) == targets).float().mean())


def tiny_task(metric=accuracy, calib_channels: int = 1, name: str = "tiny"):
    gen = torch.Generator().manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    calib = torch.randn(24, calib_channels, 8, 8, generator=gen)
    x_eval = torch.randn(16, 1, 8, 8, generator=gen)
    task = wb.make_task(model, calib, (x_eval, torch.randint(0, 3, (16,), generator=gen)), metric=metric, name=name)
    return task, model


class Counting:
    """A metric that counts its calls: 0 calls means no work was done."""

    def __init__(self):
        self.calls = 0

    def __call__(self, outputs, targets):
        self.calls += 1
        return accuracy(outputs, targets)


# ----------------------------------------------------------------------------- result store


def _real_store(path: Path, rows: int = 200) -> None:
    with ResultStore(path) as s:
        for i in range(rows):
            s.put("sweep", "test", f"case{i}", {"x": float(i), "text": "y" * 200})


RNG = random.Random(13)


def _random_bytes(path: Path) -> None:
    path.write_bytes(RNG.randbytes(8192))
    Path(f"{path}-wal").write_bytes(RNG.randbytes(512))
    Path(f"{path}-shm").write_bytes(RNG.randbytes(512))


def _truncated(path: Path) -> None:
    _real_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _short_garbage(path: Path) -> None:
    path.write_bytes(b"not a database")


def _bad_page(path: Path) -> None:
    _real_store(path)
    data = bytearray(path.read_bytes())
    data[4096 + 10 : 4096 + 400] = RNG.randbytes(390)  # page 2 scribbled over, header intact
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_random_bytes, _truncated, _short_garbage, _bad_page], ids=["random-bytes", "truncated", "short-garbage", "bad-page"])
def test_a_corrupt_store_is_moved_aside_and_a_fresh_one_made(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    path = tmp_path / "cache" / "results.sqlite"
    damage(path)
    had = {s for s in ("-wal", "-shm") if Path(f"{path}{s}").exists()}
    with pytest.warns(CorruptFileWarning, match=r"results\.sqlite is damaged \(.+\); moved it aside to results\.sqlite\.corrupt-\d{8}-\d{6}; started a fresh result store") as rec:
        store = ResultStore()
    one_line(rec[0].message, str(path))
    moved = sorted(p.name for p in path.parent.glob("results.sqlite.corrupt-*"))
    base = [n for n in moved if not n.endswith(("-wal", "-shm"))]
    assert len(base) == 1, moved
    for s in had:  # its -wal / -shm went with it
        assert base[0] + s in moved
    with store:
        assert store.count() == 0 and store.put("s", "k", "c", {"v": 1.0}) and store.integrity_ok()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the next open is quiet and keeps the row
        with ResultStore() as again:
            assert again.rows("s") == {"c": {"v": 1.0}}


def test_a_sweep_heals_a_corrupt_default_store_and_works(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    _random_bytes(tmp_path / "results.sqlite")
    task, model = tiny_task()
    config = wb.SensitivityConfig(weight_bits=(4,))
    with pytest.warns(CorruptFileWarning, match="results.sqlite is damaged"):
        df = wb.sensitivity(task, model, config, progress=False)
    assert df.attrs["computed"] == 2 and (df["status"] == "ok").all()
    again = wb.sensitivity(task, model, config, progress=False)
    assert again.attrs["from_store"] == 2 and again.attrs["computed"] == 0


IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def read_only(path: Path):
    """Make ``path`` (file or folder) really read-only: chmod for a user; for root, whom chmod
    does not stop, the immutable attribute (``chattr +i``)."""
    if not IS_ROOT:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root, where chmod does not stop writes, and chattr +i is not available on this filesystem")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_store_is_refused_when_opened_before_any_work(tmp_path, monkeypatch, what):
    folder = tmp_path / "cache"
    folder.mkdir()
    path = folder / "results.sqlite"
    _real_store(path, rows=3)
    monkeypatch.setenv("WORKBENCH_CACHE", str(folder))
    metric = Counting()
    task, model = tiny_task(metric)
    with read_only(path if what == "file" else folder):
        with pytest.raises(StoreError) as info:
            wb.sensitivity(task, model, wb.SensitivityConfig(weight_bits=(4,)), progress=False)
        msg = one_line(info.value, str(path), "--no-store", "store=False")
        assert ("read-only folder" if what == "folder" else "is read-only") in msg
        assert metric.calls == 0  # refused before the sweep scored anything
        with pytest.raises(StoreError):
            pruning_sweep(task, model, PruningSweepConfig(method="unstructured", sparsities=(0.5,), per_layer=False, latency_runs=0), progress=False)
        assert metric.calls == 0
        # --no-store / store=False still works
        assert len(wb.sensitivity(task, model, wb.SensitivityConfig(weight_bits=(4,)), store=False, progress=False)) == 2
    assert not list(folder.glob("*.corrupt-*"))  # a read-only store is not "corrupt"


def test_sqlite_itself_refusing_writes_is_a_store_error_too(tmp_path, monkeypatch):
    """Where os.access cannot tell (some mounts, ACLs), the rolled-back write probe still refuses at open."""
    path = tmp_path / "results.sqlite"
    _real_store(path, rows=3)
    monkeypatch.setattr(store_module.os, "access", lambda *a, **k: True)
    with read_only(path):
        with pytest.raises(StoreError, match=r"cannot be written \(attempt to write a readonly database\)") as info:
            ResultStore(path)
    one_line(info.value, str(path), "--no-store")


def test_a_store_path_that_is_a_folder_or_of_another_layout(tmp_path):
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StoreError, match="is a folder") as info:
        ResultStore(tmp_path / "dir.sqlite")
    one_line(info.value, str(tmp_path / "dir.sqlite"))
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE rows (a, b)")
    with pytest.raises(StoreError, match="an SQLite file of another layout") as info:
        ResultStore(other)
    one_line(info.value, str(other))


# ----------------------------------------------------------------------------- MLflow


@contextlib.contextmanager
def http_server(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def raw_server(reply: bytes | None):
    """A TCP server that answers every connection with ``reply`` (None: says nothing, then closes)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    if reply is not None:
                        conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        sock.close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _json_handler(status: int, body: dict):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


@pytest.mark.parametrize("server,pattern", [
    (lambda: http_server(Quiet), r"HTTP 404 with a body that is not JSON"),
    (lambda: http_server(_json_handler(200, {"status": "healthy"})), r"HTTP 200 with JSON of another service"),
    (lambda: raw_server(b"garbage that is not HTTP\r\n\r\n"), r"\(BadStatusLine: garbage that is not HTTP\)"),
    (lambda: raw_server(None), r"\((RemoteDisconnected|ConnectionResetError|BadStatusLine)"),
], ids=["http.server", "other-json-service", "raw-garbage", "closes-at-once"])
def test_an_http_server_that_is_not_mlflow_is_refused_before_any_work(server, pattern):
    pytest.importorskip("mlflow")
    metric = Counting()
    task, model = tiny_task(metric)
    with server() as uri:
        t0 = time.perf_counter()
        with pytest.raises(TrackingError, match=pattern) as info:
            Tracker(uri)
        assert time.perf_counter() - t0 < 10
        one_line(info.value, uri, "does not answer MLflow's REST API", "expected an MLflow tracking server")
        with pytest.raises(TrackingError):
            wb.sensitivity(task, model, wb.SensitivityConfig(weight_bits=(4,)), store=False, progress=False, tracking=uri)
    assert metric.calls == 0


def test_a_silent_server_times_out_quickly():
    from workbench.infra.tracking import check_mlflow_server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)  # accepts the connection (kernel backlog) but never answers
    try:
        t0 = time.perf_counter()
        with pytest.raises(TrackingError, match=r"timed out") as info:
            check_mlflow_server(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=1)
        assert time.perf_counter() - t0 < 5
        one_line(info.value)
    finally:
        sock.close()


@pytest.mark.parametrize("status,body", [
    (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Could not find experiment with name 'workbench'"}),
    (200, {"experiment": {"experiment_id": "1", "name": "workbench"}}),
])
def test_a_server_answering_mlflows_rest_api_passes_the_check(status, body):
    pytest.importorskip("mlflow")
    with http_server(_json_handler(status, body)) as uri:
        assert Tracker(uri).uri == uri


# ----------------------------------------------------------------------------- NaN metrics


def test_a_nan_metric_gives_nonfinite_rows_in_sensitivity_and_pruning_sweeps():
    task, model = tiny_task(lambda outputs, targets: float("nan"), name="nan-metric")
    sens = wb.sensitivity(task, model, wb.SensitivityConfig(weight_bits=(4, 8)), store=False, progress=False)
    assert len(sens) == 4 and (sens["status"] == "nonfinite").all() and sens["metric"].isna().all()
    assert sens["sqnr_db"].notna().all()  # the label-free comparisons are still measured
    prune = pruning_sweep(task, model, PruningSweepConfig(method="unstructured", sparsities=(0.5,), per_layer=False, latency_runs=0),
                          store=False, progress=False)
    assert len(prune) == 2 and (prune["status"] == "nonfinite").all()
    ok_task, _ = tiny_task()
    ok = wb.sensitivity(ok_task, model, wb.SensitivityConfig(weight_bits=(8,)), store=False, progress=False)
    assert (ok["status"] == "ok").all() and ok["metric"].map(math.isfinite).all()


# ----------------------------------------------------------------------------- calibration data


EXPECTED_CHANNELS = r"calibration data has shape \(24, 3, 8, 8\); the model expects \(N, 1, 8, 8\): its first layer conv \(\w*Conv2d\) takes 1 input channel\(s\), got 3"


@pytest.mark.parametrize("run", [
    lambda task, model: wb.quantize_task(task, model, wb.QuantSpec()),
    lambda task, model: wb.sensitivity(task, model, wb.SensitivityConfig(weight_bits=(4,), act_bits=(8,)), store=False, progress=False),
    lambda task, model: pruning_sweep(task, model, PruningSweepConfig(sparsities=(0.5,), latency_runs=0), store=False, progress=False),
], ids=["quantize_task", "sensitivity", "pruning_sweep"])
def test_calibration_data_with_the_wrong_channel_count(run):
    task, model = tiny_task(calib_channels=3)
    with pytest.raises(CalibrationError, match=EXPECTED_CHANNELS) as info:
        run(task, model)
    one_line(info.value)


def test_calibrate_names_the_layer_whose_input_does_not_fit():
    task, model = tiny_task()
    qmodel = wb.quantize_model(model, wb.QuantSpec())
    with pytest.raises(CalibrationError, match=EXPECTED_CHANNELS.replace("24", "5")) as info:
        calibrate(qmodel, torch.randn(5, 3, 8, 8))
    one_line(info.value)
    with pytest.raises(CalibrationError, match=r"calibration data of shape \(5, 1, 9, 9\) does not fit the model: layer fc \(\w*Linear\) "
                                                r"takes 144 input features, got 196 \(its input has shape \(5, 196\)\)") as info:
        calibrate(qmodel, torch.randn(5, 1, 9, 9))
    one_line(info.value)
    calibrate(qmodel, torch.randn(5, 1, 8, 8))  # data that fits still calibrates


def test_every_error_here_is_a_workbench_error():
    for cls in (SpecError, RecipeError, StoreError, TrackingError, CalibrationError):
        assert issubclass(cls, WorkbenchError)


def test_a_long_recipe_error_still_names_its_file(tmp_path):
    path = tmp_path / ("long-name-" * 8 + ".yaml")
    path.write_text(f"recipe_version: 1\ntask: {{name: digits-cnn}}\nquantization: {{weight_granularity: {'x' * 5000}}}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert one_line(info.value, str(path)).endswith(f"(in {path})")
