"""``PruningSweep``: metric against sparsity, per layer and for the whole model, and what a global
level really saves.

- "Run sweep" runs (or loads from the store) :func:`workbench.analysis.pruning_sweep` in a background
  thread (:class:`~widgets.background.Runner`: the button says "Running...", Cancel stops between
  rows, finished rows stay in the result store and the next run resumes from them), with a
  progress bar of rows done / total and an ETA; the chart fills as rows finish: one thin curve per
  layer (only that layer pruned) and a thick one for the global sweep, all starting at the
  unpruned model (sparsity 0);
- a slider over the global levels shows that level's metric, parameters, MACs, ONNX bytes and
  onnxruntime latency beside the unpruned model's, and marks it on the chart.

Input the sweep cannot run on (nothing to prune, a classifier task without labels) and sweeps with
no finite metric show one line in the widget instead of raising. State is in traitlets
(``level``, ``rows_done``, ``status``); results are ``results`` (a DataFrame).
"""

from __future__ import annotations

import math
from numbers import Real as numbers_Real

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go
import traitlets

from workbench.infra.errors import TaskError
from workbench.core.pruning import channel_groups, prunable_layers
from workbench.analysis.pruning_sweep import PruningSweepConfig, pruning_sweep

from .background import Runner, SweepWidget, message_html, one_line
from .chart import Chart
from .sensitivity_dashboard import eta_text, unlabelled_problem

UNITS = {"metric": "", "params": " parameters", "macs": " MACs", "onnx_bytes": " B", "latency_ms": " ms"}


