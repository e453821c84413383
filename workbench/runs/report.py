"""A self-contained HTML report (plotly.js inlined once, readable offline)."""

from __future__ import annotations

import html
import json
import textwrap
from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from .. import __version__
from ..core.cost import COST_KINDS, get_cost_kind
from ..infra.errors import SpecError

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2"]


def change_pt(value, reference) -> float | None:
    """``(value - reference) * 100``: a 0-1 metric's change in percentage points (None when either is missing)."""
    if value is None or reference is None or pd.isna(value) or pd.isna(reference):
        return None
    return (float(value) - float(reference)) * 100


def metric_figure(summary: dict) -> go.Figure:
    """Per variant, the metric's change from float in percentage points, in the simulation and in
    onnxruntime (the absolute values in the hover text; the variants table lists them too)."""
    fp, metric = summary["fp_metric"], summary["metric_name"]
    names = list(summary["variants"])
    fig = go.Figure()
    for key, label, color in (("quant_metric", "PyTorch / Brevitas simulation", PALETTE[0]), ("onnx_metric", "onnxruntime (exported QCDQ)", PALETTE[1])):
        values = [summary["variants"][n].get(key) for n in names]
        deltas = [change_pt(v, fp) for v in values]
        hover = [f"{n}: {metric} {'n/a' if v is None else f'{v:.4f}'} (float {fp:.4f})<br>change {'n/a' if d is None else f'{d:+.2f} pt'}"
                 for n, v, d in zip(names, values, deltas)]
        fig.add_bar(x=names, y=deltas, name=label, marker_color=color, text=[None if d is None else f"{d:+.2f}" for d in deltas],
                    textposition="outside", hovertext=hover, hoverinfo="text", customdata=values)
    fig.add_hline(y=0, line={"color": "#888888", "width": 1})
    fig.update_layout(title=f"{metric} change from float ({fp:.4f}) on the held-out split, percentage points", barmode="group",
                      yaxis_title=f"{metric} - float (pt)", height=380)
    return fig


def bits_figure(layer_table: pd.DataFrame, title: str = "Bits per layer") -> go.Figure:
    """Bars per layer (network order): weight bits and activation bits (of the tensor the layer
    reads), from a :func:`~workbench.core.describe.describe` table; float layers are bars at 32 labelled ``float``."""
    fig = go.Figure()
    for col, label, color in (("weight_bits", "weight bits", PALETTE[0]), ("act_bits", "activation bits", PALETTE[1])):
        bits = [None if pd.isna(b) else int(b) for b in layer_table[col]]
        fig.add_bar(x=list(layer_table["layer"]), y=[32 if b is None else b for b in bits], name=label, marker_color=color,
                    text=["float" if b is None else str(b) for b in bits], textposition="outside")
    fig.update_layout(title=title, barmode="group", yaxis_title="bits", xaxis_title="layer (network order)", height=360)
    return fig


def layer_bytes_figure(layers: dict[str, pd.DataFrame]) -> go.Figure:
    fig = go.Figure()
    first = next(iter(layers.values()))
    fig.add_bar(x=first["layer"], y=first["weight_bytes_fp"], name="float32", marker_color="#BBBBBB")
    for i, (name, df) in enumerate(layers.items()):
        text = [f"W{w if pd.notna(w) else 'fp'}A{a if pd.notna(a) else 'fp'}" for w, a in zip(df["weight_bits"], df["act_bits"])]
        fig.add_bar(x=df["layer"], y=df["weight_bytes"], name=name, text=text, marker_color=PALETTE[i % len(PALETTE)])
    fig.update_layout(title="Weight bytes per layer (packed at their bits)", barmode="group", yaxis_title="bytes", height=420)
    return fig


def latency_figure(summary: dict) -> go.Figure:
    fig = go.Figure()
    names = ["float"] + list(summary["variants"])
    p50 = [summary["latency_ms_p50_fp"]] + [v["latency_ms_p50_quant"] for v in summary["variants"].values()]
    p99 = [summary.get("latency_ms_p99_fp")] + [v["latency_ms_p99_quant"] for v in summary["variants"].values()]
    fig.add_bar(x=names, y=p50, name="p50", marker_color=PALETTE[2])
    fig.add_bar(x=names, y=p99, name="p99", marker_color=PALETTE[3])
    where = summary.get("latency_where") or "onnxruntime, batch 1, one thread"
    fig.update_layout(title=f"Latency (ms), measured on {where}", barmode="group", yaxis_title="ms", height=360)
    return fig


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="float", border=0, classes="tbl")


