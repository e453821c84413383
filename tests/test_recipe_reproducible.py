"""A user's recipe rebuilds its own point: a factory that builds its model unseeded (the normal
way to write one) is called with the task's seed applied first, so search and apply, in separate
processes, train the same baseline; the applied metric is the searched one and two applies write
byte-identical ONNX files."""

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

WORKBENCH = str(Path(sys.executable).parent / "workbench")

# no torch.manual_seed anywhere: the weights nn.Linear draws depend on the process's RNG state
MODULE = textwrap.dedent('''
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    import workbench as wb


    def accuracy(outputs, targets):
        return float((outputs.argmax(1) == targets).float().mean())


    def digits():
        bunch = load_digits()
        x, y = torch.tensor(bunch.data / 16.0, dtype=torch.float32), torch.tensor(bunch.target)
        order = torch.randperm(len(x))  # an unseeded shuffle, too
        x, y = x[order], y[order]
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        return wb.make_task(model, x[1000:1200], (x[1200:], y[1200:]), accuracy, name="unseeded-digits",
                            train=(x[:1000], y[:1000]), epochs=3)
''')


def run(*args, cwd):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ}, timeout=600)


def test_search_then_apply_twice_rebuilds_the_searched_point_from_an_unseeded_factory(tmp_path):
    (tmp_path / "usertask.py").write_text(MODULE)
    search = run("search", "usertask:digits", "--budget", "weight_kib=1.5", "--out", "se", cwd=tmp_path)
    assert search.returncode == 0, search.stderr[-2000:]
    recipe = yaml.safe_load((tmp_path / "se" / "recipe.yaml").read_text())
    assert recipe["task"]["factory"] == "usertask:digits" and recipe["task"]["seed"] == 0
    searched = recipe["expected"]["quant_metric"]["value"]
    summaries, onnx = [], []
    for out in ("a1", "a2"):
        applied = run("apply", "se/recipe.yaml", "--allow-code", "--latency-runs", "10", "--out", out, cwd=tmp_path)
        assert applied.returncode == 0, applied.stderr[-2000:]  # the recipe's expectations hold
        summaries.append(json.loads((tmp_path / out / "summary.json").read_text()))
        onnx.append((tmp_path / out / "model.onnx").read_bytes())
    assert summaries[0]["fp_metric"] > 0.5  # a trained baseline (chance is 0.1)
    for s in summaries:
        assert abs(s["quant_metric"] - searched) < 1e-6, (s["quant_metric"], searched)  # the searched metric, not just within tolerance
        assert s["weight_bytes_quant"] <= 1.5 * 1024
    assert onnx[0] == onnx[1]
    assert summaries[0]["onnx_sha256"] == hashlib.sha256(onnx[0]).hexdigest()


PROBE = textwrap.dedent('''
    import hashlib, random, sys
    import numpy as np
    import torch
    from workbench.tasks.registry import task_from_factory

    torch.rand(int(sys.argv[1]))  # routes draw different amounts of randomness before the factory
    before = torch.random.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate()
    task = task_from_factory("usertask:digits", seed=int(sys.argv[2]))
    after = torch.random.get_rng_state(), np.random.get_state()[1], random.getstate()
    restored = bool(torch.equal(before[0], after[0]) and (before[1] == after[1]).all() and before[2] == after[2])
    weights = b"".join(t.numpy().tobytes() for t in task.create_model().state_dict().values())
    print(hashlib.sha256(weights).hexdigest(), task.data.fingerprint(), task.seed, restored)
''')


def test_the_factory_route_gives_the_same_initial_weights_in_every_process(tmp_path):
    (tmp_path / "usertask.py").write_text(MODULE)
    (tmp_path / "probe.py").write_text(PROBE)

    def probe(draws: int, seed: int) -> list[str]:
        res = subprocess.run([sys.executable, "probe.py", str(draws), str(seed)], capture_output=True, text=True, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.split()

    first, second, other_seed = probe(0, 0), probe(7, 0), probe(0, 1)
    assert first == second  # weights, data and seed alike whatever ran before
    assert first[:3] == [*first[:2], "0"] and first[3] == "True"  # the caller's generators are given back
    assert other_seed[0] != first[0] and other_seed[1] != first[1] and other_seed[2] == "1"  # the seed is what fixes them


def _weight_dtypes(path: Path) -> set[str]:
    """The element types of the integer weight tensors (initialisers of more than one element) of an ONNX file."""
    import onnx

    model = onnx.load(str(path))
    names = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8"}
    return {names[t.data_type] for t in model.graph.initializer
            if t.data_type in names and len(t.dims) > 0 and math.prod(t.dims) > 1}


def test_promote_writes_the_measured_encoding_never_auto(digits):
    from workbench.core.cost import load_target
    from workbench.export.qcdq import resolve_weight_encoding
    from workbench.runs.recipe import promote

    task, _ = digits
    assert load_target("cpu-int8-ort").weight_encoding == "auto"  # the profile leaves it to the host
    row = {"bits": json.dumps({"features.0": 8, "features.3": 4, "features.7": 8, "classifier": 8}), "measured_metric": 0.97}
    host = resolve_weight_encoding("auto")
    for kwargs in ({"target": "cpu-int8-ort"}, {"target": "cpu-int8-ort", "weight_encoding": "auto"}, {"weight_encoding": "auto"}):
        recipe = promote(task, row, name="p", **kwargs)
        assert recipe.export.weight_encoding == host and host in ("u8", "s8"), kwargs
        assert "auto" not in recipe.to_yaml()
    assert promote(task, row, name="p", target="cpu-int8-ort", weight_encoding="s8").export.weight_encoding == "s8"
    assert promote(task, row, name="p").export.weight_encoding == "u8"  # no target: the recipe default


def test_a_recipe_s_encoding_is_applied_as_written_on_any_host(tmp_path, digits):
    """u8 and s8 applied on this one host each give their own encoding: at least one of them is not
    what this host would probe, so neither was re-probed."""
    from workbench.runs.job import apply_recipe

    recipe = {"recipe_version": 1, "name": "enc", "task": {"name": "digits-cnn", "subset": [256, 128, 128], "epochs": 2},
              "quantization": {"weight_bits": 8, "act_bits": 8}, "export": {"formats": ["qcdq"]}}
    for encoding, dtype in (("s8", "int8"), ("u8", "uint8")):
        path = tmp_path / f"{encoding}.yaml"
        path.write_text(yaml.safe_dump({**recipe, "export": {"formats": ["qcdq"], "weight_encoding": encoding}}))
        summary, failures = apply_recipe(path, tmp_path / encoding, progress=False, latency_runs=10)
        assert failures == [] and summary["weight_encoding"] == encoding
        assert _weight_dtypes(tmp_path / encoding / "model.onnx") == {dtype}
