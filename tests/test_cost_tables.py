"""Per-target cost tables: real builds measured by the target's own toolchain (TFLite file and
TFLite Micro arena, Vela's compile, onnxruntime's profiler) on a small real model; the table's
additive estimate against the target's own numbers; the result store; bad targets."""

import importlib.util
import json

import pandas as pd
import pytest
import torch

import workbench as wb
from workbench.search.cost_tables import COST_SOURCES, TargetCostTable, build_cost_table, list_cost_sources, measure_point

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")


@pytest.fixture(scope="module")
def kws():
    task = wb.create_task("kws-dscnn").small()
    return task, wb.load_or_train_baseline(task, seed=0, epochs=1, progress=False)


@pytest.fixture(scope="module")
def tflite_table(kws, tmp_path_factory):
    task, model = kws
    store = wb.infra.ResultStore(tmp_path_factory.mktemp("store") / "results.sqlite")
    return build_cost_table(task, model, "tflite-int8", bits=(8, 4), n_validate=1, seed=0, store=store, progress=False), store


def test_tflite_table_shape_and_flash_estimate_is_exact(kws, tflite_table):
    task, model = kws
    table, _ = tflite_table
    layers = list(wb.core.quantisable_layers(model))
    assert isinstance(table, TargetCostTable) and table.kinds == ("flash_kib", "ram_kib") and table.bits == (8, 4)
    assert len(table.table) == 2 * len(layers) and table.layers == layers
    m = table.matrix("flash_kib", layers, [8, 4])
    assert m.shape == (len(layers), 2) and (m[:, 1] <= m[:, 0]).all() and (m[:, 1] < m[:, 0]).any()  # 4-bit buffers are smaller
    # uniform builds: the estimate is the target's own total (the overhead is what the layers leave)
    for row in table.totals.itertuples():
        point = {layer: row.weight_bits for layer in layers}
        assert table.estimate(point, "flash_kib") == pytest.approx(row.flash_kib, rel=1e-9)
    # a mixed point: the file's bytes are the layers' buffers plus what is the same at any bits
    v = table.validation
    assert set(v["kind"]) == {"flash_kib", "ram_kib"} and v.loc[v["kind"] == "flash_kib", "error"].notna().all()
    flash = v[v["kind"] == "flash_kib"].iloc[0]
    assert flash["error"] < 0.01
    mixed = json.loads(flash["bits"])
    assert len(set(mixed.values())) == 2
    # ram: a max over layers, plus the arena's overhead
    assert table.estimate(mixed, "ram_kib") == pytest.approx(v[v["kind"] == "ram_kib"].iloc[0]["estimate"])
    assert table.estimate({layer: 8 for layer in layers}, "ram_kib") == pytest.approx(table.totals.iloc[0]["ram_kib"])
    # TFLite Micro has no INT4 FULLY_CONNECTED kernel: the classifier at 4 bits has no RAM (NaN), so
    # the uniform 4-bit file does not allocate, and validation points keep the classifier at 8 bits
    ram = table.matrix("ram_kib", layers, [8, 4])
    linear = [i for i, layer in enumerate(layers) if isinstance(model.get_submodule(layer), torch.nn.Linear)]
    assert linear and all(pd.isna(ram[i, 1]) for i in linear) and pd.notna(ram).sum() == 2 * len(layers) - len(linear)
    assert pd.isna(table.totals.set_index("weight_bits").loc[4, "ram_kib"]) and pd.isna(table.estimate({layer: 4 for layer in layers}, "ram_kib"))
    assert all(mixed[layers[i]] == 8 for i in linear)
    assert v.loc[v["kind"] == "ram_kib", "error"].iloc[0] < 0.02  # the arena against the layers' max + overhead


def test_a_search_never_picks_what_tflite_micro_cannot_run(kws, tflite_table, tmp_path):
    from workbench.search.config import SearchConfig
    from workbench.search.precision import search
    from workbench.analysis.sensitivity import SensitivityConfig, sensitivity
    from workbench.infra.store import ResultStore

    task, model = kws
    table, _ = tflite_table
    sens = sensitivity(task, model, SensitivityConfig(weight_bits=(8, 4)), store=False, progress=False)
    config = SearchConfig(target="mcu", n_budgets=2, uniform_bits=(8, 4), n_random=0, latency_runs=0)
    df = search(task, model, sens, config, cost_table=table, progress=False, store=ResultStore(tmp_path / "results.sqlite"))
    # the target's numbers are stored with the metric: a second search builds nothing for TFLite Micro either
    again = search(task, model, sens, config, cost_table=table, progress=False, store=ResultStore(tmp_path / "results.sqlite"))
    assert df.attrs["computed"] == again.attrs["from_store"] == df["bits"].nunique() and again.attrs["computed"] == 0
    pd.testing.assert_frame_equal(df, again, check_exact=True)
    classifier = [layer for layer in table.layers if isinstance(model.get_submodule(layer), torch.nn.Linear)]
    assert "uniform-4" not in set(df["kind"]) and len(df) >= 2  # a 4-bit classifier everywhere: not a candidate
    assert all(json.loads(b)[c] == 8 for b in df["bits"] for c in classifier)
    assert df["ram_kib"].notna().all() and df["within_budgets"].all()  # every candidate allocated and ran on TFLite Micro