def _fmt(v, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and not float(v).is_integer():
        return f"{v:.4g}{unit}"
    return f"{int(v):,}{unit}"


class PruningSweep(SweepWidget, W.VBox):
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
        self.total: int | None = None  # rows the sweep will have (known once counted, at the first run)
        levels = self.config.global_levels()
        self.problem = unlabelled_problem(task)
        if self.problem is None and not self.config.global_sweep:
            try:
                if not prunable_layers(model, None if self.config.layers is None else list(self.config.layers)):
                    self.problem = "nothing to sweep: the model has no prunable layer (Conv, Linear) and global_sweep is off"
            except Exception as exc:  # shown in the widget, never a traceback from the constructor
                self.problem = one_line(exc)
        self.metric_name = task.metric.name
        self.higher_is_better = getattr(task.metric, "higher_is_better", True)
        self.what = "channels removed" if self.config.method == "structured" else "weights set to zero"
        self.x_title = f"sparsity (fraction of {self.what})"

        self.run_button = W.Button(description="Run sweep", button_style="primary", icon="play", disabled=self.problem is not None)
        self.runner = Runner(self.run_button)
        self.run_button.on_click(lambda _: self.start())
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="200px"))
        self.progress_label = W.Label("")
        self.message = W.HTML(message_html(self.problem) if self.problem else "")
        self.slider = W.SelectionSlider(options=[(f"{s:g}", s) for s in levels], value=levels[0], description="global level",
                                        continuous_update=False, disabled=not self.config.global_sweep)
        traitlets.link((self.slider, "value"), (self, "level"))
        self.figure = Chart(layout=go.Layout(
            title=f"{task.metric.name} against sparsity ({self.config.method}, {self.config.criterion})", height=420,
            xaxis={"title": {"text": self.x_title}}, yaxis={"title": {"text": f"{task.metric.name} ({'higher' if self.higher_is_better else 'lower'} is better)"}},
            margin=dict(l=60, r=10, t=50, b=50)))
        self.level_table = W.HTML()
        self.observe(lambda _: self._show_level(), "level")
        controls = W.Box([self.run_button, self.runner.cancel_button, self.progress, self.progress_label],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.children = [controls, self.message, self.figure, self.slider, self.level_table]
        self._show_level()

    # -------------------------------------------------------------- sweep
    def start(self):
        """What "Run sweep" does: :meth:`run` in a background thread, with Cancel."""
        if self.problem is not None:
            self.message.value = message_html(self.problem)
            return None
        return self.runner.start(self._run_cancellable, on_error=self._failed)

    def run(self) -> pd.DataFrame:
        """Run (or load from the store) the sweep, drawing curves as rows finish (synchronous)."""
        if self.problem is not None:
            raise TaskError(self.problem)
        self._rows = []
        self.rows_done = 0
        self.progress.value = 0
        self.status = "running"
        self.message.value = ""
        self._redraw()  # no curve of an earlier run survives into this one
        self._show_level()
        if self.total is None:
            self.total = self.expected_rows()
        self.progress.max = max(1, self.total)
        self.progress_label.value = f"0/{self.total} rows"
        self.results = pruning_sweep(self.task, self.model, self.config, store=self.store, progress=False, on_row=self._on_row)
        self.total = len(self.results)
        self.progress.max = max(1, len(self.results))
        self.progress.value = len(self.results)
        self.status = f"done: {self.results.attrs['computed']} computed, {self.results.attrs['from_store']} from the store"
        self.progress_label.value = f"{self.rows_done}/{self.total} rows; {self.status}"
        self._redraw()
        self._show_level()
        self._check_rows()
        return self.results

    def expected_rows(self) -> int:
        """How many rows the sweep has: each prunable layer (one per channel group when structured)
        times the sparsities, plus the global levels."""
        n = len(self.config.global_levels()) if self.config.global_sweep else 0
        if self.config.per_layer:
            names = list(prunable_layers(self.model, None if self.config.layers is None else list(self.config.layers)))
            if self.config.method == "structured" and names:
                groups = channel_groups(self.model, self.task.example_input()).set_index("layer")
                names = list({tuple(sorted(groups.loc[name, "group"].split(", "))) for name in names})  # one row set per group
            n += len(names) * len(self.config.sparsities)
        return n

    def _after_cancel(self) -> None:
        self._show_level()

    def _on_row(self, row: dict) -> None:
        self._rows.append(row)
        self.rows_done += 1
        total = max(self.total or 0, self.rows_done)
        self.progress.max = max(1, total)
        self.progress.value = self.rows_done
        secs = [float(r["seconds"]) for r in self._rows if isinstance(r.get("seconds"), (int, float))]
        eta = eta_text(sum(secs) / len(secs) * (total - self.rows_done)) if secs and self.rows_done < total else ""
        self.progress_label.value = f"{self.rows_done}/{total} rows" + (f", {eta}" if eta else "")
        self._redraw()
        self.runner.check()  # every row is stored before it is reported: Cancel stops here

    def _check_rows(self) -> None:
        df = self.frame()
        if not len(df):
            self.message.value = message_html("the sweep returned no rows: nothing to prune with this configuration", "note")
            return
        finite = pd.to_numeric(df["metric"], errors="coerce").map(lambda v: pd.notna(v) and math.isfinite(v))
        if not finite.any():
            statuses = ", ".join(sorted(set(map(str, df["status"]))))[:200]
            self.message.value = message_html(f"no finite {self.metric_name} in the {len(df)} rows (status: {statuses}): nothing to draw", "note")

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows) if self._rows else pd.DataFrame(columns=["layer", "sparsity", "metric", "status"])

    def _reference(self, df: pd.DataFrame):
        ref = df[(df["layer"] == "global") & (df["sparsity"] == 0)]
        return None if ref.empty else ref.iloc[0]

    def _hover(self, who: str, r) -> str:
        delta = r.get("metric_delta") if hasattr(r, "get") else None
        change = "" if delta is None or pd.isna(delta) else f" (change {float(delta):+.4f})"
        extra = ""
        if who == "whole model (global)" and "params" in r:
            extra = (f"<br>{_fmt(r['params'], ' parameters')}, {_fmt(r.get('onnx_bytes'), ' B ONNX')}, "
                     f"{_fmt(r.get('latency_ms'), ' ms latency')}")
        s = float(r["sparsity"])
        return f"{who}<br>sparsity {s:g} ({s:.0%} of {self.what})<br>{self.metric_name} {_fmt(r['metric'])}{change}{extra}"

    def _redraw(self) -> None:
        df = self.frame()
        ok = df[df["status"] == "ok"] if len(df) else df
        ref = self._reference(df)
        with self.figure.batch_update():
            self.figure.data = []
            for layer in [n for n in dict.fromkeys(ok["layer"]) if n != "global"]:
                g = ok[ok["layer"] == layer].sort_values("sparsity")
                rows = [r for _, r in g.iterrows()]
                if ref is not None:
                    rows = [ref] + rows
                self.figure.add_scatter(x=[float(r["sparsity"]) for r in rows], y=[float(r["metric"]) for r in rows], mode="lines+markers",
                                        name=layer, line={"width": 1}, marker={"size": 5},
                                        hovertext=[self._hover(f"{layer} pruned alone" if r["layer"] != "global" else "unpruned model", r) for r in rows],
                                        hoverinfo="text")
            g = ok[ok["layer"] == "global"].sort_values("sparsity")
            if len(g):
                self.figure.add_scatter(x=list(g["sparsity"]), y=list(g["metric"]), mode="lines+markers", name="global",
                                        line={"width": 4, "color": "black"}, marker={"size": 9},
                                        hovertext=[self._hover("whole model (global)", r) for _, r in g.iterrows()], hoverinfo="text")
            sel = g[g["sparsity"] == self.level]
            if len(sel):
                self.figure.add_scatter(x=[self.level], y=[float(sel.iloc[0]["metric"])], mode="markers", name=f"level {self.level:g}",
                                        marker={"size": 16, "symbol": "circle-open", "color": "#E45756", "line": {"width": 3}},
                                        hovertext=[f"selected global level<br>{self._hover('whole model (global)', sel.iloc[0])}"], hoverinfo="text")

    def level_row(self) -> pd.Series | None:
        """The global row at the slider's level, or None before the sweep has it."""
        df = self.frame()
        if not len(df):
            return None
        hit = df[(df["layer"] == "global") & (df["sparsity"] == self.level)]
        return None if hit.empty else hit.iloc[0]

    def _show_level(self) -> None:
        row, ref = self.level_row(), self._reference(self.frame())
        self._redraw()  # the marker follows the slider on every change
        if row is None or ref is None:
            when = "cancelled before it" if self.status.startswith("cancelled") else ("not reached yet" if self.status == "running" else "run the sweep")
            self.level_table.value = f"<i>global level {self.level:g}: {when}</i>"
            return
        lines = []
        for col, unit in UNITS.items():
            v, r = row[col], ref[col]
            numbers = isinstance(v, numbers_Real) and isinstance(r, numbers_Real) and not isinstance(v, bool)  # numpy ints and floats too
            ratio = f"{float(v) / float(r):.2f}x" if numbers and r and math.isfinite(float(v)) and math.isfinite(float(r)) else ""
            lines.append(f"<tr><td>{col}</td><td>{_fmt(v, unit)}</td><td>{_fmt(r, unit)}</td><td>{ratio}</td></tr>")
        self.level_table.value = (f"<b>global {self.config.method} sparsity {self.level:g}</b> ({row['status']})"
                                  "<table><tr><th></th><th>pruned</th><th>unpruned</th><th>ratio</th></tr>" + "".join(lines) + "</table>")
