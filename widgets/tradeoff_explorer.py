"""``TradeoffExplorer``: the measured trade-off of a search, a point's per-layer bits, what-if
edits estimated at once, real evaluation, and promotion to a recipe.

- a scatter of every evaluated configuration (metric against any cost kind the points have a
  column of: weight KiB, BOPs, MACs, latency, ... from the cost-kind registry; ``axis`` selects),
  the measured front recomputed on that axis (``workbench.search.front_on``), the points with no
  value on it (a latency not measured) at the left edge in a trace of their own, hover details;
  clicking a point selects it;
- the selected point's bits as a table of dropdowns; an edit re-estimates metric, error and
  cost from the sensitivity table alone (no model run);
- "Evaluate" builds, calibrates and measures the edited configuration and adds it to the chart;
- "Promote to recipe" writes it as a recipe file and shows its path and sha256.

Pruned-and-quantised points (``workbench.search.pruned_candidates`` joined with ``join_points``)
share the axes; selecting one shows its pruning, and its costs come from the pruned model (there
is no additive estimate for them: Evaluate measures), and promotion writes the pruning section too.
"""

from __future__ import annotations

import json
from pathlib import Path

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go
import traitlets

import workbench as wb
from workbench.cost import COST_KINDS, cost_table, layer_costs, load_target, totals
from workbench.fileio import atomic_write_text, inside, sha256_file
from workbench.pruning import PruningSpec, prune
from workbench.recipe import promote
from workbench.report import AXES, axis_options, pareto_traces
from workbench.search import build_problem, measure

