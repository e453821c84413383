"""One cost model (issue 14, item 3): cost kinds as a registry that target profiles, the search's
budgets and limits, the CLI, the report and the explorer read; a profile's budgets are hard limits."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import workbench as wb
from workbench.cli import app
from workbench.core.cost import COST_KINDS, cost_table, layer_costs, load_target, packed_weight_bytes, totals
from workbench.runs.report import AXES, pareto_figure
from workbench.search.config import SearchConfig
from workbench.search.front import best_within
from workbench.search.precision import search
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

WORKBENCH = str(Path(sys.executable).parent / "workbench")
FAST = dict(n_budgets=3, n_random=1, latency_runs=0, budget_kind="weight_kib")  # these tests are about limits: the theoretical kind


def one_line(exc) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


@pytest.fixture(scope="module")
def sens48(digits):
    task, model = digits
    return sensitivity(task, model, SensitivityConfig(weight_bits=(4, 8)), store=False, progress=False)


def profile(tmp_path, budgets: str, name: str = "tiny-mcu") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nweight_bits: [4, 8]\nact_bits: [8]\ncost: flash_kib\nbudgets: {budgets}\n")
    return str(path)


def test_the_registry_lists_every_kind_and_the_axes_read_it():
    df = wb.core.list_cost_kinds()
    assert list(df.columns) == ["name", "unit", "label", "additive", "computed", "weight_dependent", "same_as", "description"]
    rows = df.set_index("name")
    assert {"weight_kib", "flash_kib", "bops", "macs", "peak_act_kib", "ram_kib", "latency_ms"} <= set(rows.index)
    assert rows.loc["bops", "unit"] == "BOPs" and rows.loc["weight_kib", "unit"] == "KiB" and rows.loc["latency_ms", "unit"] == "ms"
    assert bool(rows.loc["weight_kib", "additive"]) and not rows.loc["peak_act_kib", "additive"] and not rows.loc["latency_ms", "computed"]
    assert rows.loc["flash_kib", "same_as"] == "weight_kib" and rows.loc["ram_kib", "same_as"] == "peak_act_kib"
    assert not rows.loc["ram_kib", "weight_dependent"]
    assert dict(AXES) == dict(zip(df["name"], df["label"]))  # the report's axis titles are the registry's labels


def test_one_weight_bytes_formula_and_every_kind_from_the_cost_table(digits):
    task, model = digits
    costs = layer_costs(model, task.example_input())
    assignment = {name: b for name, b in zip(costs, (4, 8, 2, 8, 4, 8))}
    table = cost_table(costs, assignment, 8)
    tot = totals(table)
    c = costs["features.3"]
    assert packed_weight_bytes(c.weights, c.biases, 4) == c.weights // 2 + 4 * c.biases
    assert packed_weight_bytes(c.weights, c.biases, None) == packed_weight_bytes(c.weights, c.biases, "float") == 4 * (c.weights + c.biases)
    assert tot["weight_kib"] == tot["flash_kib"] == pytest.approx(table["weight_bytes"].sum() / 1024)
    assert tot["macs"] == table["macs"].sum() and tot["bops"] == table["bops"].sum() and isinstance(tot["bops"], int)
    assert tot["peak_act_kib"] == tot["ram_kib"] == table["act_bytes"].max() / 1024
    # describe() of the real quantised model counts the same bytes (the same formula)
    q = wb.quantize_task(task, model, wb.QuantSpec.parse({"weight_bits": 8, "act_bits": 8,
                                                          "layers": {k: {"weight_bits": v} for k, v in assignment.items()}}))
    described = wb.describe(q).set_index("layer")["weight_bytes"]
    assert described.loc[list(costs)].tolist() == table["weight_bytes"].tolist()


def test_unknown_kinds_are_one_line_spec_errors(digits, sens48, tmp_path):
    task, model = digits
    with pytest.raises(wb.infra.SpecError, match=r"^unknown cost kind 'flash_kb' \(did you mean 'flash_kib'\?\); expected one of weight_kib, flash_kib"):
        wb.core.get_cost_kind("flash_kb")
    with pytest.raises(wb.infra.SpecError, match=r"^budget_kind: unknown cost kind 'kib'") as info:  # the config refuses it, before any search
        SearchConfig(target="mcu", **{**FAST, "budget_kind": "kib"})
    one_line(info.value)
    with pytest.raises(wb.infra.SpecError, match=r"^budget_kind: budget kind 'ram_kib' is not additive over layers; a search budgets one of weight_kib, flash_kib, bops, macs"):
        SearchConfig(target="mcu", **{**FAST, "budget_kind": "ram_kib"})
    with pytest.raises(wb.infra.SpecError, match=r"^unknown cost kind 'rom_kib'"):
        search(task, model, sens48, SearchConfig(target="mcu", **FAST), limits={"rom_kib": 3}, progress=False)
    with pytest.raises(wb.infra.SpecError, match=r"^limit latency_ms: latency_ms is measured, not computed, so it cannot be a limit"):
        search(task, model, sens48, SearchConfig(target="mcu", **FAST), limits={"latency_ms": 3}, progress=False)
    with pytest.raises(wb.infra.SpecError, match=r"^unknown cost kind 'size'"):
        pareto_figure(pd.DataFrame({"kind": [], "measured_metric": []}), "size")


def test_profiles_are_checked_against_the_registry(tmp_path):
    assert load_target("mcu").limits == {"flash_kib": 256.0, "ram_kib": 64.0}
    assert load_target("cpu-int8-ort").limits == {} and load_target("fpga-dataflow").cost == "bops"
    bad = profile(tmp_path, "{flash_kib: 256, sram_kib: 64}", "bad")
    with pytest.raises(wb.infra.SpecError, match=r"budgets: unknown cost kind 'sram_kib' \(did you mean 'ram_kib'\?\)") as info:
        load_target(bad)
    assert one_line(info.value).startswith(f"target {bad}: budgets: ")
    (tmp_path / "c.yaml").write_text("name: c\nweight_bits: [8]\nact_bits: [8]\ncost: flash\n")
    with pytest.raises(wb.infra.SpecError, match=r"cost: unknown cost kind 'flash' \(did you mean 'flash_kib'\?\)"):
        load_target(tmp_path / "c.yaml")


def test_a_search_never_returns_a_point_over_the_profile_flash_limit_and_names_it(digits, sens48, tmp_path):
    task, model = digits
    costs = layer_costs(model, task.example_input())
    w8 = totals(cost_table(costs, {n: 8 for n in costs}, 8))["flash_kib"]
    w4 = totals(cost_table(costs, {n: 4 for n in costs}, 8))["flash_kib"]
    limit = round((w4 + w8) / 2, 1)  # between all-int4 and all-int8: it binds
    df = search(task, model, sens48, SearchConfig(target=profile(tmp_path, f"{{flash_kib: {limit}, ram_kib: 64}}"), **FAST),
                extra_budgets=(w8,), progress=False)
    assert df.attrs["limits"] == {"flash_kib": limit, "ram_kib": 64.0}
    assert (df["flash_kib"] <= limit + 1e-9).all() and (df["ram_kib"] <= 64).all()
    assert "uniform-8" not in set(df["kind"]) and "uniform-4" in set(df["kind"])  # over the limit: no candidate
    assert {"ilp", "greedy", "random"} <= set(df["kind"])
    at_w8 = df[df["kind"].isin(["ilp", "greedy"]) & (df["budget"] == w8)]
    assert len(at_w8) == 2 and set(at_w8["bound_by"]) == {"flash_kib"}  # the budget allowed int8 everywhere; flash did not
    assert "budget" in set(df["bound_by"])  # smaller budgets bind themselves
    best = best_within(df, w8)
    assert best["flash_kib"] <= limit and best["bound_by"] == "flash_kib"
    # a caller's limit tightens the profile's; best_within applies limits too
    tight = search(task, model, sens48, SearchConfig(target=profile(tmp_path, f"{{flash_kib: {limit}}}"), **FAST),
                   limits={"flash_kib": limit - 1}, progress=False)
    assert tight.attrs["limits"] == {"flash_kib": limit - 1} and (tight["flash_kib"] <= limit - 1 + 1e-9).all()
    assert best_within(df, w8, limits={"flash_kib": limit - 1})["flash_kib"] <= limit - 1
    with pytest.raises(wb.infra.SpecError, match=r"^no evaluated candidate fits a budget of .* flash_kib <= 1"):
        best_within(df, w8, limits={"flash_kib": 1})


def test_limits_a_profile_forbids_and_unreachable_limits_fail_before_any_work(digits, sens48, tmp_path, monkeypatch):
    search_module = sys.modules["workbench.search.measuring"]  # the module (wb.search is the function)
    task, model = digits
    monkeypatch.setattr(search_module, "measure", lambda *a, **k: pytest.fail("nothing may be measured"))
    tgt = profile(tmp_path, "{flash_kib: 10, ram_kib: 64}")
    with pytest.raises(wb.infra.SpecError, match=r"^limit flash_kib=20 is over target tiny-mcu's limit flash_kib=10 KiB; a profile's limits can be tightened, not loosened"):
        search(task, model, sens48, SearchConfig(target=tgt, **FAST), limits={"flash_kib": 20}, progress=False)
    with pytest.raises(wb.infra.SpecError, match=r"^target tiny-mcu's ram_kib limit of 1 KiB is below the model's 3 KiB \(RAM KiB at 8 activation bits"):
        search(task, model, sens48, SearchConfig(target=profile(tmp_path, "{ram_kib: 1}"), **FAST), progress=False)
    with pytest.raises(wb.infra.SpecError, match=r"^no assignment meets target tiny-mcu's flash_kib limit of 2 KiB; the smallest reachable is 7\.328\d* KiB \(every layer at its cheapest of 4, 8 bits\)$"):
        search(task, model, sens48, SearchConfig(target=profile(tmp_path, "{flash_kib: 2}"), **FAST), progress=False)


@pytest.fixture()
def traffic_kind():
    kind = wb.core.register_cost_kind(wb.core.CostKind("traffic_kib", "KiB", "memory traffic KiB", "weights read plus activations in and out, in KiB",
                                             per_layer=lambda t: (t["weight_bytes"] + t["act_bytes"]) / 1024))
    yield kind
    COST_KINDS.pop("traffic_kib", None)


def test_a_registered_cost_kind_is_a_budget_a_limit_a_column_and_an_axis(digits, sens48, traffic_kind):
    task, model = digits
    assert "traffic_kib" in set(wb.core.list_cost_kinds()["name"]) and AXES["traffic_kib"] == "memory traffic KiB"
    df = search(task, model, sens48, SearchConfig(target="mcu", **{**FAST, "budget_kind": "traffic_kib"}), progress=False)
    solved = df[df["kind"].isin(["ilp", "greedy"])]
    assert len(solved) and (solved["traffic_kib"] <= solved["budget"] * (1 + 1e-9)).all()
    low, high = df["traffic_kib"].min(), df["traffic_kib"].max()
    assert low < high
    mid = (low + high) / 2
    limited = search(task, model, sens48, SearchConfig(target="mcu", **FAST), limits={"traffic_kib": mid}, progress=False)
    assert (limited["traffic_kib"] <= mid + 1e-9).all() and "traffic_kib" in set(limited["bound_by"])
    assert pareto_figure(df, "traffic_kib").layout.xaxis.title.text == "memory traffic KiB"
    with pytest.raises(wb.infra.SpecError, match="cost kind 'bops' is built in"):
        wb.core.register_cost_kind(wb.core.CostKind("bops", "x", "x", "x", per_layer=lambda t: t["macs"]))


def run(*args, cwd):
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ}, timeout=600)


def test_cli_budget_kind_value_with_a_limit_says_which_bound(digits, tmp_path):
    tgt = profile(tmp_path, "{flash_kib: 10, ram_kib: 64}")
    res = run("search", "digits-cnn", "--budget", "weight_kib=14", "--budget", "macs=1e9", "--target", tgt, "--out", "found", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "limits: flash_kib <= 10 KiB (target tiny-mcu), ram_kib <= 64 KiB (target tiny-mcu), macs <= 1e+09 MACs (limits)" in res.stdout
    assert "bound by: flash_kib <= 10 KiB (target tiny-mcu)" in res.stdout
    points = pd.read_csv(tmp_path / "found" / "pareto.csv")
    assert (points["flash_kib"] <= 10 + 1e-9).all() and {"bound_by", "macs", "ram_kib"} <= set(points.columns)
    bits = yaml_bits(tmp_path / "found" / "recipe.yaml")
    assert set(bits.values()) <= {4, 8}
    for args, message in [(["--budget", "flash_kb=10"], "error: --budget 'flash_kb=10': unknown cost kind 'flash_kb' (did you mean 'flash_kib'?)"),
                          (["--budget", "flash_kib=lots"], "error: --budget 'flash_kib=lots': expected KIND=VALUE with a number"),
                          # flash_kib, the profile's cost kind, is swept (its limit binds); weight_kib is a hard budget on top
                          (["--budget", "weight_kib=20", "--budget", "flash_kib=8", "--target", tgt], "error: limit weight_kib=20 is over target tiny-mcu's limit"),
                          (["--budget", "flash_kib=8", "--budget", "weight_kib=20", "--target", tgt], "error: limit weight_kib=20 is over target tiny-mcu's limit")]:
        bad = CliRunner().invoke(app, ["search", "digits-cnn", *args, "--out", str(tmp_path / "bad")])
        assert bad.exit_code == 2 and bad.stderr.startswith(message) and bad.stderr.count("\n") == 1, bad.stderr[-2000:]
        assert not (tmp_path / "bad").exists()


def yaml_bits(path) -> dict:
    import yaml

    layers = yaml.safe_load(Path(path).read_text())["quantization"]["layers"]
    return {k: v["weight_bits"] for k, v in layers.items()}


def test_cli_lists_the_cost_kinds_and_the_exporters():
    kinds = CliRunner().invoke(app, ["costs"])
    assert kinds.exit_code == 0, kinds.output
    rows = {line.split()[0] for line in kinds.output.splitlines()[1:] if line.strip()}
    assert rows == set(COST_KINDS)
    exporters = CliRunner().invoke(app, ["exporters"])
    assert exporters.exit_code == 0, exporters.output
    assert {line.split()[0] for line in exporters.output.splitlines()[1:] if line.strip()} == set(wb.export.list_exporters()["name"])
