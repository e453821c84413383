"""``SensitivityDashboard``: the layer x bit-width picture of a task, filled in as rows finish.

A plotly heatmap (layers in network order x settings) coloured by the selected value (metric
change, SQNR, MSE or KL), a progress bar, and a detail panel for the layer clicked: weight
histogram with the quantisation grid, the input activation range, and metric against bits.
State is in traitlets (``value``, ``selected_layer``, ``rows_done``, ``status``).
"""

from __future__ import annotations

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go
import traitlets

import workbench as wb
from workbench.layer_stats import folded_graph, layer_statistics, weight_histogram
from workbench.report import SENSITIVITY_VALUES, case_label, heatmap_matrix
from workbench.sensitivity import SensitivityConfig, sensitivity

from .chart import Chart


class SensitivityDashboard(W.VBox):
    value = traitlets.Unicode("metric_delta", help="what colours the heatmap: " + ", ".join(SENSITIVITY_VALUES))
    selected_layer = traitlets.Unicode(None, allow_none=True)
    rows_done = traitlets.Int(0)
    status = traitlets.Unicode("")

    def __init__(self, task, model, config: SensitivityConfig | None = None, store=None, **kwargs):
        super().__init__(**kwargs)
        self.task, self.model = task, model
        self.config = config or SensitivityConfig()
        self.store = store
        self.results: pd.DataFrame | None = None
        self._rows: list[dict] = []
        self._graph = folded_graph(model)
        self.layers = [n.target for n in self._graph.graph.nodes if n.op == "call_module" and n.target in wb.quantisable_layers(model)]
        self.labels = [case_label(w, a) for w, a in self.config.cases()]
        self._stats = None

        self.value_dropdown = W.Dropdown(options=[(v, k) for k, v in SENSITIVITY_VALUES.items()], value=self.value, description="colour by")
        traitlets.link((self.value_dropdown, "value"), (self, "value"))
        self.run_button = W.Button(description="Run sweep", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.run())
        self.progress = W.IntProgress(value=0, min=0, max=len(self.layers) * len(self.labels), layout=W.Layout(width="260px"))
        self.progress_label = W.Label("")
        self.heatmap = Chart(
            data=[go.Heatmap(z=[[None] * len(self.labels) for _ in self.layers], x=self.labels, y=self.layers, colorscale="RdBu", zmid=0,
                             hovertemplate="%{y} at %{x}: %{z:.4g}<extra></extra>")],
            layout=go.Layout(title="Per-layer sensitivity (click a layer)", yaxis={"autorange": "reversed"},
                             height=max(320, 26 * len(self.layers) + 140), margin=dict(l=120, r=20, t=50, b=40)),
        )
        self.heatmap.on_click(self._on_click)
        self.histogram = Chart(layout=go.Layout(title="weights and quantisation grid", height=300, margin=dict(l=40, r=10, t=40, b=30)))
        self.curve = Chart(layout=go.Layout(title="metric against bits", height=300, margin=dict(l=40, r=10, t=40, b=30),
                                                      xaxis={"title": "weight bits"}, yaxis={"title": task.metric.name}))
        self.detail_text = W.HTML()
        self.detail = W.VBox([self.detail_text, W.HBox([self.histogram, self.curve])], layout=W.Layout(display="none"))
        self.observe(self._recolour, "value")
        self.children = [W.HBox([self.value_dropdown, self.run_button, self.progress, self.progress_label]), self.heatmap, self.detail]

    # -------------------------------------------------------------- sweep
    def run(self) -> pd.DataFrame:
        """Run (or load from the store) the sweep, filling the heatmap row by row."""
        self._rows = []
        self.rows_done = 0
        self.progress.value = 0
        self.status = "running"
        self.results = sensitivity(self.task, self.model, self.config, store=self.store, progress=False, on_row=self._on_row)
        self.status = f"done: {self.results.attrs['computed']} computed, {self.results.attrs['from_store']} from the store"
        self.progress_label.value = self.status
        return self.results

    def _on_row(self, row: dict) -> None:
        self._rows.append(row)
        self.rows_done += 1
        self.progress.value = self.rows_done
        self.progress_label.value = f"{self.rows_done}/{self.progress.max}"
        self._recolour()

    def _frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows) if self._rows else pd.DataFrame(columns=["layer", "depth", "weight_bits", "act_bits", self.value])

    def _recolour(self, *_):
        _, _, z = heatmap_matrix(self._frame(), self.value, self.layers, self.labels)
        with self.heatmap.batch_update():
            trace = self.heatmap.data[0]
            trace.z = z
            trace.colorscale = "RdBu" if self.value == "metric_delta" else ("Viridis" if self.value == "sqnr_db" else "Viridis_r")
            trace.zmid = 0 if self.value == "metric_delta" else None
            trace.colorbar.title.text = SENSITIVITY_VALUES[self.value]

    # -------------------------------------------------------------- detail
    def _on_click(self, points: list[dict]) -> None:
        if points and points[0].get("y") in self.layers:
            self.select_layer(points[0]["y"])

    def select_layer(self, layer: str) -> None:
        """Open the detail panel of ``layer``."""
        if layer not in self.layers:
            raise wb.SpecError(f"no quantisable layer {layer!r}; layers are {', '.join(self.layers)}")
        self.selected_layer = layer
        bits = [b for b in self.config.weight_bits if isinstance(b, int)] or [8]  # integer widths (format names are other columns)
        hist = weight_histogram(self.model, layer, min(bits), self.config.base.weight_granularity, self.config.base.scale_type, graph=self._graph)
        if self._stats is None:
            self._stats = layer_statistics(self.task, self.model, bits=tuple(sorted(set(bits))),
                                           granularity=self.config.base.weight_granularity, scale_type=self.config.base.scale_type).set_index("layer")
        stats = self._stats.loc[layer]
        centers = [(a + b) / 2 for a, b in zip(hist["edges"][:-1], hist["edges"][1:])]
        with self.histogram.batch_update():
            self.histogram.data = []
            self.histogram.add_bar(x=centers, y=hist["counts"], name="weights", marker_color="#4C78A8")
            self.histogram.add_scatter(x=hist["grid"], y=[0] * len(hist["grid"]), mode="markers", name=f"{hist['bits']}-bit grid",
                                       marker={"symbol": "line-ns-open", "size": 18, "color": "#E45756"})
            self.histogram.layout.title.text = f"{layer}: weights and {hist['bits']}-bit grid"
        df = self._frame()
        mine = df[df["layer"] == layer] if len(df) else df
        with self.curve.batch_update():
            self.curve.data = []
            if len(mine) and "weight_format" in mine:
                other = mine[mine["weight_format"].notna() & (mine["weight_format"] != "int")]
                for fmt, g in other.groupby("weight_format"):
                    self.curve.add_scatter(x=list(g["weight_bits"].astype(int)), y=list(g["metric"]), mode="markers", name=f"weights {fmt}",
                                           marker={"symbol": "diamond", "size": 10})
                mine = mine[mine["weight_format"].isna() | (mine["weight_format"] == "int")]
            for a, group in (mine.groupby(mine["act_bits"].astype(str), dropna=False) if len(mine) else []):
                g = group.dropna(subset=["weight_bits"]).sort_values("weight_bits")
                self.curve.add_scatter(x=list(g["weight_bits"].astype(int)), y=list(g["metric"]), mode="lines+markers",
                                       name="act float" if a in ("None", "<NA>", "nan") else f"act {a} bits")
        errors = ", ".join(f"{b}-bit {stats[f'grid_error_b{b}']:.2e}" for b in sorted(set(bits)))
        self.detail_text.value = (f"<b>{layer}</b>: weights in [{stats['w_min']:.3g}, {stats['w_max']:.3g}], input activation in "
                                  f"[{stats['act_min']:.3g}, {stats['act_max']:.3g}]; relative weight-grid error {errors}")
        self.detail.layout.display = "flex"
