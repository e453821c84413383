"""``TradeoffExplorer``: the measured trade-off of a search, a point's per-layer bits, what-if
edits estimated at once, real evaluation, and promotion to a recipe.

- a scatter of every evaluated configuration (metric against any cost kind the points have a
  column of: weight KiB, BOPs, MACs, latency, ... from the cost-kind registry; ``axis`` selects),
  the measured front recomputed on that axis (``workbench.search.front.front_on``), the points with no
  value on it (a latency not measured) at the left edge in a trace of their own, hover details;
  clicking a point selects it;
- the selected point's bits as a table of dropdowns; an edit re-estimates metric, error and
  cost from the sensitivity table alone (no model run);
- "Evaluate" builds, calibrates and measures the edited configuration and adds it to the chart;
- "Promote to recipe" writes it as a recipe file and shows its path and sha256.

The selected point wears a ring (trace "selected"). Evaluate and Promote run in a background
thread (:class:`widgets.background.Runner`: the button disabled with a running label, Cancel,
progress; an error is one line in the widget); ``evaluate()`` / ``promote()`` stay synchronous
for notebooks and scripts. A message about an earlier action (the recipe written) is cleared
when the selection or the bits change. A search result the chart cannot show in full (no points,
one point, no measured metric, columns missing) gives a readable message in the widget, never
an exception from the constructor.

Pruned-and-quantised points (``workbench.search.measuring.pruned_candidates`` joined with ``workbench.search.front.join_points``)
share the axes; selecting one shows its pruning, and its costs come from the pruned model (there
is no additive estimate for them: Evaluate measures), and promotion writes the pruning section too.
"""

from __future__ import annotations

import json
from pathlib import Path

import ipywidgets as W
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import traitlets

import workbench as wb
from workbench.core.cost import COST_KINDS, cost_table, layer_costs, load_target, totals
from workbench.infra.fileio import atomic_write_text, inside, sha256_file
from workbench.core.pruning import PruningSpec, prune
from workbench.runs.recipe import promote
from workbench.runs.report import AXES, axis_options, kind_family, pareto_traces
from workbench.search.measuring import measure
from workbench.search.problem import build_problem

from .background import Runner, message_html
from .bitwidth_table import labels_missing
from .chart import Chart

REQUIRED = ("kind", "bits", "measured_metric")  # what a row needs to be drawn and selected


def _nan(v):
    return float("nan") if v is None else v


