"""A CLI that answers at once: ``workbench --help``, every ``<command> --help``, the listings
(tasks, targets, formats, exporters, costs) and usage errors import neither torch nor a target
toolchain, and the listings print what they printed when they built every model to list it."""

import importlib.util
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "tensorflow", "onnxruntime", "brevitas", "transformers", "hls4ml", "ethosu", "ai_edge_litert", "ai_edge_quantizer",
         "litert_torch", "tflite_micro", "qonnx", "onnx")

# runs the CLI in this fresh process (as the console script does), then prints the heavy modules loaded
RUNNER = """
import json, sys
from workbench.cli import app
HEAVY = {heavy!r}
for argv in {argvs!r}:
    try:
        app(argv, prog_name="workbench")
        code = 0
    except SystemExit as exc:
        code = exc.code
    print("@@" + json.dumps({{"argv": argv, "code": code, "heavy": sorted({{m.split(".")[0] for m in sys.modules if m.split(".")[0] in HEAVY}})}}))
"""


def _run(*argvs: list[str]) -> tuple[list[dict], str]:
    code = RUNNER.format(heavy=HEAVY, argvs=[list(a) for a in argvs])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    results = [json.loads(line[2:]) for line in res.stdout.splitlines() if line.startswith("@@")]
    text = "\n".join(line for line in res.stdout.splitlines() if not line.startswith("@@"))
    assert len(results) == len(argvs), res.stdout + res.stderr
    return results, text


@pytest.mark.parametrize("argv", [["--help"], ["tasks"], ["targets"], ["formats"], ["exporters"], ["costs"]], ids=" ".join)
def test_a_listing_or_help_imports_no_torch_nor_toolchain(argv):
    [result], _ = _run(argv)
    assert result["code"] == 0
    assert result["heavy"] == [], f"workbench {' '.join(argv)} imported {result['heavy']}"


def test_every_command_help_and_usage_error_imports_no_torch_nor_toolchain():
    commands = ["tasks", "formats", "exporters", "costs", "demo", "quantize", "describe", "sensitivity", "apply", "deploy", "targets", "qat",
                "search", "prune", "recipe"]
    argvs = [[c, "--help"] for c in commands] + [["recipe", "diff", "--help"], ["recipe", "schema", "--help"], ["recipe", "check", "--help"]]
    usage = [[], ["quantize"], ["quantize", "digits-cnn", "--bogus", "1"], ["search"], ["tasks", "--bogus"], ["recipe"], ["recipe", "check"],
             ["bogus"], ["prune", "digits-cnn", "--latency-runs", "x"]]
    results, _ = _run(*argvs, *usage)
    for r in results:  # one process: a command that imported torch would show it from there on
        assert r["heavy"] == [], f"workbench {' '.join(r['argv'])} imported {r['heavy']}"
    assert [r["code"] for r in results[: len(argvs)]] == [0] * len(argvs)
    assert all(r["code"] == 2 for r in results[len(argvs):]), results[len(argvs):]


def test_tasks_lists_every_builtin_task_as_its_built_model_says():
    """The rows ``workbench tasks`` prints without building a model (each built-in task's
    registered listing) are the rows of the built task: shape, parameters, MACs, metric, data."""
    from workbench.tasks.registry import _LISTINGS, create_task, list_tasks, task_listing, tasks_table

    builtin = ["ad-autoencoder", "digits-cnn", "hf-bert", "hf-minilm-embed", "hf-mobilenetv2", "hf-resnet18", "ic-resnet8", "kws-dscnn",
               "mnist1d-cnn", "vww-mobilenet"]
    assert set(builtin) <= set(list_tasks()) and set(builtin) <= set(_LISTINGS)
    for name in builtin:
        assert _LISTINGS[name][1] == task_listing(create_task(name)), name
    _, text = _run(["tasks"])
    assert text == tasks_table().to_string(index=False)
    for name in builtin:
        assert name in text


def test_a_task_registered_without_a_listing_is_built_to_be_listed():
    import torch
    from torch import nn

    import workbench as wb
    from workbench.tasks.registry import _REGISTRY, tasks_table

    @wb.register_task("startup-test-mlp")
    def mlp(seed: int = 0):
        x = torch.randn(8, 4)
        return wb.make_task(nn.Linear(4, 3), x, (x, torch.zeros(8, dtype=torch.long)), lambda o, y: 0.0, name="startup-test-mlp")

    try:
        row = tasks_table().set_index("task").loc["startup-test-mlp"]
        assert (row["input_shape"], row["params"], row["macs"]) == ("4", 15, 12)
    finally:
        dict.pop(_REGISTRY, "startup-test-mlp")


def test_targets_and_exporters_list_every_registered_entry():
    from workbench.export.exporters import EXPORTERS, Target, module_installed

    results, text = _run(["targets"], ["exporters"])
    assert [r["code"] for r in results] == [0, 0]
    targets = [n for n, e in EXPORTERS.items() if isinstance(e, Target)]
    assert {"tflite-int8", "hls4ml", "ethos-u55-128"} <= set(targets)
    for name in [*EXPORTERS, "qcdq", "qonnx", "float"]:
        assert name in text
    # the probe without imports answers as importlib.util.find_spec does
    for name in targets:
        found = all(importlib.util.find_spec(m) is not None for m in EXPORTERS[name].requires)
        assert all(module_installed(m) for m in EXPORTERS[name].requires) == found


def test_vela_accelerators_read_from_its_source_are_vela_own():
    pytest.importorskip("ethosu.vela")
    from ethosu.vela.architecture_features import Accelerator

    from workbench.targets.vela import _configs_from_source

    assert _configs_from_source() == tuple(Accelerator.member_list())