def test_measure_point_matches_estimate_of_another_mixed_point(kws, tflite_table):
    task, model = kws
    table, _ = tflite_table
    layers = table.layers
    point = {layer: (4 if i % 3 == 0 else 8) for i, layer in enumerate(layers)}
    got = measure_point(task, model, point, "tflite-int8")
    assert set(got) == {"flash_kib", "ram_kib"}
    assert table.estimate(point, "flash_kib") == pytest.approx(got["flash_kib"], rel=0.01)


def test_second_build_is_a_store_lookup(kws, tflite_table, monkeypatch):
    task, model = kws
    table, store = tflite_table
    calls = []
    source = COST_SOURCES["tflite-int8"]
    monkeypatch.setitem(COST_SOURCES, "tflite-int8", type(source)(**{**source.__dict__, "measure": lambda *a: calls.append(a) or source.measure(*a)}))
    again = build_cost_table(task, model, "tflite-int8", bits=(8, 4), n_validate=1, seed=0, store=store, progress=False)
    assert calls == [] and again.from_store and not table.from_store and table.builds == 3 and again.builds == 0
    assert again.fingerprint == table.fingerprint
    assert again.table.equals(table.table) and again.overhead == table.overhead
    assert again.validation[["estimate", "actual"]].equals(table.validation[["estimate", "actual"]])
    other = build_cost_table(task, model, "tflite-int8", bits=(8,), n_validate=0, store=store, progress=False)  # another key: built
    assert not other.from_store and len(calls) == 1


def test_vela_cycles_are_additive_over_layers(kws):
    """Vela's per-layer cycles of the uniform builds predict a mixed 8/4-bit point's cycles exactly;
    4-bit codes in int8 containers compress, so the layers' flash shrinks."""
    pytest.importorskip("ethosu.vela")
    task, model = kws
    table = build_cost_table(task, model, "ethos-u55-128", bits=(8, 4), n_validate=2, store=False, progress=False)
    assert table.kinds == ("cycles", "latency_ms", "flash_kib", "ram_kib")
    layers = table.layers
    cycles = table.matrix("cycles", layers, [8, 4])
    assert (cycles > 0).all()  # every layer found in Vela's per-layer table
    total = table.totals.set_index("weight_bits").loc[8]
    point = {layer: 8 for layer in layers}
    assert table.estimate(point, "cycles") == total["cycles"]
    assert table.overhead["cycles"] > 0  # the pad and the mean are not layers
    assert table.estimate(point, "latency_ms") == pytest.approx(total["latency_ms"], rel=1e-6)
    flash = table.matrix("flash_kib", layers, [8, 4])
    assert 0 < flash[:, 0].sum() < total["flash_kib"] and flash[:, 1].sum() < 0.8 * flash[:, 0].sum()
    v = table.validation.set_index("kind")
    assert len(table.validation) == 2 * 4 and (v.loc["cycles", "error"] < 1e-9).all()  # mixed points: exact
    assert (v.loc["flash_kib", "error"] < 0.10).all()


def test_onnxruntime_latency_table(kws, monkeypatch):
    import workbench.search.cost_tables as ct

    monkeypatch.setattr(ct, "ORT_PROFILE_RUNS", 10)
    monkeypatch.setattr(ct, "ORT_LATENCY_RUNS", 20)
    task, model = kws
    table = build_cost_table(task, model, "onnxruntime", bits=(8, 4), n_validate=1, store=False, progress=False)
    assert table.kinds == ("latency_ms",) and set(table.table["weight_bits"]) == {8, 4}
    m = table.matrix("latency_ms", table.layers, [8, 4])
    assert (m > 0).all()  # every layer's nodes found in the profile
    v = table.validation
    assert len(v) == 1 and v["actual"].iloc[0] > 0 and v["error"].iloc[0] >= 0


def test_unknown_target_and_missing_toolchain(kws, monkeypatch):
    task, model = kws
    with pytest.raises(wb.infra.SpecError, match="tflite-int8") as err:
        build_cost_table(task, model, "tflite-int9", store=False)
    assert "\n" not in str(err.value)
    with pytest.raises(wb.infra.SpecError, match="builds weights of 8, 7, 6, 5, 4, 3, 2 bits"):
        build_cost_table(task, model, "tflite-int8", bits=(8, 16), store=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ethosu.vela" else real(name, *a))
    with pytest.raises(wb.infra.ToolchainError, match=r"workbench\[targets\]"):
        build_cost_table(task, model, "ethos-u55-128", bits=(8,), store=False)
    with pytest.raises(wb.infra.ToolchainError, match="ethosu.vela"):
        measure_point(task, model, {}, "ethos-u55-128")
    listed = list_cost_sources().set_index("name")
    assert not listed.loc["ethos-u55-128", "available"] and listed.loc["onnxruntime", "available"]
    assert listed.loc["tflite-int8", "kinds"] == "flash_kib, ram_kib"
