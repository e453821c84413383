"""Realised cost kinds (onnx_kib, tflite_kib): the bytes the written artifact holds, checked
against files written by the real exporters (digits-cnn), and the search budgeting them by default."""

import importlib.util
import json
import math

import pytest

import workbench as wb
from workbench.core.cost import COST_KINDS, LayerCosts, cost_table, get_cost_kind, layer_costs, load_target, realised_weight_bytes
from workbench.search.config import SearchConfig
from workbench.search.problem import build_problem, smallest_budget
from workbench.search.realised import check_toolchain, estimate_kib, measure_overhead, realised_costs, write_artifact

TFLITE = all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert"))
NARROW = (2, 3, 5, 6, 7)


def _assignments(layers):
    mixed = [2, 3, 5, 8, 4, 6, 7]
    return {"w8": {l: 8 for l in layers}, "w4": {l: 4 for l in layers}, "w2": {l: 2 for l in layers},
            "mixed": {l: mixed[i % len(mixed)] for i, l in enumerate(layers)},
            "mixed4": {l: [4, 3, 5, 2][i % 4] for i, l in enumerate(layers)}}


def test_kinds_are_registered_and_documented():
    for name, fmt in (("onnx_kib", "onnx"), ("tflite_kib", "tflite")):
        k = get_cost_kind(name)
        assert k.artifact == fmt and k.additive and not k.measured and k.unit == "KiB"
        assert k.description.startswith("realised") and "realised" in k.label
    assert "theoretical" in COST_KINDS["weight_kib"].label and "theoretical" in COST_KINDS["weight_kib"].description
    assert load_target("cpu-int8-ort").cost == "onnx_kib" and load_target("mcu").cost == "tflite_kib"
    assert load_target("mcu").limits == {"flash_kib": 256.0, "ram_kib": 64.0}
    # the containers: on onnxruntime 2 and 3 bits cost what 4 costs, 5-7 what 8 costs; TFLite 2, 3 what 8 costs
    onnx = {b: realised_weight_bytes("onnx", 1000, 10, 10, b) for b in range(2, 9)}
    assert onnx[2] == onnx[3] == onnx[4] < onnx[5] == onnx[6] == onnx[7] == onnx[8]
    tfl = {b: realised_weight_bytes("tflite", 1000, 10, 10, b) for b in range(2, 9)}
    assert tfl[4] < tfl[2] == tfl[3] == tfl[5] == tfl[8]
    assert realised_weight_bytes("tflite", 1000, 10, 10, 4, depthwise=True) == tfl[8]


def test_default_budget_kind_is_the_profiles():
    assert SearchConfig().budget_kind == "onnx_kib"
    assert SearchConfig(target="mcu").budget_kind == "tflite_kib"
    assert SearchConfig(target="fpga-dataflow").budget_kind == "bops"
    assert SearchConfig(budget_kind="weight_kib").budget_kind == "weight_kib"


def _check_files(task, model, kind, fmt, tmp_path, **kw):
    costs = layer_costs(model, task.example_input())
    withed = LayerCosts(costs, {kind: measure_overhead(task, model, kind, costs, store=False, **kw)})
    seen = {}
    for name, a in _assignments(list(costs)).items():
        size = write_artifact(fmt, task, model, a, tmp_path / f"{name}.{fmt}", **kw).stat().st_size
        est = estimate_kib(kind, withed, a) * 1024
        seen[name] = (size, est)
        assert abs(est - size) <= 0.02 * size, (name, size, est)
        assert est >= size - 32, (name, size, est)  # never below the file by more than a few bytes
    # the realised value follows the containers, not the bits: W2 writes W4's bytes on onnxruntime, W8's in TFLite
    assert seen["w2"][0] == seen["w4" if fmt == "onnx" else "w8"][0]
    assert seen["w4"][0] < seen["w8"][0]
    return seen


@pytest.mark.parametrize("encoding", ["u8", "s8"])
def test_onnx_kib_matches_the_written_qcdq_file(digits, tmp_path, encoding):
    task, model = digits
    _check_files(task, model, "onnx_kib", "onnx", tmp_path, weight_encoding=encoding)


