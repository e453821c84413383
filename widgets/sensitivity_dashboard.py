"""``SensitivityDashboard``: the layer x bit-width picture of a task, filled in as rows finish.

A plotly heatmap (layers in network order x settings) coloured by the selected value (metric
change, SQNR, MSE or KL), a progress bar with rows done / total and an ETA, and a detail panel for
the layer clicked: weight histogram with the quantisation grid, the input activation range, and
metric against bits. "Run sweep" runs in a background thread (:class:`~widgets.background.Runner`);
Cancel stops it once the layer being computed is finished (its rows are in the result store, and
the next run resumes from them). Input the sweep cannot run on (no layers, a classifier task
without labels) and sweeps with no finite value show one line in the widget instead of raising.
State is in traitlets (``value``, ``selected_layer``, ``rows_done``, ``status``).
"""

from __future__ import annotations

import math

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go
import traitlets

import workbench as wb
from workbench.analysis.layer_stats import folded_graph, layer_statistics, weight_histogram
from workbench.runs.report import SENSITIVITY_AXES, SENSITIVITY_VALUES, case_label, heatmap_matrix, sensitivity_hover
from workbench.analysis.sensitivity import SensitivityConfig, sensitivity

from .background import Runner, SweepWidget, message_html, one_line
from .chart import Chart

COLOURBAR = {"metric_delta": "metric change", "sqnr_db": "output SQNR (dB)", "output_mse": "output MSE", "kl": "KL to float (nats)"}


def eta_text(seconds: float) -> str:
    """``ETA ~40 s`` / ``ETA ~3 min`` for a progress label."""
    if not math.isfinite(seconds):
        return ""
    return f"ETA ~{seconds:.0f} s" if seconds < 90 else f"ETA ~{seconds / 60:.0f} min"


def act_name(bits, fmt=None) -> str:
    """Legend name of an activation setting: ``act float``, ``act 8 bits``, ``act fp8_e4m3``."""
    if isinstance(bits, str):
        return f"act {bits}"
    if bits is None or pd.isna(bits):
        return "act float"
    if isinstance(fmt, str) and fmt != "int":
        return f"act {fmt}"
    return f"act {int(bits)} bits"


def unlabelled_problem(task) -> str | None:
    """Why the task metric cannot be scored (:meth:`workbench.Task.missing_labels`), or None."""
    why = task.missing_labels()
    return f"{why}; give the task eval=(x, y)" if why else None


