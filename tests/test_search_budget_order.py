"""``workbench search`` takes budgets in any order: the search maximises the measured metric, every
``--budget`` is a hard constraint, and the additive kind the search sweeps is chosen internally (the
profile's cost kind when budgeted, else the first budgeted additive kind in the registry's order,
else the profile's cost kind with no value of its own). Run through the real CLI."""

import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from workbench.cli import app

BOPS = 2.6e7  # digits-cnn: every layer at 8 bits is 2.89e7 BOPs, at 4 bits 1.45e7


def run(tmp_path, out: str, *args: str):
    res = CliRunner().invoke(app, ["search", "digits-cnn", "--target", "mcu", *args, "--out", str(tmp_path / out)])
    assert res.exit_code == 0, (res.output, res.stderr)
    lines = {line.split(" ", 1)[0]: line for line in res.stdout.splitlines()
             if line.startswith(("chosen ", "budget:", "swept:", "bound by:"))}
    return res, lines, (tmp_path / out / "pareto.csv").read_bytes(), (tmp_path / out / "recipe.yaml").read_bytes()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, digits):  # digits: the baseline trained once for the module
    return tmp_path_factory.mktemp("order")


def test_the_order_of_the_budgets_changes_nothing(workdir):
    # weight_kib given last or first: the first additive kind budgeted (mcu's own, tflite_kib, is not), so the kind swept; the others hard
    _, one, csv_one, recipe_one = run(workdir, "one", "--budget", "ram_kib=64", "--budget", f"bops={BOPS:g}", "--budget", "weight_kib=12")
    _, two, csv_two, recipe_two = run(workdir, "two", "--budget", "weight_kib=12", "--budget", f"bops={BOPS:g}", "--budget", "ram_kib=64")
    assert csv_one == csv_two and recipe_one == recipe_two and one == two
    assert one["budget:"].startswith("budget: weight_kib <= 12 KiB; limits: ") and "bops <= 2.6e+07" in one["budget:"]
    points = pd.read_csv(workdir / "one" / "pareto.csv")
    chosen = points[(points["weight_kib"] <= 12) & (points["bops"] <= BOPS) & (points["kind"] != "random")]
    assert one["chosen"].startswith("chosen (") and f"measured {chosen['measured_metric'].max():.4f}" in one["chosen"]
    assert b"name: digits-cnn-weight_kib-12\n" in recipe_one
    # --budget-kib is --budget weight_kib=: the same search
    _, three, csv_three, recipe_three = run(workdir, "three", "--budget", "ram_kib=64", "--budget-kib", "12", "--budget", f"bops={BOPS:g}")
    assert csv_three == csv_one and recipe_three == recipe_one and three == one


def test_a_non_additive_budget_first_is_no_longer_refused(workdir):
    # ram_kib is not additive: it was refused as the first budget; now bops (additive) is swept in both orders
    _, one, csv_one, recipe_one = run(workdir, "ram-bops", "--budget", "ram_kib=60", "--budget", f"bops={BOPS:g}")
    _, two, csv_two, recipe_two = run(workdir, "bops-ram", "--budget", f"bops={BOPS:g}", "--budget", "ram_kib=60")
    assert csv_one == csv_two and recipe_one == recipe_two and one == two
    assert one["budget:"].startswith("budget: bops <= 2.6e+07 BOPs; limits: ") and "ram_kib <= 60 KiB" in one["budget:"]
    # no additive budget at all: the profile's cost kind is swept with no value, the point is the best measured within the budgets
    res, alone, _, recipe = run(workdir, "ram", "--budget", "ram_kib=60")
    # (the mcu profile's cost kind is the realised tflite_kib: the TFLite file's bytes)
    assert alone["swept:"].startswith("swept: tflite_kib (no budget on it") and "ram_kib <= 60 KiB" in alone["swept:"]
    points = pd.read_csv(workdir / "ram" / "pareto.csv")
    ok = points[(points["kind"] != "random") & points["within_budgets"]]
    best = ok.sort_values(["measured_metric", "tflite_kib"], ascending=[False, True], kind="stable").iloc[0]
    assert f"measured {best['measured_metric']:.4f}" in alone["chosen"] and f"tflite_kib {best['tflite_kib']:.6g} KiB" in alone["chosen"]
    assert "best measured within the budgets" in alone["chosen"] and b"name: digits-cnn-ram_kib-60\n" in recipe
    # a RAM budget below what the model's activations need: one line before any work, in either place
    bad = CliRunner().invoke(app, ["search", "digits-cnn", "--target", "mcu", "--budget", "ram_kib=1", "--budget", "weight_kib=12",
                                   "--out", str(workdir / "bad")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and "ram_kib" in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    assert not (workdir / "bad").exists()


def test_the_help_says_budgets_come_in_any_order():
    helptext = " ".join(re.sub("[\u2500-\u257f]", " ", CliRunner().invoke(app, ["search", "--help"]).output).split())  # no box lines
    assert "in any order" in helptext and "first is the budget" not in helptext


def test_a_ram_budget_before_a_latency_budget_on_onnxruntime(workdir):
    # the issue's own example: refused before ("budget kind 'ram_kib' is not additive"); latency_ms is the kind swept in both orders
    from workbench.search.cost_tables import COST_SOURCES

    if "onnxruntime" not in COST_SOURCES or not COST_SOURCES["onnxruntime"].available():
        pytest.skip("the onnxruntime cost source is not installed")
    outs = []
    for out, budgets in (("ort-one", ["ram_kib=64", "latency_ms=5"]), ("ort-two", ["latency_ms=5", "ram_kib=64"])):
        args = [a for b in budgets for a in ("--budget", b)]
        res = CliRunner().invoke(app, ["search", "digits-cnn", "--target", "onnxruntime", *args, "--out", str(workdir / out)])
        assert res.exit_code == 0, (res.output, res.stderr)
        lines = [x for x in res.stdout.splitlines() if x.startswith(("chosen ", "budget:"))]
        outs.append((lines, (workdir / out / "pareto.csv").read_bytes(), (workdir / out / "recipe.yaml").read_bytes()))
    assert outs[0] == outs[1]
    lines = outs[0][0]
    assert lines[0].startswith("chosen (") and " latency_ms " in lines[0]
    assert lines[1].startswith("budget: latency_ms <= 5 ms; limits: ") and "ram_kib <= 64 KiB" in lines[1]
    points = pd.read_csv(workdir / "ort-one" / "pareto.csv")
    assert points["latency_ms"].notna().all() and (points["latency_ms_estimate"] > 0).all()
