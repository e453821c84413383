"""The job report: metric change in points, the search's budget and chosen point, the chosen
recipe's bits and verification, MACs / BOPs / peak activation bytes, where latency was measured,
the ONNX size note, and the modes of everything a job writes."""

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

import workbench as wb
from workbench.core.cost import described_costs, layer_costs
from workbench.runs.report import bits_figure, metric_figure, pareto_figure, write_report

CHOSEN_SPEC = {"weight_bits": 8, "act_bits": 8, "layers": {"features.0": {"weight_bits": 6}, "features.3": {"weight_bits": 3}}}


def _job(task, model, out, **kwargs):
    """A small job: W8A8, W4A8 (int8 containers: pack none) and a mixed point marked as a search's choice."""
    variants = {"w8a8": wb.QuantSpec.uniform(8, 8), "w4a8": wb.QuantSpec.uniform(4, 8), "chosen": CHOSEN_SPEC}
    search = {"budget_kib": 9.0, "chosen_weight_kib": 8.5, "chosen_measured_metric": 0.97, "recipe": "recipe.yaml", "variant": "chosen",
              "expected": {"onnx_agreement": {"min": 0.98}}, "expectations_failed": []}
    return wb.run_job(task, variants, out, float_model=model, progress=False, latency_runs=5, weight_encoding="u8", pack="none",
                      ptq=wb.PTQConfig(calib_samples=64), extra={"search": search}, files={"recipe.yaml": "recipe_version: 1\n"},
                      variant_formats={"w8a8": ("qcdq",), "chosen": ("qcdq", "qonnx")}, formats=("qcdq",), **kwargs)


def _modes(root: Path) -> tuple[set, set]:
    files, dirs = set(), set()
    for path in [root, *root.rglob("*")]:
        (dirs if path.is_dir() else files).add(oct(stat.S_IMODE(path.stat().st_mode)))
    return files, dirs


@pytest.fixture(scope="module")
def job(digits, tmp_path_factory):
    """The small job, written under umask 022 into a folder whose parent it creates."""
    task, model = digits
    small = task.small(256, 64, 128)
    out = tmp_path_factory.mktemp("report") / "runs" / "job"
    old = os.umask(0o022)
    try:
        summary = _job(small, model, out)
    finally:
        os.umask(old)
    return small, model, summary, out


def test_metric_figure_is_the_change_from_float_in_points(job):
    _, _, summary, _ = job
    fig = metric_figure(summary)
    sim, ort = fig.data[0], fig.data[1]
    names = list(summary["variants"])
    assert list(sim.x) == names and list(ort.x) == names  # no float bar: float is the zero line
    for trace, key in ((sim, "quant_metric"), (ort, "onnx_metric")):
        expected = [(summary["variants"][n][key] - summary["fp_metric"]) * 100 for n in names]
        assert list(trace.y) == pytest.approx(expected, abs=1e-9)
        assert list(trace.customdata) == [summary["variants"][n][key] for n in names]  # the absolute values stay in the hover
        assert all(f"{summary['variants'][n][key]:.4f}" in h for n, h in zip(names, trace.hovertext))
    assert "percentage points" in fig.layout.title.text and fig.layout.yaxis.title.text.endswith("(pt)")


def test_variants_record_macs_bops_and_peak_activation_bytes_of_their_bits(job):
    small, model, summary, _ = job
    v = summary["variants"]
    assert v["w8a8"]["macs"] == v["w4a8"]["macs"] == summary["float_costs"]["macs"] > 0
    assert v["w4a8"]["bops"] * 2 == v["w8a8"]["bops"] and summary["float_costs"]["bops"] == 16 * v["w8a8"]["bops"]
    assert v["w8a8"]["peak_act_bytes"] * 4 == summary["float_costs"]["peak_act_bytes"]
    costs = layer_costs(model, small.example_input())
    table = pd.read_csv(Path(job[3]) / "layers_chosen.csv")
    assert v["chosen"]["bops"] == described_costs(costs, table)["bops"] == sum(
        c.macs * (6 if n == "features.0" else 3 if n == "features.3" else 8) * 8 for n, c in costs.items())


def test_report_holds_the_chosen_recipe_costs_latency_place_and_size_note(job):
    _, _, summary, out = job
    report = (out / "report.html").read_text()
    assert summary["latency_where"].startswith("host CPU (") and f"onnxruntime {__import__('onnxruntime').__version__}, 1 thread, batch 1" in summary["latency_where"]
    assert f"Latency (ms), measured on {summary['latency_where']}" in report
    for column in ("<th>MACs</th>", "<th>BOPs</th>", "<th>peak activation bytes</th>", "change from float, onnxruntime (pt)"):
        assert column in report
    assert "Chosen recipe: rebuilt, exported and verified" in report and "the recipe&#x27;s expectations" in report
    assert "model_chosen.onnx, model_chosen.qonnx.onnx" in report and "Chosen recipe (variant chosen): bits per layer" in report
    assert summary["variants"]["chosen"]["qonnx_agreement"] is not None and "qonnx_path" not in summary["variants"]["w8a8"]
    # pack none: W4A8 sits in int8 containers, as large as W8A8; the note says why, naming both
    assert summary["variants"]["w4a8"]["onnx_file_bytes"] == summary["variants"]["w8a8"]["onnx_file_bytes"]
    assert "Why some ONNX file bytes do not shrink" in report and "(as large as w8a8, chosen)" in report


