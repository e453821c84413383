"""``DivergenceView``: where a deployment target parts from the simulation, layer by layer.

Takes the table of :func:`workbench.analysis.divergence` (one row per quantised layer, in the order the
forward pass runs them) and shows:

- SQNR (dB) of the target's tensor against the simulation's, one bar per layer, with the
  threshold as a horizontal dashed line; bars below it are red, layers the target does not expose
  are grey stubs marked "missing", exact matches (inf dB) are drawn at the top of the axis and
  labelled "exact";
- a threshold slider that recomputes ``over_threshold`` / ``first``
  (:func:`workbench.analysis.divergence.apply_threshold`);
- a layer dropdown that jumps to the first layer over the threshold whenever the threshold
  changes (it stays free to pick any other layer), the picked layer outlined and annotated in the
  chart, and one HTML line naming it with its SQNR, cosine and largest difference.

State is in traitlets (``threshold_db``, ``layer``, ``first_layer``); the recomputed table is
``table``.
"""

from __future__ import annotations

import math

import ipywidgets as W
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import traitlets

from workbench.analysis.divergence import DIVERGENCE_COLUMNS, apply_threshold
from workbench.infra.errors import SpecError

from .chart import Chart

OK, OVER, MISSING = "#4C78A8", "#E45756", "#BBBBBB"