def write_report(summary: dict, layers: dict[str, pd.DataFrame], sections: list[tuple[str, go.Figure | None, str]] = ()) -> str:
    """The report as an HTML string; ``sections`` adds (title, figure, html) blocks at the end."""
    chosen_name = chosen_variant(summary)
    chosen_fig = [bits_figure(layers[chosen_name], f"Chosen recipe (variant {chosen_name}): bits per layer")] if chosen_name in layers else []
    figs = [metric_figure(summary), layer_bytes_figure(layers), latency_figure(summary), *chosen_fig] + [f for _, f, _ in sections if f is not None]
    parts = [f.to_html(full_html=False, include_plotlyjs=("inline" if i == 0 else False), config={"displaylogo": False}) for i, f in enumerate(figs)]
    data_badge = " <span class='synthetic'>synthetic data</span>" if summary.get("synthetic") else ""
    rows = []
    fp = summary["fp_metric"]
    for name, v in summary["variants"].items():
        d_sim, d_ort = change_pt(v["quant_metric"], fp), change_pt(v["onnx_metric"], fp)
        rows.append({
            "variant": name, "metric (sim)": round(v["quant_metric"], 4), "metric (onnxruntime)": _round(v["onnx_metric"], 4),
            "change from float, sim (pt)": _round(d_sim, 2), "change from float, onnxruntime (pt)": _round(d_ort, 2),
            "MACs": v.get("macs"), "BOPs": v.get("bops"), "peak activation bytes": v.get("peak_act_bytes"),
            "agreement": v["onnx_agreement"], "max |diff|": f"{v['max_abs_diff']:.3g}", "weight bytes (cost model, packed at their bits)": v["weight_bytes_quant"],
            "ONNX file bytes (whole file)": v["onnx_file_bytes"], "of which 4-bit packed weights": v.get("onnx_weight_bytes_packed"),
            "of which int8 containers": v.get("onnx_int8_bytes"), "of which float (scales, float layers)": v.get("onnx_float_bytes"), "integer kernels": ", ".join(f"{k} x{c}" for k, c in v["int_kernels"].items()) or "none",
            "QONNX agreement": v.get("qonnx_agreement"),
            **({"QONNX file bytes (whole file)": v["qonnx_file_bytes"],
                "of which integer weights (QONNX)": sum(v.get(k) or 0 for k in ("qonnx_weight_bytes_packed", "qonnx_int8_bytes", "qonnx_int16_bytes"))}
               if "qonnx_file_bytes" in v else {}),
        })
    deployment = _deployment_html(summary)
    chosen = _chosen_html(summary, chosen_name, parts[3] if chosen_fig else "")
    size_note = onnx_size_note(summary, layers)
    float_costs = summary.get("float_costs") or {}
    cost_line = (f" Float: {float_costs['macs']:,} MACs, {float_costs['bops']:,} BOPs, {float_costs['peak_act_bytes']:,} peak activation bytes "
                 f"(BOPs = MACs x weight bits x activation bits; peak activation bytes = the largest layer input + output at the variant's "
                 f"activation bits, layers run one at a time)." if float_costs else "")
    fig_parts = iter(parts[3 + len(chosen_fig):])
    extra = "".join(f"<h2>{html.escape(title)}</h2>{next(fig_parts) if fig is not None else ''}{body}" for title, fig, body in sections)
    sections = "".join(f"<h3>{html.escape(name)}</h3>{_table(df)}" for name, df in layers.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>workbench report: {html.escape(summary['task'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}} .tbl{{border-collapse:collapse;font-size:13px}}
.tbl td,.tbl th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}} .synthetic{{background:#fde2b8;padding:2px 6px;border-radius:4px;font-size:13px}}
code{{background:#f4f4f4;padding:1px 4px}}</style></head><body>
<h1>{html.escape(summary['task'])}{data_badge}</h1>
<p>Data: {html.escape(summary.get('data_source', ''))}. Metric: <code>{html.escape(summary['metric_name'])}</code>.
Float baseline {summary['fp_metric']:.4f}. Workbench {__version__}.{html.escape(cost_line)}
Latency measured on {html.escape(summary.get('latency_where') or 'this CPU')}.</p>
<h2>Variants</h2>{_table(pd.DataFrame(rows))}
{size_note}
{deployment}
{parts[0]}{parts[2]}<h2>Per layer</h2>{parts[1]}{sections}
{extra}{chosen}<h2>summary.json</h2><pre>{html.escape(json.dumps({k: v for k, v in summary.items() if k != 'variants'}, indent=2, default=str))}</pre>
</body></html>"""


def _round(value, digits: int):
    return None if value is None or pd.isna(value) else round(float(value), digits)


def chosen_variant(summary: dict) -> str | None:
    """The variant that rebuilt a search's chosen point (``summary["search"]["variant"]``), or None."""
    name = (summary.get("search") or {}).get("variant")
    return name if name in summary.get("variants", {}) else None


def _chosen_html(summary: dict, name: str | None, figure_html: str) -> str:
    """The chosen recipe's section: its bits per layer and how its export verified (the recipe's
    expectations, onnxruntime and QONNX agreement with the simulation, integer kernels)."""
    if name is None:
        return ""
    search, v = summary["search"], summary["variants"][name]
    fp = summary["fp_metric"]
    rows = [("metric in the search (measured)", f"{search['chosen_measured_metric']:.4f}"),
            ("metric rebuilt from the recipe (simulation)", f"{v['quant_metric']:.4f} ({change_pt(v['quant_metric'], fp):+.2f} pt from float)"),
            ("metric in onnxruntime (QCDQ file)", "n/a" if v.get("onnx_metric") is None else f"{v['onnx_metric']:.4f} ({change_pt(v['onnx_metric'], fp):+.2f} pt from float)"),
            ("onnxruntime agreement with the simulation", f"{v['onnx_agreement']:.4g} (max |diff| {v['max_abs_diff']:.3g})"),
            ("QONNX agreement with the simulation", "not exported" if v.get("qonnx_agreement") is None else f"{v['qonnx_agreement']:.4g}"),
            ("integer kernels onnxruntime runs", ", ".join(f"{k} x{c}" for k, c in v["int_kernels"].items()) or "none"),
            ("weight bytes (packed at their bits)", f"{v['weight_bytes_quant']:,} ({search['chosen_weight_kib']:.2f} KiB; budget {search['budget_kib']:g} KiB)"),
            ("MACs / BOPs / peak activation bytes", f"{v.get('macs', 0):,} / {v.get('bops', 0):,} / {v.get('peak_act_bytes', 0):,}"),
            ("files", ", ".join(str(v[k]) for k in ("onnx_path", "qonnx_path") if v.get(k)))]
    failed = search.get("expectations_failed")
    if failed is not None:
        expected = "; ".join(f"{k}: {', '.join(f'{a} {b:g}' for a, b in e.items())}" for k, e in (search.get("expected") or {}).items())
        rows.insert(0, ("the recipe's expectations", ("met" if not failed else "NOT met: " + "; ".join(failed)) + (f" ({expected})" if expected else "")))
    table = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>{html.escape(str(val))}</td></tr>" for k, val in rows)
    return (f"<h2>Chosen recipe: rebuilt, exported and verified</h2><p>The point the search chose, rebuilt from <code>{html.escape(str(search.get('recipe', 'recipe.yaml')))}</code> "
            f"(as <code>workbench apply</code> does) as the variant <code>{html.escape(name)}</code>, exported in the recipe's formats and run in onnxruntime.</p>"
            f"<table class='tbl'>{table}</table>{figure_html}")


def onnx_size_note(summary: dict, layers: dict[str, pd.DataFrame]) -> str:
    """A note where a variant's QCDQ file stores weights below 8 bits in int8 containers (so its
    ONNX bytes do not shrink with those bits, and W8A8 and W4A8 files can be the same size); empty
    where none does."""
    notes = []
    for name, v in summary["variants"].items():
        in_int8 = set((v.get("packing") or {}).get("int8", []))
        table = layers.get(name)
        if table is None or not in_int8:
            continue
        low = [r.layer for r in table.itertuples() if r.layer in in_int8 and pd.notna(r.weight_bits) and r.weight_bits < 8]
        if not low:
            continue
        qonnx = sum(v.get(k) or 0 for k in ("qonnx_weight_bytes_packed", "qonnx_int8_bytes", "qonnx_int16_bytes"))
        same = [o for o, w in summary["variants"].items() if o != name and w.get("onnx_file_bytes") == v.get("onnx_file_bytes")]
        notes.append(f"<li><code>{html.escape(name)}</code>: {len(low)} layer(s) below 8 bits ({html.escape(', '.join(low))}) are stored in int8 "
                     f"containers in the QCDQ ONNX file{' (as large as ' + html.escape(', '.join(same)) + ')' if same else ''}; the low-bit size is "
                     f"{v['weight_bytes_quant']:,} weight bytes packed at their bits"
                     + (f", {qonnx:,} bytes of integer weights at their bits in the QONNX file" if qonnx else "") + ".</li>")
    if not notes:
        return ""
    return ("<p><b>Why some ONNX file bytes do not shrink with the bits:</b> a QCDQ ONNX file (QuantizeLinear / DequantizeLinear for "
            "onnxruntime) stores integer weights as int8 initialisers; only weights of at most 4 bits are packed (as INT4, with "
            "<code>--pack int4</code>, the default). Weights of 5-7 bits, or 4 bits with <code>--pack none</code>, take a full byte each, "
            "so e.g. W4A8 and W8A8 files are the same size then. The low-bit size is the packed one (the cost model's weight bytes; "
            "the QONNX file's integer weights, which it stores at their bit width unless <code>--pack none</code>):</p><ul>" + "".join(notes) + "</ul>")


def _deployment_html(summary: dict) -> str:
    """The deployment table (``summary["deployment"]``, or the primary variant's onnxruntime row),
    each figure with where it comes from."""
    from .deployment import deployment_table

    if summary.get("deployment"):
        from .deployment import deployment_frame

        table = deployment_frame(summary["deployment"])
    else:
        table = deployment_table(summary["variants"][summary["primary_variant"]])
    table = table.dropna(axis=1, how="all")
    only_cpu = set(table["target"]) == {"qcdq"}
    note = ("<p>Only this CPU's runtime here; <code>workbench deploy RECIPE --target T</code> adds the embedded targets "
            "(<code>workbench targets</code> lists them; <code>pip install 'workbench[targets]'</code> installs their toolchains).</p>"
            if only_cpu else "<p>One row per target and runtime; <code>ram_source</code> and <code>latency_source</code> say whether a "
            "figure was measured on this CPU or estimated by a target compiler.</p>")
    return f"<h2>Deployment</h2>{note}{table.to_html(index=False, na_rep='-', border=0, classes='tbl')}"


# ----------------------------------------------------------------------------- sensitivity

SENSITIVITY_VALUES = {"metric_delta": "metric change", "sqnr_db": "output SQNR (dB)", "output_mse": "output MSE", "kl": "KL to float"}


def case_label(weight_bits, act_bits, weight_format=None, act_format=None) -> str:
    """``W4``, ``A8``, ``W4A8``; a number format other than ``int`` by its name (``Wfp8_e4m3``).

    ``weight_bits`` / ``act_bits`` may be a sweep case's format name itself (``"fp8_e4m3"``)."""

    def part(bits, fmt):
        if isinstance(bits, str):
            return bits
        if bits is None or pd.isna(bits):
            return "fp"
        return fmt if isinstance(fmt, str) and fmt != "int" else int(bits)

    w, a = part(weight_bits, weight_format), part(act_bits, act_format)
    return f"W{w}" if a == "fp" else (f"A{a}" if w == "fp" else f"W{w}A{a}")


def heatmap_matrix(df: pd.DataFrame, value: str, layers: list[str] | None = None, labels: list[str] | None = None):
    """Layers (network order) x case labels matrix of ``value``; missing cells are None."""
    if value not in SENSITIVITY_VALUES:
        raise ValueError(f"value {value!r}; expected one of {', '.join(SENSITIVITY_VALUES)}")
    if layers is None:
        layers = list(df.sort_values("depth")["layer"].drop_duplicates())
    keyed = {(r.layer, case_label(r.weight_bits, r.act_bits, getattr(r, "weight_format", None), getattr(r, "act_format", None))): getattr(r, value)
             for r in df.itertuples()}
    if labels is None:
        wf, af = df.get("weight_format", pd.Series([None] * len(df), index=df.index)), df.get("act_format", pd.Series([None] * len(df), index=df.index))
        labels = list(dict.fromkeys(case_label(w, a, f, g) for w, a, f, g in zip(df["weight_bits"], df["act_bits"], wf, af)))
    z = [[(None if (v := keyed.get((layer, lab))) is None or pd.isna(v) else float(v)) for lab in labels] for layer in layers]
    return layers, labels, z


def sensitivity_value_text(value: str, v, metric_name: str = "metric") -> str:
    """One cell's number with what it is and its unit: ``metric change -0.0123 (accuracy)``,
    ``output SQNR 23.4 dB``; ``v`` None or NaN reads "no value"."""
    if v is None or pd.isna(v):
        return f"{SENSITIVITY_VALUES[value]}: no value"
    v = float(v)
    if value == "metric_delta":
        return f"metric change {v:+.4f} ({metric_name})"
    if value == "sqnr_db":
        return f"output SQNR {v:.1f} dB"
    if value == "kl":
        return f"KL to float {v:.4g} nats"
    return f"output MSE {v:.4g} (squared output units)"


def sensitivity_hover(layers: list[str], labels: list[str], z: list[list], value: str, metric_name: str = "metric") -> list[list[str]]:
    """Hover text of each heatmap cell: ``features.7 at W4A8: metric change -0.0123 (accuracy)``."""
    return [[f"{layer} at {lab}: {sensitivity_value_text(value, v, metric_name)}" for lab, v in zip(labels, row)] for layer, row in zip(layers, z)]


SENSITIVITY_AXES = {"x": "weight / activation bits", "y": "layer (network order)"}


def sensitivity_heatmap(df: pd.DataFrame, value: str = "metric_delta") -> go.Figure:
    layers, labels, z = heatmap_matrix(df, value)
    scale = "RdBu" if value == "metric_delta" else ("Viridis" if value == "sqnr_db" else "Viridis_r")
    text = sensitivity_hover(layers, labels, z, value, str(df.attrs.get("metric_name", "metric")))
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=layers, colorscale=scale, zmid=0 if value == "metric_delta" else None,
                               colorbar={"title": SENSITIVITY_VALUES[value]}, text=text, hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title=f"Per-layer sensitivity: {SENSITIVITY_VALUES[value]}", yaxis={"autorange": "reversed", "title": SENSITIVITY_AXES["y"]},
                      xaxis={"title": SENSITIVITY_AXES["x"]}, height=max(320, 26 * len(layers) + 140))
    return fig


def write_sensitivity_report(df: pd.DataFrame) -> str:
    """Self-contained HTML: metric-change and SQNR heatmaps and the full table."""
    meta = df.attrs
    figs = [sensitivity_heatmap(df, "metric_delta"), sensitivity_heatmap(df, "sqnr_db")]
    parts = [f.to_html(full_html=False, include_plotlyjs=("inline" if i == 0 else False), config={"displaylogo": False}) for i, f in enumerate(figs)]
    mode = ", ".join(sorted(df["mode"].unique())) if len(df) else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>sensitivity: {html.escape(str(meta.get('task', '')))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}} .tbl{{border-collapse:collapse;font-size:12px}}
.tbl td,.tbl th{{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}}</style></head><body>
<h1>Per-layer sensitivity: {html.escape(str(meta.get('task', '')))}</h1>
<p>Mode {html.escape(mode)}; metric <code>{html.escape(str(meta.get('metric_name', '')))}</code>, float {meta.get('fp_metric', float('nan')):.4f};
{len(df)} rows ({meta.get('computed', 0)} computed, {meta.get('from_store', 0)} from the result store). Workbench {__version__}.</p>
{parts[0]}{parts[1]}<h2>All rows</h2>{_table(df.round(6))}</body></html>"""


# ------------------------------------------------------------------------------- search

class _Axes(Mapping):
    """Cost kind -> axis title, read from the cost-kind registry (``workbench.core.cost.COST_KINDS``)
    at each use, so a kind registered later is an axis too."""

    def __getitem__(self, name: str) -> str:
        kind = COST_KINDS[name]  # the title names its unit: "(unit)" added where the label has none
        return kind.label if not kind.unit or kind.unit in kind.label else f"{kind.label} ({kind.unit})"

    def __iter__(self):
        return iter(list(COST_KINDS))

    def __len__(self) -> int:
        return len(COST_KINDS)


AXES = _Axes()


def axis_options(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(title, cost kind) of each registered kind the points have a column of, aliases left out."""
    return [(AXES[k.name], k.name) for k in COST_KINDS.values() if k.name in df and not k.same_as]


def _check_axis(df: pd.DataFrame, axis: str) -> None:
    get_cost_kind(axis)  # one-line SpecError naming the known kinds
    if axis not in df:
        raise SpecError(f"axis {axis!r}: the points have no {axis} column; they have {', '.join(k for k in COST_KINDS if k in df)}")
KIND_STYLE = {"ilp": ("#4C78A8", "circle"), "greedy": ("#72B7B2", "diamond"), "uniform": ("#F58518", "square"),
              "random": ("#BBBBBB", "x"), "edited": ("#E45756", "star"), "pruned": ("#54A24B", "triangle-up"),
              "target": ("#B279A2", "hexagon"), "refined": ("#1F3B73", "circle-open"), "stored": ("#9D755D", "circle-dot")}


def kind_family(kind: str) -> str:
    if kind.startswith("uniform"):
        return "uniform"
    if kind.startswith("target-"):
        return "target"
    return kind.split("@")[0]


HOVER_WIDTH = 60  # characters per hover line: a hover is never wider than the chart


def _number(v) -> str:
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _cost_line(kind, v) -> str:
    """``packed weight: 3.25 KiB``: a cost with its name and unit."""
    label, unit = kind.label, kind.unit
    for tail in (f" ({unit})", f" {unit}"):
        if unit and label.endswith(tail) and len(label) > len(tail):
            label = label[: -len(tail)]
            break
    return f"{label}: {_number(v)}" + ("" if not unit or label == unit else f" {unit}")


def _wrap(items: list[str], width: int = HOVER_WIDTH, max_lines: int = 8) -> list[str]:
    """``items`` joined with ", " into lines of at most ``width`` characters (an item longer than
    that has a line of its own); past ``max_lines`` the rest is counted, not listed."""
    lines: list[str] = []
    for i, item in enumerate(items):
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
            continue
        if len(lines) == max_lines:
            lines[-1] += f", ... {len(items) - i} more"
            break
        lines.append(item)
    return lines


def bits_lines(bits, width: int = HOVER_WIDTH) -> list[str]:
    """Per-layer weight bits as short lines (``features.0 W8, features.3 W4``) of at most ``width``
    characters; ``bits`` is a dict or its JSON."""
    try:
        d = json.loads(bits) if isinstance(bits, str) else dict(bits)
    except (TypeError, ValueError):
        return _wrap([str(bits)[:width]], width)
    return _wrap([f"{layer} {'W' + str(b) if isinstance(b, int) else b}" for layer, b in d.items()], width)


def _hover(r, metric_name: str = "metric") -> str:
    """A point's hover: what each number is, with units, in lines of at most ~60 characters."""
    def num(v):
        return v is not None and not isinstance(v, str) and pd.notna(v)

    e, m = r.get("estimated_metric"), r.get("measured_metric")
    name = html.escape(str(metric_name))
    lines = [f"<b>{html.escape(str(r['kind']))}</b> (point {r.name})",
             f"measured {name}: {f'{m:.4f}' if num(m) else 'not measured'}"]
    if num(e):
        lines.append(f"estimated {name}: {e:.4f}")
    lines += [_cost_line(k, r[k.name]) for k in COST_KINDS.values() if not k.same_as and k.name in r and num(r[k.name])]
    if not (r.get("within_budgets", True) in (True, None) or pd.isna(r.get("within_budgets"))):
        lines += [html.escape(x) for x in textwrap.wrap(f"over budget: {r.get('over_budgets', '')}", HOVER_WIDTH)]
    if isinstance(r.get("pruning"), str) and r.get("pruning"):
        lines += [html.escape(x) for x in textwrap.wrap(f"pruning: {r['pruning']}", HOVER_WIDTH)]
    if "bits" in r:
        lines += ["weight bits per layer:"] + [html.escape(x) for x in bits_lines(r["bits"])]
    return "<br>".join(lines)


def pareto_traces(df: pd.DataFrame, axis: str = "weight_kib", metric_name: str = "metric") -> list:
    """Scatter traces per kind of candidate, the front recomputed on ``axis`` as a line
    (:func:`workbench.search.front.front_on`: switching axis draws that axis's own front), and the points
    with no value on ``axis`` (a latency not measured) as one more trace, "no <axis> value (n)",
    at the chart's left edge with hover text saying so (never on the front). Hovers name each
    number with its unit (``metric_name`` is the measured metric's name) and wrap at ~60 characters."""
    from ..search.front import front_on

    _check_axis(df, axis)
    traces = []
    x = pd.to_numeric(df[axis], errors="coerce")
    has = x.notna()
    fam = df["kind"].map(kind_family)
    for family in ("ilp", "greedy", "refined", "uniform", "target", "stored", "random", "pruned", "edited"):
        sub = df[(fam == family) & has]
        if sub.empty:
            continue
        color, symbol = KIND_STYLE[family]
        text = [_hover(r, metric_name) for _, r in sub.iterrows()]
        traces.append(go.Scatter(x=list(sub[axis]), y=list(sub["measured_metric"]), mode="markers", name=family,
                                 marker={"color": color, "symbol": symbol, "size": 10}, text=text, hoverinfo="text",
                                 customdata=list(sub.index)))
    missing = df[~has]
    if len(missing):
        left = float(x.min()) if has.any() else 0.0
        text = [f"no {AXES[axis]} value (not measured):<br>shown at the left edge<br>" + _hover(r, metric_name) for _, r in missing.iterrows()]
        traces.append(go.Scatter(x=[left] * len(missing), y=list(missing["measured_metric"]), mode="markers",
                                 name=f"no {axis} value ({len(missing)})", marker={"color": "#999999", "symbol": "line-ew-open", "size": 12},
                                 text=text, hoverinfo="text", customdata=list(missing.index)))
    front = df[front_on(df, axis)].sort_values(axis) if len(df) else df
    traces.append(go.Scatter(x=list(front[axis]), y=list(front["measured_metric"]), mode="lines", name="measured front",
                             line={"color": "#4C78A8", "dash": "dot"}, hoverinfo="skip"))
    return traces


def pareto_figure(df: pd.DataFrame, axis: str = "weight_kib", metric_name: str = "metric", budget: float | None = None,
                  chosen=None) -> go.Figure:
    """The measured points and front (:func:`pareto_traces`) on ``axis``. ``budget`` (a value on
    ``axis``) adds a labelled vertical line there and shades what is within it; ``chosen`` (an
    index label of ``df``) adds a labelled, highlighted marker trace ``chosen`` on that point."""
    _check_axis(df, axis)
    fig = go.Figure(pareto_traces(df, axis))
    unit = COST_KINDS[axis].unit
    if budget is not None:
        x = pd.to_numeric(df[axis], errors="coerce")
        left = float(x.min()) if x.notna().any() else float(budget)
        if left < budget:  # within the budget: shaded from the leftmost point
            fig.add_vrect(x0=left, x1=float(budget), fillcolor="#54A24B", opacity=0.08, line_width=0, layer="below")
        fig.add_vline(x=float(budget), line={"color": "#54A24B", "dash": "dash", "width": 2},
                      annotation_text=f"budget {budget:g} {unit}", annotation_position="top left")
    if chosen is not None:
        if chosen not in df.index:
            raise SpecError(f"chosen point {chosen!r} is not a row of the points; expected one of their index labels")
        r = df.loc[chosen]
        fig.add_scatter(x=[r[axis]], y=[r["measured_metric"]], mode="markers+text", name="chosen",
                        marker={"color": "rgba(0,0,0,0)", "size": 20, "line": {"color": "#E45756", "width": 3}, "symbol": "circle"},
                        text=[f"chosen: {float(r[axis]):.2f} {unit}, {float(r['measured_metric']):.4f}"], textposition="bottom center",
                        textfont={"color": "#E45756"}, hovertext=["chosen (promoted to a recipe)<br>" + _hover(r)], hoverinfo="text",
                        customdata=[chosen])
    fig.update_layout(title=f"Measured {metric_name} against {AXES[axis]}", xaxis_title=AXES[axis], yaxis_title=f"{metric_name} (measured)", height=420)
    return fig