from .chart import Chart


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

        self.axis_dropdown = W.Dropdown(options=axis_options(self.points), value=self.axis, description="x axis")
        traitlets.link((self.axis_dropdown, "value"), (self, "axis"))
        self.figure = Chart(layout=go.Layout(height=420, yaxis_title=f"{task.metric.name} (measured)", margin=dict(l=50, r=10, t=40, b=40)))
        self.figure.on_click(self._on_click)
        self._draw()
        self.dropdowns = {layer: W.Dropdown(options=self.problem.bits, description=layer, style={"description_width": "140px"},
                                            layout=W.Layout(width="260px")) for layer in self.problem.layers}
        for d in self.dropdowns.values():
            d.observe(self._on_edit, "value")
        self.estimate_label = W.HTML()
        self.evaluate_button = W.Button(description="Evaluate", icon="play", button_style="primary")
        self.evaluate_button.on_click(lambda _: self.evaluate())
        self.promote_button = W.Button(description="Promote to recipe", icon="file", button_style="success")
        self.promote_button.on_click(lambda _: self.promote())
        self.progress = W.IntProgress(value=0, min=0, max=2, layout=W.Layout(width="160px"))
        self.result = W.HTML()
        self.observe(lambda _: self._draw(), "axis")
        table = W.VBox(list(self.dropdowns.values()), layout=W.Layout(max_height="360px", overflow="auto"))
        self.children = [self.axis_dropdown, self.figure,
                         W.HBox([table, W.VBox([self.estimate_label, W.HBox([self.evaluate_button, self.progress]), self.promote_button, self.result])])]
        best = self.points[self.points.get("on_front", False)] if "on_front" in self.points else self.points
        self.select(int((best if len(best) else self.points)["measured_metric"].idxmax()))

    # ------------------------------------------------------------------ chart
    def _draw(self) -> None:
        with self.figure.batch_update():
            self.figure.data = []
            for trace in pareto_traces(self.points, self.axis):
                self.figure.add_trace(trace)
            self.figure.layout.xaxis.title.text = AXES[self.axis]

    def _on_click(self, points: list[dict]) -> None:
        for p in points:
            trace = self.figure.data[p["curve"]] if p.get("curve") is not None and p["curve"] < len(self.figure.data) else None
            if trace is not None and trace.mode == "markers" and p.get("customdata") is not None:
                self.select(int(p["customdata"] if not isinstance(p["customdata"], list) else p["customdata"][0]))
                return

    # ------------------------------------------------------------------ selection and edits
    def select(self, index: int) -> None:
        """Select row ``index`` of ``points``: its bits fill the table."""
        if index not in self.points.index:
            raise IndexError(f"no point {index}; there are {len(self.points)}")
        self.selected = index
        bits = json.loads(self.points.loc[index, "bits"])
        self._loading = True
        try:
            for layer, d in self.dropdowns.items():
                d.value = bits[layer]
        finally:
            self._loading = False
        self.pruning = str(self.points.loc[index, "pruning"]) if "pruning" in self.points and pd.notna(self.points.loc[index, "pruning"]) else ""
        self.measured_metric = float(self.points.loc[index, "measured_metric"])
        self._estimate()

    def set_bits(self, layer: str, bits: int) -> None:
        if layer not in self.dropdowns:
            raise wb.SpecError(f"no layer {layer!r} in the search; layers are {', '.join(self.dropdowns)}")
        if bits not in self.problem.bits:
            raise wb.SpecError(f"{layer}: {bits} bits is not allowed by target {self.target_name}; it allows {self.problem.bits}")
        self.dropdowns[layer].value = bits

    def _on_edit(self, change) -> None:
        if getattr(self, "_loading", False):
            return
        self.measured_metric = None
        self.status = "edited: estimate only, press Evaluate to measure"
        self._estimate()

    def _model_and_costs(self):
        """The float model the selected point starts from (pruned when it is) and its layer costs."""
        if not self.pruning:
            return self.model, self.costs
        if self.pruning not in self._pruned:
            pruned = prune(self.task, self.model, json.loads(self.pruning))
            self._pruned[self.pruning] = (pruned, layer_costs(pruned, self.task.example_input()))
        return self._pruned[self.pruning]

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
        measured = "not measured" if self.measured_metric is None else f"{self.measured_metric:.4f}"
        estimate = ("no estimate (pruned: " + PruningSpec.parse(json.loads(self.pruning)).label + ")" if self.pruning
                    else f"{self.estimated_metric:.4f} (error {self.estimated_error:.4g})")
        self.estimate_label.value = (f"<b>estimate</b> {estimate} &nbsp; "
                                     f"<b>measured</b> {measured}<br>{self.weight_kib:.2f} KiB, {self.bops:.3g} BOPs")

    # ------------------------------------------------------------------ actions
    def evaluate(self) -> float:
        """Build, calibrate and measure the table's bits; the point joins the chart as 'edited'."""
        self.progress.value = 0
        self.status = "evaluating"
        bits = dict(self.bits)
        metric = measure(self.task, self._model_and_costs()[0], bits, self.act_bits, wb.PTQConfig())
        self.progress.value = 1
        row = {"kind": "edited", "budget": self.weight_kib, **self._cost_values, "weight_kib": self.weight_kib, "bops": self.bops,
               "estimated_metric": _nan(self.estimated_metric), "estimated_error": _nan(self.estimated_error), "measured_metric": metric,
               "bits": json.dumps(bits, sort_keys=True), "bound_by": "", "on_front": False, "pruning": self.pruning}
        self.points = pd.concat([self.points, pd.DataFrame([row])], ignore_index=True)
        self._draw()
        self.selected = len(self.points) - 1
        self.measured_metric = metric
        self._estimate()
        self.progress.value = 2
        self.status = "evaluated"
        return metric

    def promote(self) -> Path:
        """Write the selected configuration as a recipe file; show its path and sha256."""
        if self.measured_metric is None:
            self.evaluate()
        self._promoted += 1
        row = {"bits": json.dumps(self.bits, sort_keys=True), "measured_metric": self.measured_metric}
        recipe = promote(self.task, row, target=self.target_name, act_bits=self.act_bits, name=f"{self.task.name}-{self.weight_kib:.2f}kib",
                         pruning=json.loads(self.pruning) if self.pruning else None)
        path = atomic_write_text(inside(self.out_dir, f"{self.task.name}-recipe-{self._promoted}.yaml"), recipe.to_yaml())
        self.recipe_path, self.recipe_sha256 = str(path), sha256_file(path)
        self.result.value = f"wrote <code>{self.recipe_path}</code><br>sha256 <code>{self.recipe_sha256[:16]}...</code>"
        self.status = "promoted"
        return path