@pytest.mark.skipif(not TFLITE, reason="tflite_kib needs LiteRT from the [targets] extra")
def test_tflite_kib_matches_the_written_tflite_file(digits, tmp_path):
    task, model = digits
    _check_files(task, model, "tflite_kib", "tflite", tmp_path)


def test_overhead_is_stored_and_read_back(digits, tmp_path):
    task, model = digits
    store = wb.infra.store.ResultStore(tmp_path / "store.sqlite")
    costs = layer_costs(model, task.example_input())
    first = measure_overhead(task, model, "onnx_kib", costs, store=store)
    again = realised_costs(task, model, costs, ["onnx_kib", "weight_kib"], store=store)
    assert again.overhead == {"onnx_kib": first} and first > 0
    # a whole-model value of a realised kind includes the overhead; a table of some layers does not
    full = cost_table(again, {l: 8 for l in costs})
    assert COST_KINDS["onnx_kib"].value(full) == pytest.approx(full["onnx_bytes"].sum() / 1024 + first)


def test_missing_toolchain_is_one_line_naming_the_extra(digits, monkeypatch):
    import pandas as pd

    import workbench.search.realised as realised
    from workbench.search.precision import search

    monkeypatch.setitem(realised.TOOLCHAINS, "tflite", (("no_such_litert_module",), "pip install 'workbench[targets]'"))
    with pytest.raises(wb.infra.ToolchainError, match=r"tflite_kib .*no_such_litert_module.*pip install 'workbench\[targets\]'") as e:
        check_toolchain("tflite_kib")
    assert "\n" not in str(e.value)
    check_toolchain("weight_kib")  # not realised: nothing to install
    # a search on mcu (its realised tflite_kib by default) refuses before any work: the empty sensitivity table is never read
    task, model = digits
    with pytest.raises(wb.infra.ToolchainError, match=r"pip install 'workbench\[targets\]'"):
        search(task, model, pd.DataFrame(), SearchConfig(target="mcu"), budgets=[100.0], progress=False, store=False)


@pytest.fixture(scope="module")
def digits_sens(digits):
    from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

    task, model = digits
    return sensitivity(task, model, SensitivityConfig(weight_bits=(2, 3, 4, 5, 6, 7, 8)), store=False, progress=False)


def test_dominated_widths_are_never_offered(digits, digits_sens):
    task, model = digits
    costs = layer_costs(model, task.example_input())
    p = build_problem(digits_sens, costs, [2, 3, 4, 5, 6, 7, 8], "onnx_kib")
    allowed = {b: bool(p.allowed[:, p.bits.index(b)].any()) for b in p.bits}
    assert allowed == {2: False, 3: False, 4: True, 5: False, 6: False, 7: False, 8: True}
    theoretical = build_problem(digits_sens, costs, [2, 3, 4, 5, 6, 7, 8], "weight_kib")
    assert theoretical.allowed.all()


def test_default_search_budgets_onnx_kib(digits, digits_sens):
    from workbench.search.precision import search

    task, model = digits
    df = search(task, model, digits_sens, SearchConfig(n_budgets=2, n_random=1, latency_runs=0), progress=False, store=False)
    assert df.attrs["budget_kind"] == "onnx_kib" and "onnx_kib" in df and "weight_kib" in df
    for bits in df["bits"]:
        assert not set(json.loads(bits).values()) & set(NARROW), bits
    assert {"uniform-8", "uniform-4"} <= set(df["kind"]) and not {"uniform-6", "uniform-3"} & set(df["kind"])
    # the column is the whole file (layers + measured overhead): uniform-8's is its QCDQ file's size
    w8 = df[df["kind"] == "uniform-8"].iloc[0]
    assert w8["onnx_kib"] > w8["weight_kib"] and math.isfinite(w8["onnx_kib"])


def test_budget_below_the_smallest_file_names_it(digits, digits_sens):
    from workbench.search.precision import search

    task, model = digits
    with pytest.raises(wb.infra.SpecError, match=r"smallest reachable is [0-9.]+ KiB \(every layer at its cheapest allowed bits\)"):
        search(task, model, digits_sens, budgets=[1.0], progress=False, store=False)