def _num(v, fmt: str, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "exact" if v > 0 else "-inf"
    return f"{v:{fmt}}{unit}"


class DivergenceView(W.VBox):
    threshold_db = traitlets.Float(30.0, help="SQNR (dB) under which a layer counts as diverged")
    layer = traitlets.Unicode(None, allow_none=True, help="layer shown in the detail line (set to the first one over the threshold)")
    first_layer = traitlets.Unicode(None, allow_none=True, help="first layer, in order, whose SQNR is under the threshold")

    def __init__(self, table: pd.DataFrame, threshold_db: float | None = None, **kwargs):
        super().__init__(**kwargs)
        missing_cols = [c for c in ("layer", "sqnr_db") if c not in table.columns]
        if missing_cols:
            raise SpecError(f"divergence table without column(s) {', '.join(missing_cols)}; expected the table of workbench.analysis.divergence "
                            f"({', '.join(DIVERGENCE_COLUMNS)})")
        self.target = table.attrs.get("target", "target")
        threshold_db = table.attrs.get("threshold_db", 30.0) if threshold_db is None else threshold_db
        self._source = table.reset_index(drop=True)
        self.table = apply_threshold(self._fill(self._source), threshold_db)
        sqnr = self.table["sqnr_db"].astype(float)
        finite = sqnr[np.isfinite(sqnr)]
        top = max(60.0, float(threshold_db) + 20.0, float(finite.max()) + 10.0 if len(finite) else 0.0)
        self._top = math.ceil(top / 10.0) * 10.0

        self.slider = W.FloatSlider(value=float(threshold_db), min=0.0, max=self._top, step=0.5, description="threshold dB",
                                    continuous_update=False, readout_format=".1f", layout=W.Layout(width="420px", max_width="100%"))
        self.dropdown = W.Dropdown(options=list(self.table["layer"]), value=None, description="layer")
        self.figure = Chart(layout=go.Layout(
            title=f"SQNR of {self.target} against the simulation, per layer", height=380, margin=dict(l=50, r=10, t=50, b=90),
            xaxis={"title": {"text": "layer (execution order)"}, "type": "category"},
            yaxis={"title": {"text": f"SQNR of {self.target} against the simulation (dB)"}, "range": [0, self._top * 1.05]},
            showlegend=False))
        self.detail = W.HTML()
        self.threshold_db = float(threshold_db)  # before the links, so the first draw sees it
        traitlets.link((self.slider, "value"), (self, "threshold_db"))
        traitlets.link((self.dropdown, "value"), (self, "layer"))
        self.observe(self._on_threshold, "threshold_db")
        self.observe(lambda _: self._draw(), "layer")
        self.children = [W.Box([self.slider, self.dropdown], layout=W.Layout(flex_flow="row wrap")), self.figure, self.detail]
        self.layout.max_width = "100%"
        self._on_threshold()

    @staticmethod
    def _fill(table: pd.DataFrame) -> pd.DataFrame:
        """The columns the view reads, NaN where a hand-made table lacks them."""
        out = (table.sort_values("order", kind="stable") if "order" in table else table).reset_index(drop=True)
        out.attrs = dict(table.attrs)
        for col in ("cosine", "max_abs_diff", "max_lsb_diff"):
            if col not in out:
                out[col] = np.nan
        if "missing" not in out:
            out["missing"] = out["sqnr_db"].isna()
        return out

    # -------------------------------------------------------------- state
    def _on_threshold(self, *_):
        self.table = apply_threshold(self.table, self.threshold_db)
        self.first_layer = self.table.attrs["first_layer"]
        if self.first_layer is not None:
            self.layer = self.first_layer  # jump; a later pick in the dropdown stays until the threshold moves
        else:
            self.layer = None
        self._draw()

    def update(self, table: pd.DataFrame) -> None:
        """Show another divergence table (the threshold stays)."""
        self._source = table.reset_index(drop=True)
        self.target = table.attrs.get("target", self.target)
        self.table = apply_threshold(self._fill(self._source), self.threshold_db)
        self.dropdown.options = list(self.table["layer"])
        self._on_threshold()

    def row(self, layer: str | None = None) -> pd.Series | None:
        """The table's row of ``layer`` (default: the selected one), or None."""
        layer = self.layer if layer is None else layer
        if layer is None:
            return None
        hit = self.table[self.table["layer"] == layer]
        return None if hit.empty else hit.iloc[0]

    # -------------------------------------------------------------- drawing
    def _draw(self) -> None:
        t = self.table
        sqnr = t["sqnr_db"].astype(float).to_numpy()
        missing = t["missing"].astype(bool).to_numpy()
        shown = np.where(np.isnan(sqnr), self._top * 0.03, np.clip(sqnr, 0.0, self._top))
        shown = np.where(np.isneginf(sqnr), self._top * 0.03, shown)
        colours = [MISSING if m else (OVER if o else OK) for m, o in zip(missing, t["over_threshold"])]
        widths = [3 if name == self.layer else 0 for name in t["layer"]]
        labels = ["missing" if m else _num(float(s), ".1f") for m, s in zip(missing, sqnr)]
        hover = [(f"{r.layer}: not exposed by {self.target}" if m else
                  f"{r.layer}<br>SQNR {_num(float(r.sqnr_db), '.2f', ' dB')} ({self.target} against the simulation)"
                  f"<br>cosine similarity {_num(float(r.cosine), '.6f')} (1 = same direction)"
                  f"<br>max |diff| {_num(float(r.max_abs_diff), '.4g')} (tensor units; {_num(float(r.max_lsb_diff), '.3g')} LSB)")
                 for r, m in zip(t.itertuples(), missing)]
        annotations = []
        sel = self.row()
        if sel is not None:
            k = int(np.flatnonzero(t["layer"].to_numpy() == self.layer)[0])
            what = "first over threshold" if self.layer == self.first_layer else "selected"
            annotations.append(dict(x=self.layer, y=float(shown[k]), text=f"{self.layer}: {what}", showarrow=True, arrowhead=2, ay=-40,
                                    font={"color": OVER if bool(sel["over_threshold"]) else "#333333"}))
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_bar(x=list(t["layer"]), y=[float(v) for v in shown], text=labels, textposition="outside",
                                marker={"color": colours, "line": {"color": "#222222", "width": widths}},
                                hovertext=hover, hoverinfo="text", name="SQNR")
            self.figure.layout.shapes = [dict(type="line", xref="paper", x0=0, x1=1, yref="y", y0=self.threshold_db, y1=self.threshold_db,
                                              line={"color": OVER, "dash": "dash", "width": 2})]
            self.figure.layout.annotations = annotations
            self.figure.layout.yaxis.title.text = f"SQNR of {self.target} against the simulation (dB)"  # update() may bring another target
        self._describe(sel)

    def _describe(self, sel) -> None:
        if sel is None:
            n = int((~self.table["missing"].astype(bool)).sum())
            self.detail.value = (f"<span style='color:#2a7'>no layer under {self.threshold_db:.1f} dB</span>: "
                                 f"{self.target} follows the simulation on all {n} layers it exposes")
            return
        head = (f"<b style='color:{OVER}'>first layer under {self.threshold_db:.1f} dB: {sel['layer']}</b>" if sel["layer"] == self.first_layer
                else f"<b>{sel['layer']}</b>")
        if bool(sel["missing"]):
            self.detail.value = f"{head}: not exposed by {self.target}"
            return
        lsb = "" if pd.isna(sel["max_lsb_diff"]) else f" ({_num(float(sel['max_lsb_diff']), '.3g')} LSB)"
        note = f"; {sel['note']}" if isinstance(sel.get("note"), str) and sel.get("note") else ""
        self.detail.value = (f"{head}: SQNR {_num(float(sel['sqnr_db']), '.2f', ' dB')}, cosine {_num(float(sel['cosine']), '.6f')}, "
                             f"max |diff| {_num(float(sel['max_abs_diff']), '.4g')}{lsb}{note}")