class TradeoffExplorer(W.VBox):
    axis = traitlets.Unicode("weight_kib", help="x axis: " + ", ".join(AXES))
    selected = traitlets.Int(None, allow_none=True, help="row of ``points`` selected")
    bits = traitlets.Dict(help="per-layer weight bits being edited")
    estimated_metric = traitlets.Float(None, allow_none=True)
    estimated_error = traitlets.Float(None, allow_none=True)
    weight_kib = traitlets.Float(None, allow_none=True)
    bops = traitlets.Float(None, allow_none=True)
    measured_metric = traitlets.Float(None, allow_none=True)
    recipe_path = traitlets.Unicode("")
    recipe_sha256 = traitlets.Unicode("")
    status = traitlets.Unicode("")
    message = traitlets.Unicode("", help="what the widget cannot show of the points given (empty when it shows them all)")
    pruning = traitlets.Unicode("", help="pruning spec (JSON) of the selected point; empty when unpruned")

    def __init__(self, task, model, sens: pd.DataFrame, points: pd.DataFrame, out_dir: str | Path = "runs/recipes", **kwargs):
        super().__init__(**kwargs)
        self.task, self.model, self.sens = task, model, sens
        self.points = points.reset_index(drop=True).copy()
        self.out_dir = Path(out_dir)
        self.target_name = points.attrs.get("target", "cpu-int8-ort")
        self.act_bits = points.attrs.get("act_bits", 8)
        target = load_target(self.target_name)
        self.costs = layer_costs(model, task.example_input())
        self._pruned: dict[str, tuple] = {}  # pruning JSON -> (pruned model, its layer costs)
        bits = points.attrs.get("bits") or target.weight_bits  # a search on a target's cost table may sweep fewer widths
        self.problem = build_problem(sens, self.costs, list(bits), "weight_kib", self.act_bits)
        self._promoted = 0
        self._loading = self._edited = False
        self.message = self._check_points()

        options = axis_options(self.points) or [(AXES["weight_kib"], "weight_kib")]
        if self.axis not in [v for _, v in options]:
            self.axis = options[0][1]
        self.axis_dropdown = W.Dropdown(options=options, value=self.axis, description="x axis", layout=W.Layout(width="360px", max_width="100%"))
        traitlets.link((self.axis_dropdown, "value"), (self, "axis"))
        self.figure = Chart(layout=go.Layout(height=420, yaxis_title=f"{task.metric.name} (measured on the eval split)",
                                             xaxis_title=AXES[self.axis], margin=dict(l=60, r=10, t=30, b=50)))
        self.figure.on_click(self._on_click)
        self.note = W.HTML()  # under the chart: the bad-input message and the points with no value on the axis
        self.dropdowns = {layer: W.Dropdown(options=self.problem.bits, value=max(self.problem.bits), description=layer,
                                            style={"description_width": "140px"},
                                            layout=W.Layout(width="260px")) for layer in self.problem.layers}
        for d in self.dropdowns.values():
            d.observe(self._on_edit, "value")
        self.estimate_label = W.HTML()
        self.evaluate_button = W.Button(description="Evaluate", icon="play", button_style="primary", layout=W.Layout(width="auto"))
        self.promote_button = W.Button(description="Promote to recipe", icon="file", button_style="success", layout=W.Layout(width="auto"))
        self.runner = Runner(self.evaluate_button, running="Evaluating...", controls=(self.promote_button,))
        self.promote_runner = Runner(self.promote_button, running="Promoting...", controls=(self.evaluate_button,))
        self.evaluate_button.on_click(lambda _: self.runner.start(self._evaluate_work(self.runner.check), self._on_error, self._add_point))
        self.promote_button.on_click(lambda _: self._start_promote())
        self.progress = W.IntProgress(value=0, min=0, max=2, layout=W.Layout(width="160px"))
        self.result = W.HTML()
        self.observe(lambda _: self._draw(), "axis")
        wrap = {"flex_flow": "row wrap", "align_items": "center"}
        table = W.VBox(list(self.dropdowns.values()), layout=W.Layout(max_height="360px", overflow="auto", flex="0 0 280px"))
        side = W.VBox([self.estimate_label, W.HBox([self.evaluate_button, self.runner.cancel_button, self.progress], layout=W.Layout(**wrap)),
                       W.HBox([self.promote_button, self.promote_runner.cancel_button], layout=W.Layout(**wrap)), self.result],
                      layout=W.Layout(flex="1 1 300px", min_width="0"))
        self.children = [self.axis_dropdown, self.figure, self.note,
                         W.HBox([table, side], layout=W.Layout(flex_flow="row wrap", width="100%", max_width="100%"))]
        self._draw()
        first = self._first_selection()
        if first is None:
            self._estimate()
        else:
            try:
                self.select(first)
            except (wb.WorkbenchError, IndexError, KeyError, TypeError, ValueError) as exc:
                self.message = " ".join(filter(None, [self.message, f"point {first} cannot be selected: {exc}"]))
                self._estimate()
                self._draw_note()
        if labels_missing(task):
            self.result.value = message_html(labels_missing(task), "note")

    # ------------------------------------------------------------------ bad input
    def _check_points(self) -> str:
        """A readable line on what of ``points`` cannot be shown (empty when all can)."""
        n = len(self.points)
        missing = [c for c in REQUIRED if c not in self.points]
        if n == 0:
            self.points = pd.DataFrame({c: pd.Series(dtype=object) for c in self.points.columns.union(list(REQUIRED), sort=False)})
            return ("This search result has no points: nothing to plot. Search again with looser budgets "
                    "(workbench.search.precision.search), or set bits below and press Evaluate.")
        if missing:
            return (f"These points have no {', '.join(missing)} column: they are not a search result "
                    f"(workbench.search.precision.search returns one); the chart is empty.")
        metric = pd.to_numeric(self.points["measured_metric"], errors="coerce")
        if not np.isfinite(metric).any():
            return (f"None of the {n} points has a measured {self.task.metric.name} (all NaN: not measured, or the "
                    "measurement failed): the chart has nothing to place; select a point with .select(i) or press Evaluate.")
        if n == 1:
            return "This search result has one point only: there is no trade-off to show (search with more budgets for a front)."
        return ""

    def _first_selection(self) -> int | None:
        """The best measured point on the front (else overall, else the first row); None with no rows."""
        if not len(self.points) or any(c not in self.points for c in REQUIRED):
            return None
        metric = pd.to_numeric(self.points["measured_metric"], errors="coerce")
        if not metric.notna().any():
            return int(self.points.index[0])
        front = self.points["on_front"].fillna(False).astype(bool) if "on_front" in self.points else pd.Series(False, index=self.points.index)
        best = metric[front & metric.notna()]
        return int((best if len(best) else metric.dropna()).idxmax())

    # ------------------------------------------------------------------ chart
    def _drawable(self) -> bool:
        return len(self.points) > 0 and all(c in self.points for c in REQUIRED) and self.axis in self.points

    def _draw(self) -> None:
        with self.figure.batch_update():
            self.figure.data = []
            if self._drawable():
                traces = pareto_traces(self.points, self.axis, self.task.metric.name)
                drawn = [v for t in traces if t.mode == "markers" and not t.name.startswith("no ") for v in t.x]
                for trace in traces:
                    if trace.name.startswith("no "):  # just left of the drawn points (not hidden under the leftmost), titled with units
                        trace.name = f"no {AXES[self.axis]} value ({len(trace.x)})"
                        trace.x = [min(drawn) - 0.04 * (max(drawn) - min(drawn)) if drawn else 0.0] * len(trace.x)
                    self.figure.add_trace(trace)
            self.figure.add_trace(go.Scatter(x=[], y=[], mode="markers", name="selected", hoverinfo="skip", customdata=[],
                                             marker={"symbol": "circle-open", "size": 22, "color": "#111111", "line": {"width": 3}}))
            self.figure.layout.xaxis.title.text = AXES[self.axis]
            self._place_ring()
        self._draw_note()

    def _ring(self):
        return next(t for t in self.figure.data if t.name == "selected")

    def _place_ring(self) -> None:
        """Move the "selected" ring onto the selected point (the left edge when it has no value on the axis)."""
        ring = self._ring()
        i = self.selected
        if i is None or not self._drawable() or i not in self.points.index:
            ring.x, ring.y, ring.customdata = [], [], []
            return
        x = pd.to_numeric(self.points[self.axis], errors="coerce")
        xi = x.loc[i] if pd.notna(x.loc[i]) else next((t.x[0] for t in self.figure.data if t.name.startswith("no ") and len(t.x)), 0.0)
        ring.x, ring.y, ring.customdata = [float(xi)], [float(_nan(self.points.loc[i, "measured_metric"]))], [int(i)]

    def _draw_note(self) -> None:
        parts = [message_html(self.message, "error")] if self.message else []
        if self._drawable():
            missing = self.points[pd.to_numeric(self.points[self.axis], errors="coerce").isna()]
            if len(missing):
                kinds = missing["kind"].map(kind_family).value_counts()
                listed = ", ".join(f"{k} x{n}" for k, n in kinds.items())
                parts.append(message_html(f"{len(missing)} of {len(self.points)} points have no {AXES[self.axis]} value "
                                          f"(not measured: {listed}); they are drawn at the left edge, never on the front.", "note"))
        self.note.value = "<br>".join(parts)

    def _on_click(self, points: list[dict]) -> None:
        for p in points:
            trace = self.figure.data[p["curve"]] if p.get("curve") is not None and p["curve"] < len(self.figure.data) else None
            if trace is not None and trace.mode == "markers" and p.get("customdata") is not None:
                self.select(int(p["customdata"] if not isinstance(p["customdata"], list) else p["customdata"][0]))
                return

    # ------------------------------------------------------------------ selection and edits
    def select(self, index: int) -> None:
        """Select row ``index`` of ``points``: its bits fill the table, the ring moves onto it."""
        if index not in self.points.index:
            raise IndexError(f"no point {index}; there are {len(self.points)}")
        bits = json.loads(self.points.loc[index, "bits"])
        self.selected, self._edited = index, False
        self._loading = True
        try:
            for layer, d in self.dropdowns.items():
                if layer in bits:
                    d.value = bits[layer]
        finally:
            self._loading = False
        self.pruning = str(self.points.loc[index, "pruning"]) if "pruning" in self.points and pd.notna(self.points.loc[index, "pruning"]) else ""
        m = pd.to_numeric(pd.Series([self.points.loc[index, "measured_metric"]]), errors="coerce").iloc[0]
        self.measured_metric = None if pd.isna(m) else float(m)
        self.result.value = ""  # a message about another point (the recipe written) is not about this one
        self._estimate()
        with self.figure.batch_update():
            self._place_ring()

    def set_bits(self, layer: str, bits: int) -> None:
        if layer not in self.dropdowns:
            raise wb.infra.SpecError(f"no layer {layer!r} in the search; layers are {', '.join(self.dropdowns)}")
        if bits not in self.problem.bits:
            raise wb.infra.SpecError(f"{layer}: {bits} bits is not allowed by target {self.target_name}; it allows {self.problem.bits}")
        self.dropdowns[layer].value = bits

    def _on_edit(self, change) -> None:
        if self._loading:
            return
        self.measured_metric, self._edited = None, True
        self.status = "edited: estimate only, press Evaluate to measure"
        self.result.value = ""  # the recipe written was of the bits before this edit
        self._estimate()

    def _model_and_costs(self, pruning: str | None = None):
        """The float model the point starts from (pruned when it is) and its layer costs."""
        pruning = self.pruning if pruning is None else pruning
        if not pruning:
            return self.model, self.costs
        if pruning not in self._pruned:
            pruned = prune(self.task, self.model, json.loads(pruning))
            self._pruned[pruning] = (pruned, layer_costs(pruned, self.task.example_input()))
        return self._pruned[pruning]

    def _estimate(self) -> None:
        """Estimated metric, error and costs of the table's bits: numpy sums, no model run.
        Pruned points have costs (of the pruned model) but no additive estimate."""
        self.bits = {layer: d.value for layer, d in self.dropdowns.items()}
        if self.pruning:
            self.estimated_metric = self.estimated_error = None
        else:
            choice = [self.problem.bits.index(self.bits[layer]) for layer in self.problem.layers]
            self.estimated_metric = self.problem.estimate(choice)
            self.estimated_error = -self.problem.score(choice)
        tot = totals(cost_table(self._model_and_costs()[1], self.bits, self.act_bits))
        self._cost_values = {k: tot[k] for k in COST_KINDS if k in tot}
        self.weight_kib, self.bops = tot["weight_kib"], float(tot["bops"])
        name = self.task.metric.name
        measured = "not measured" if self.measured_metric is None else f"{self.measured_metric:.4f}"
        estimate = ("no estimate (pruned: " + PruningSpec.parse(json.loads(self.pruning)).label + ")" if self.pruning
                    else f"{self.estimated_metric:.4f} (estimated error {self.estimated_error:.4g})")
        point = f"point {self.selected}" if self.selected is not None and not self._edited else "edited bits (not a point yet)"
        self.estimate_label.value = (f"<b>{point}</b><br><b>estimated {name}</b> {estimate}<br><b>measured {name}</b> {measured}<br>"
                                     f"packed weights {self.weight_kib:,.2f} KiB, {self.bops:,.0f} BOPs")

    # ------------------------------------------------------------------ actions
    def _evaluate_work(self, check=lambda: None):
        """The work of one evaluation, on a snapshot of the table (a click elsewhere meanwhile does
        not change what is measured): a function returning the new point's row; ``check()`` raises
        after Cancel (a runner's)."""
        bits, pruning = dict(self.bits), self.pruning
        snapshot = {"kind": "edited", "budget": self.weight_kib, **self._cost_values, "weight_kib": self.weight_kib, "bops": self.bops,
                    "estimated_metric": _nan(self.estimated_metric), "estimated_error": _nan(self.estimated_error),
                    "bits": json.dumps(bits, sort_keys=True), "bound_by": "", "on_front": False, "pruning": pruning}
        self.progress.value = 0
        self.status = "evaluating"

        def work() -> dict:
            if labels_missing(self.task):
                raise wb.infra.TaskError(labels_missing(self.task))
            model = self._model_and_costs(pruning)[0]
            check()
            metric = measure(self.task, model, bits, self.act_bits, wb.PTQConfig())
            self.progress.value = 1
            check()
            return {**snapshot, "measured_metric": metric}

        return work

    def _add_point(self, row: dict) -> float:
        """Add an evaluated row to the chart and select it."""
        self.points = pd.concat([self.points, pd.DataFrame([row])], ignore_index=True) if len(self.points) else pd.DataFrame([row])
        if self.message and all(c in self.points for c in REQUIRED) and pd.to_numeric(self.points["measured_metric"], errors="coerce").notna().any():
            self.message = ""  # an evaluated point: the chart has something to show now
        options = axis_options(self.points)
        if options and options != list(self.axis_dropdown.options):  # an edited point may bring a cost kind the others lack
            axis = self.axis
            self.axis_dropdown.options = options
            self.axis_dropdown.value = axis if axis in [v for _, v in options] else options[0][1]
        self.status = "evaluated"
        self.select(len(self.points) - 1)
        self._draw()
        self.progress.value = 2
        return row["measured_metric"]

    def _on_error(self, message: str) -> None:
        self.status = f"error: {message}"
        self.progress.value = 0
        self.result.value = message_html(message, "error")

    def evaluate(self) -> float:
        """Build, calibrate and measure the table's bits; the point joins the chart as 'edited'
        and is selected. Synchronous (the Evaluate button runs the same in the background)."""
        try:
            row = self._evaluate_work()()
        except Exception:
            self.status, self.progress.value = "error", 0
            raise
        return self._add_point(row)

    def _start_promote(self) -> None:
        evaluate = self._evaluate_work(self.promote_runner.check) if self.measured_metric is None else None

        def work():
            row = evaluate() if evaluate is not None else None
            self.promote_runner.check()
            return row

        def done(row):
            if row is not None:
                self._add_point(row)
            self._write_recipe()

        self.promote_runner.start(work, self._on_error, done)

    def promote(self) -> Path:
        """Write the selected configuration as a recipe file (evaluating it first when it is not
        measured); show its path and sha256."""
        if self.measured_metric is None:
            self.evaluate()
        return self._write_recipe()

    def _write_recipe(self) -> Path:
        self._promoted += 1
        row = {"bits": json.dumps(self.bits, sort_keys=True), "measured_metric": self.measured_metric}
        recipe = promote(self.task, row, target=self.target_name, act_bits=self.act_bits, name=f"{self.task.name}-{self.weight_kib:.2f}kib",
                         pruning=json.loads(self.pruning) if self.pruning else None)
        path = atomic_write_text(inside(self.out_dir, f"{self.task.name}-recipe-{self._promoted}.yaml"), recipe.to_yaml())
        self.recipe_path, self.recipe_sha256 = str(path), sha256_file(path)
        point = "" if self.selected is None else f" (point {self.selected})"
        self.result.value = f"wrote <code>{self.recipe_path}</code>{point}<br>sha256 <code>{self.recipe_sha256[:16]}...</code>"
        self.status = "promoted"
        return path