def test_no_size_note_where_every_low_bit_weight_is_packed(job):
    _, _, summary, _ = job
    packed = {**summary, "variants": {"w8a8": summary["variants"]["w8a8"]}}
    assert "Why some ONNX file bytes" not in write_report(packed, {"w8a8": pd.DataFrame({"layer": ["a"], "weight_bits": [8], "act_bits": [8],
                                                                                          "weight_bytes": [1], "weight_bytes_fp": [4]})})


def test_bits_figure_has_weight_and_activation_bits_per_layer():
    table = pd.DataFrame({"layer": ["a", "b", "c"], "weight_bits": [6, 3, None], "act_bits": [8, 8, None]})
    fig = bits_figure(table)
    assert [t.name for t in fig.data] == ["weight bits", "activation bits"]
    assert list(fig.data[0].y) == [6, 3, 32] and list(fig.data[0].text) == ["6", "3", "float"] and list(fig.data[1].x) == ["a", "b", "c"]


def test_pareto_figure_marks_the_budget_and_the_chosen_point():
    df = pd.DataFrame({"kind": ["ilp", "ilp", "uniform4", "greedy"], "weight_kib": [3.0, 5.5, 7.0, 9.0], "measured_metric": [0.9, 0.95, 0.97, 0.99],
                       "estimated_metric": [0.9, 0.95, 0.97, 0.99], "bits": ["{}"] * 4}, index=[10, 11, 12, 13])
    fig = pareto_figure(df, "weight_kib", "accuracy", budget=6.0, chosen=11)
    shapes = fig.layout.shapes
    assert any(s.type == "line" and s.x0 == s.x1 == 6.0 for s in shapes)  # the budget line
    assert any(s.type == "rect" and s.x0 == 3.0 and s.x1 == 6.0 for s in shapes)  # what is within it, shaded
    assert any("budget 6 KiB" in a.text for a in fig.layout.annotations)
    chosen = [t for t in fig.data if t.name == "chosen"]
    assert len(chosen) == 1 and list(chosen[0].x) == [5.5] and list(chosen[0].y) == [0.95] and "chosen" in chosen[0].text[0]
    plain = pareto_figure(df, "weight_kib")
    assert not plain.layout.shapes and "chosen" not in [t.name for t in plain.data]
    with pytest.raises(wb.infra.SpecError, match="chosen point 99 is not a row"):
        pareto_figure(df, "weight_kib", chosen=99)


def test_host_cpu_reads_the_model_name():
    assert wb.export.host_cpu("processor\t: 0\nmodel name\t: Intel(R) Xeon(R)  CPU @ 2.2GHz\n") == "Intel(R) Xeon(R) CPU @ 2.2GHz"
    assert wb.export.host_cpu("processor : 0\nModel : Raspberry Pi 5 Model B\n") == "Raspberry Pi 5 Model B"


def test_job_files_and_folders_follow_the_umask(job, digits, tmp_path):
    _, _, _, out = job
    files, dirs = _modes(out)
    assert files == {"0o644"} and dirs == {"0o755"} and oct(stat.S_IMODE(out.parent.stat().st_mode)) == "0o755"
    assert {p.name for p in out.iterdir()} >= {"report.html", "summary.json", "recipe.yaml", "model_chosen.qonnx.onnx", ".workbench-run.json"}
    task, model = digits
    old = os.umask(0o077)
    try:
        wb.run_job(task.small(256, 64, 128), {"w8a8": wb.QuantSpec.uniform(8, 8)}, tmp_path / "runs" / "private", float_model=model, progress=False,
                   latency_runs=5, formats=("qcdq",), ptq=wb.PTQConfig(calib_samples=64), files={"recipe.yaml": "recipe_version: 1\n"})
    finally:
        os.umask(old)
    files, dirs = _modes(tmp_path / "runs")
    assert files == {"0o600"} and dirs == {"0o700"}


def test_variant_formats_naming_no_variant_is_one_line_before_any_folder(digits, tmp_path):
    task, model = digits
    with pytest.raises(wb.infra.SpecError, match=r"^variant_formats names w9; expected variants of this job: w8$"):
        wb.run_job(task, {"w8": wb.QuantSpec.uniform(8, 8)}, tmp_path / "o", float_model=model, progress=False, variant_formats={"w9": ("qcdq",)})
    assert not (tmp_path / "o").exists()
