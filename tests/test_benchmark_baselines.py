"""benchmarks/baselines.py runs end to end on one small model (a few timed runs; CI time)."""

import importlib.util
from pathlib import Path

import pytest

from workbench.export.qcdq import resolve_weight_encoding


def _load():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines.py"
    spec = importlib.util.spec_from_file_location("bench_baselines", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_baselines_benchmark_one_model(capsys):
    rows = _load().main(["--models", "digits-cnn", "no-such-task", "--runs", "5", "--warmup", "1", "--small"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 1 and rows[0]["name"] == "digits-cnn"
    assert any(line.startswith("no-such-task") and "skipped: no task of that name is registered" in line for line in out)
    r = rows[0]
    assert r["how"].startswith("ort quantize_static QDQ per-channel")
    assert r["bytes"]["w4a8"] < r["bytes"]["w8a8"] < r["bytes"]["float"]
    assert r["bytes"]["baseline"] < r["bytes"]["float"]
    assert abs(r["metric"]["baseline"] - r["metric"]["float"]) <= 0.05
    assert abs(r["metric"]["w8a8"] - r["metric"]["float"]) <= 0.05
    assert all(r["lat"][k]["p50"] > 0 for k in ("float", "w8a8", "w4a8", "baseline"))
    chosen = f"weight_encoding {resolve_weight_encoding('auto')} (auto)"  # the benchmark's default is the workbench's
    assert out[-2].startswith("latency workbench/baseline: ") and out[-2].endswith(f"  ({chosen})")
    assert out[-1] == f"bytes W4A8/W8A8: {r['bytes']['w4a8'] / r['bytes']['w8a8']:.3f}  ({chosen})"
    assert float(out[-2].split(": ")[1].split()[0]) == pytest.approx(r["lat"]["w8a8"]["p50"] / r["lat"]["baseline"]["p50"], abs=1e-3)
