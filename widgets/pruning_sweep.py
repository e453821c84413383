"""``PruningSweep``: metric against sparsity, per layer and for the whole model, and what a global
level really saves.

- "Run sweep" runs (or loads from the store) :func:`workbench.pruning_sweep`, with a progress bar;
  the chart fills as rows finish: one thin curve per layer (only that layer pruned) and a thick
  one for the global sweep, all starting at the unpruned model (sparsity 0);
- a slider over the global levels shows that level's metric, parameters, MACs, ONNX bytes and
  onnxruntime latency beside the unpruned model's, and marks it on the chart.

State is in traitlets (``level``, ``rows_done``, ``status``); results are ``results`` (a DataFrame).
"""

from __future__ import annotations

import math

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go
import traitlets

from workbench.pruning_sweep import PruningSweepConfig, pruning_sweep

from .chart import Chart


def _fmt(v, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and not float(v).is_integer():
        return f"{v:.4g}{unit}"
    return f"{int(v):,}{unit}"


class PruningSweep(W.VBox):
    level = traitlets.Float(0.0, help="global sparsity shown by the slider")
    rows_done = traitlets.Int(0)
    status = traitlets.Unicode("")

    def __init__(self, task, model, config: PruningSweepConfig | None = None, store=None, **kwargs):
        super().__init__(**kwargs)
        self.task, self.model = task, model
        self.config = config or PruningSweepConfig()
        self.store = store
        self.results: pd.DataFrame | None = None
        self._rows: list[dict] = []
        levels = self.config.global_levels()

        self.run_button = W.Button(description="Run sweep", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.run())
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="260px"))
        self.progress_label = W.Label("")
        self.slider = W.SelectionSlider(options=[(f"{s:g}", s) for s in levels], value=levels[0], description="global level",
                                        continuous_update=False, disabled=not self.config.global_sweep)
        traitlets.link((self.slider, "value"), (self, "level"))
        self.figure = Chart(layout=go.Layout(
            title=f"{task.metric.name} against sparsity ({self.config.method}, {self.config.criterion})", height=420,
            xaxis={"title": "sparsity (share of channels or weights removed)"}, yaxis={"title": task.metric.name},
            margin=dict(l=50, r=10, t=50, b=40)))
        self.level_table = W.HTML()
        self.observe(lambda _: self._show_level(), "level")
        self.children = [W.HBox([self.run_button, self.progress, self.progress_label]), self.figure, self.slider, self.level_table]
        self._show_level()

    # -------------------------------------------------------------- sweep
    def run(self) -> pd.DataFrame:
        """Run (or load from the store) the sweep, drawing curves as rows finish."""
        self._rows = []
        self.rows_done = 0
        self.progress.value = 0
        self.progress.max = 1
        self.status = "running"
        self.results = pruning_sweep(self.task, self.model, self.config, store=self.store, progress=False, on_row=self._on_row)
        self.progress.max = max(1, len(self.results))
        self.progress.value = len(self.results)
        self.status = f"done: {self.results.attrs['computed']} computed, {self.results.attrs['from_store']} from the store"
        self.progress_label.value = self.status
        self._redraw()
        self._show_level()
        return self.results

    def _on_row(self, row: dict) -> None:
        self._rows.append(row)
        self.rows_done += 1
        self.progress.max = max(self.progress.max, self.rows_done)
        self.progress.value = self.rows_done
        self.progress_label.value = f"{self.rows_done} rows"
        self._redraw()

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows) if self._rows else pd.DataFrame(columns=["layer", "sparsity", "metric", "status"])

    def _reference(self, df: pd.DataFrame):
        ref = df[(df["layer"] == "global") & (df["sparsity"] == 0)]
        return None if ref.empty else ref.iloc[0]

    def _redraw(self) -> None:
        df = self.frame()
        ok = df[df["status"] == "ok"] if len(df) else df
        ref = self._reference(df)
        with self.figure.batch_update():
            self.figure.data = []
            for layer in [n for n in dict.fromkeys(ok["layer"]) if n != "global"]:
                g = ok[ok["layer"] == layer].sort_values("sparsity")
                xs, ys = list(g["sparsity"]), list(g["metric"])
                if ref is not None:
                    xs, ys = [0.0] + xs, [float(ref["metric"])] + ys
                self.figure.add_scatter(x=xs, y=ys, mode="lines+markers", name=layer, line={"width": 1}, marker={"size": 5},
                                        hovertemplate=f"{layer}<br>sparsity %{{x}}<br>{self.task.metric.name} %{{y:.4f}}<extra></extra>")
            g = ok[ok["layer"] == "global"].sort_values("sparsity")
            if len(g):
                self.figure.add_scatter(x=list(g["sparsity"]), y=list(g["metric"]), mode="lines+markers", name="global",
                                        line={"width": 4, "color": "black"}, marker={"size": 9})
            sel = g[g["sparsity"] == self.level]
            if len(sel):
                self.figure.add_scatter(x=[self.level], y=[float(sel.iloc[0]["metric"])], mode="markers", name=f"level {self.level:g}",
                                        marker={"size": 16, "symbol": "circle-open", "color": "#E45756", "line": {"width": 3}})

    def level_row(self) -> pd.Series | None:
        """The global row at the slider's level, or None before the sweep has it."""
        df = self.frame()
        if not len(df):
            return None
        hit = df[(df["layer"] == "global") & (df["sparsity"] == self.level)]
        return None if hit.empty else hit.iloc[0]

    def _show_level(self) -> None:
        row, ref = self.level_row(), self._reference(self.frame())
        if row is None or ref is None:
            self.level_table.value = f"<i>global level {self.level:g}: run the sweep</i>"
            return
        lines = []
        for col, unit in (("metric", ""), ("params", ""), ("macs", ""), ("onnx_bytes", " B"), ("latency_ms", " ms")):
            v, r = row[col], ref[col]
            ratio = f"{v / r:.2f}x" if isinstance(v, (int, float)) and isinstance(r, (int, float)) and r and not math.isnan(v) else ""
            lines.append(f"<tr><td>{col}</td><td>{_fmt(v, unit)}</td><td>{_fmt(r, unit)}</td><td>{ratio}</td></tr>")
        self.level_table.value = (f"<b>global {self.config.method} sparsity {self.level:g}</b> ({row['status']})"
                                  "<table><tr><th></th><th>pruned</th><th>unpruned</th><th>ratio</th></tr>" + "".join(lines) + "</table>")
        self._redraw()