class SensitivityDashboard(SweepWidget, W.VBox):
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
        self._stats = None
        self._graph = None
        self.layers: list[str] = []
        self.problem = None  # one line saying why no sweep can run, or None
        try:
            self._graph = folded_graph(model)
            wanted = set(wb.core.quantisable_layers(model)) if self.config.layers is None else set(self.config.layers)
            self.layers = [n.target for n in self._graph.graph.nodes if n.op == "call_module" and n.target in wanted]
            self.problem = unlabelled_problem(task)
        except Exception as exc:  # shown in the widget: a constructor that raises leaves a traceback in the output area
            self.problem = f"cannot read the model's layers: {one_line(exc)}"
        if self.problem is None and not self.layers:
            self.problem = ("nothing to sweep: the model has no quantisable layer (Linear, Conv, ...)" if self.config.layers is None
                            else "nothing to sweep: none of config.layers is a quantisable layer of the model")
        self.labels = [case_label(w, a) for w, a in self.config.cases()]
        self.total = len(self.layers) * len(self.labels)
        self.higher_is_better = getattr(task.metric, "higher_is_better", True)

        self.value_dropdown = W.Dropdown(options=[(v, k) for k, v in SENSITIVITY_VALUES.items()], value=self.value, description="colour by",
                                         layout=W.Layout(width="auto"))
        traitlets.link((self.value_dropdown, "value"), (self, "value"))
        self.run_button = W.Button(description="Run sweep", button_style="primary", icon="play", disabled=self.problem is not None)
        self.runner = Runner(self.run_button)
        self.run_button.on_click(lambda _: self.start())
        self.progress = W.IntProgress(value=0, min=0, max=max(1, self.total), layout=W.Layout(width="200px"))
        self.progress_label = W.Label(f"0/{self.total} rows")
        self.message = W.HTML(message_html(self.problem) if self.problem else "")
        self.heatmap = Chart(
            data=[go.Heatmap(z=[[None] * len(self.labels) for _ in self.layers], x=self.labels, y=self.layers, colorscale="RdBu", zmid=0,
                             text=self._hover([[None] * len(self.labels) for _ in self.layers]), hovertemplate="%{text}<extra></extra>",
                             colorbar={"title": {"text": COLOURBAR[self.value]}})],
            layout=go.Layout(title="Per-layer sensitivity (click a layer)", height=max(320, 26 * len(self.layers) + 160),
                             xaxis={"title": {"text": SENSITIVITY_AXES["x"]}, "type": "category"},
                             yaxis={"title": {"text": SENSITIVITY_AXES["y"]}, "autorange": "reversed", "type": "category"},
                             margin=dict(l=120, r=20, t=50, b=60)),
        )
        self.heatmap.on_click(self._on_click)
        self.histogram = Chart(layout=go.Layout(title="weights and quantisation grid", height=320, margin=dict(l=55, r=10, t=40, b=45),
                                                xaxis={"title": {"text": "weight value"}}, yaxis={"title": {"text": "count (weights)"}},
                                                legend={"orientation": "h", "y": -0.25}))
        metric_axis = f"{task.metric.name} ({'higher' if self.higher_is_better else 'lower'} is better)"
        self.curve = Chart(layout=go.Layout(title="metric against bits", height=320, margin=dict(l=55, r=10, t=40, b=45),
                                            xaxis={"title": {"text": "weight bits"}, "dtick": 1}, yaxis={"title": {"text": metric_axis}},
                                            legend={"orientation": "h", "y": -0.25}))
        self.detail_text = W.HTML()
        self.detail_note = W.HTML()
        self.detail = W.VBox([self.detail_text, self.detail_note, W.Box([W.Box([c], layout=W.Layout(width="50%", min_width="320px")) for c in (self.histogram, self.curve)],
                                   layout=W.Layout(flex_flow="row wrap", width="100%"))],
                             layout=W.Layout(display="none", width="100%"))
        self.observe(self._recolour, "value")
        controls = W.Box([self.value_dropdown, self.run_button, self.runner.cancel_button, self.progress, self.progress_label],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.children = [controls, self.message, self.heatmap, self.detail]
        self.layout.max_width = "100%"

    # -------------------------------------------------------------- sweep
    def start(self):
        """What "Run sweep" does: :meth:`run` in a background thread, with Cancel."""
        if self.problem is not None:
            self.message.value = message_html(self.problem)
            return None
        return self.runner.start(self._run_cancellable, on_error=self._failed)

    def run(self) -> pd.DataFrame:
        """Run (or load from the store) the sweep, filling the heatmap row by row (synchronous)."""
        if self.problem is not None:
            raise wb.infra.TaskError(self.problem)
        self._begin()
        self.results = sensitivity(self.task, self.model, self.config, store=self.store, progress=False, on_row=self._on_row)
        self.status = f"done: {self.results.attrs['computed']} computed, {self.results.attrs['from_store']} from the store"
        self.progress_label.value = f"{self.rows_done}/{self.total} rows; {self.status}"
        self._check_finite()
        self.layer_stats()
        return self.results

    def _begin(self) -> None:
        self._rows = []
        self._per_layer: dict[str, int] = {}
        self.rows_done = 0
        self.progress.value = 0
        self.status = "running"
        self.message.value = ""
        self.progress_label.value = f"0/{self.total} rows"
        self._recolour()  # no cell of an earlier run survives into this one
        if self.selected_layer is not None:
            self.detail_note.value = message_html(f"curve from the previous run (stale): redrawn as this run's rows of {self.selected_layer} arrive",
                                                  "stale")

    def _on_row(self, row: dict) -> None:
        self._rows.append(row)
        layer = row["layer"]
        self._per_layer[layer] = self._per_layer.get(layer, 0) + 1
        n = self.rows_done + 1
        self.progress.value = min(n, self.progress.max)
        secs = [float(r["seconds"]) for r in self._rows if isinstance(r.get("seconds"), (int, float))]
        eta = eta_text(sum(secs) / len(secs) * (self.total - n)) if secs and n < self.total else ""
        self.progress_label.value = f"{n}/{self.total} rows" + (f", {eta}" if eta else "")
        self.rows_done = n
        self._recolour()
        if layer == self.selected_layer:
            self._draw_curve(layer)
        if self._per_layer[layer] >= len(self.labels):  # a layer is finished (all its rows stored): Cancel may stop here
            self.runner.check()

    def _frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows) if self._rows else pd.DataFrame(columns=["layer", "depth", "weight_bits", "act_bits", "status", self.value])

    def _hover(self, z) -> list[list[str]]:
        text = sensitivity_hover(self.layers, self.labels, z, self.value, self.task.metric.name)
        status = {(r["layer"], case_label(r["weight_bits"], r["act_bits"], r.get("weight_format"), r.get("act_format"))): r.get("status")
                  for r in self._rows}
        for i, layer in enumerate(self.layers):
            for j, lab in enumerate(self.labels):
                s = status.get((layer, lab))
                if s is None:
                    text[i][j] = f"{layer} at {lab}: not computed yet"
                elif s != "ok":
                    text[i][j] += f" (status {s})"
        return text

    def _recolour(self, *_):
        _, _, z = heatmap_matrix(self._frame(), self.value, self.layers, self.labels)
        with self.heatmap.batch_update():
            trace = self.heatmap.data[0]
            trace.z = z
            trace.text = self._hover(z)
            trace.colorscale = "RdBu" if self.value == "metric_delta" else ("Viridis" if self.value == "sqnr_db" else "Viridis_r")
            trace.zmid = 0 if self.value == "metric_delta" else None
            trace.colorbar.title.text = COLOURBAR[self.value] + (f" ({self.task.metric.name})" if self.value == "metric_delta" else "")
        if self.rows_done and self.status != "running":
            self._check_finite()

    def _check_finite(self) -> None:
        """A one-line note when the finished rows hold no finite value of the colour (all NaN)."""
        df = self._frame()
        if not len(df):
            self.message.value = message_html("the sweep returned no rows: nothing to show", "note")
            return
        values = pd.to_numeric(df[self.value], errors="coerce") if self.value in df else pd.Series(dtype=float)
        if not values.map(lambda v: math.isfinite(v) if pd.notna(v) else False).any():
            statuses = ", ".join(sorted(set(map(str, df.get("status", pd.Series(dtype=str))))))
            self.message.value = message_html(f"no finite {SENSITIVITY_VALUES[self.value]} in the {len(df)} rows (status: {statuses}); "
                                              "the metric or the outputs are NaN / inf: try another 'colour by' value", "note")
        elif self.message.value and "no finite" in self.message.value:
            self.message.value = ""

    # -------------------------------------------------------------- detail
    def _on_click(self, points: list[dict]) -> None:
        if points and points[0].get("y") in self.layers:
            self.select_layer(points[0]["y"])

    def _int_bits(self) -> list[int]:
        return [b for b in self.config.weight_bits if isinstance(b, int)] or [8]  # integer widths (format names are other columns)

    def layer_stats(self) -> pd.DataFrame:
        """Per-layer weight and activation statistics of the detail panel (one float pass, computed
        once: at the end of a run, so a click on the heatmap runs no model)."""
        if self._stats is None:
            self._stats = layer_statistics(self.task, self.model, bits=tuple(sorted(set(self._int_bits()))),
                                           granularity=self.config.base.weight_granularity, scale_type=self.config.base.scale_type).set_index("layer")
        return self._stats

    def select_layer(self, layer: str) -> None:
        """Open the detail panel of ``layer``."""
        if layer not in self.layers:
            raise wb.infra.SpecError(f"no quantisable layer {layer!r}; layers are {', '.join(self.layers)}")
        self.selected_layer = layer
        self.detail_note.value = ""
        bits = self._int_bits()
        hist = weight_histogram(self.model, layer, min(bits), self.config.base.weight_granularity, self.config.base.scale_type, graph=self._graph)
        stats = self.layer_stats().loc[layer]
        centers = [(a + b) / 2 for a, b in zip(hist["edges"][:-1], hist["edges"][1:])]
        with self.histogram.batch_update():
            self.histogram.data = []
            self.histogram.add_bar(x=centers, y=hist["counts"], name="weights", marker_color="#4C78A8",
                                   hovertemplate="weight value %{x:.4g}: %{y} weights<extra></extra>")
            self.histogram.add_scatter(x=hist["grid"], y=[0] * len(hist["grid"]), mode="markers", name=f"{hist['bits']}-bit grid",
                                       marker={"symbol": "line-ns-open", "size": 18, "color": "#E45756"},
                                       hovertemplate=f"{hist['bits']}-bit grid level at weight value %{{x:.4g}}<extra></extra>")
            self.histogram.layout.title.text = f"{layer}: weights and {hist['bits']}-bit grid"
        self._draw_curve(layer)
        errors = ", ".join(f"{b}-bit {stats[f'grid_error_b{b}']:.2e}" for b in sorted(set(bits)))
        self.detail_text.value = (f"<b>{layer}</b>: weights in [{stats['w_min']:.3g}, {stats['w_max']:.3g}], input activation in "
                                  f"[{stats['act_min']:.3g}, {stats['act_max']:.3g}]; relative weight-grid error {errors}")
        self.detail.layout.display = "flex"

    def _draw_curve(self, layer: str) -> None:
        df = self._frame()
        mine = df[df["layer"] == layer] if len(df) else df
        name = self.task.metric.name
        with self.curve.batch_update():
            self.curve.data = []
            self.curve.layout.title.text = f"{layer}: {name} against weight bits"
            if len(mine) and "weight_format" in mine:
                other = mine[mine["weight_format"].notna() & (mine["weight_format"] != "int")]
                for fmt, g in other.groupby("weight_format"):
                    self.curve.add_scatter(x=list(g["weight_bits"].astype(int)), y=list(g["metric"]), mode="markers", name=f"weights {fmt}",
                                           marker={"symbol": "diamond", "size": 10},
                                           hovertemplate=f"weights {fmt} (%{{x}} bits): {name} %{{y:.4f}}<extra></extra>")
                mine = mine[mine["weight_format"].isna() | (mine["weight_format"] == "int")]
            groups: dict[str, list] = {}
            for r in mine.itertuples():
                groups.setdefault(act_name(r.act_bits, getattr(r, "act_format", None)), []).append(r)
            for act, rs in groups.items():
                rs = sorted((r for r in rs if r.weight_bits is not None and pd.notna(r.weight_bits)), key=lambda r: r.weight_bits)
                self.curve.add_scatter(x=[int(r.weight_bits) for r in rs], y=[r.metric for r in rs], mode="lines+markers", name=act,
                                       hovertemplate=f"W%{{x}}, {act}: {name} %{{y:.4f}}<extra></extra>")
        if self._per_layer_done(layer) and "stale" in self.detail_note.value:
            self.detail_note.value = ""

    def _per_layer_done(self, layer: str) -> bool:
        return getattr(self, "_per_layer", {}).get(layer, 0) >= len(self.labels)
