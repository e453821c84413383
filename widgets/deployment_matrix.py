"""``DeploymentMatrix``: every deployment target and runtime side by side.

Takes a deployment table (columns :data:`workbench.export.exporters.DEPLOYMENT_COLUMNS`: one row per
target and runtime, as ``Target.evaluate`` and ``deployment.csv`` give them) and shows:

- the table as HTML, rows whose ``agreement`` with the simulation is below ``tolerance`` in red
  (rows without an agreement, compile-only targets, are not marked);
- a bar chart, one bar per row (``target @ runtime``), of the column the dropdown picks among the
  numeric columns that hold a value (file_bytes, ram_bytes, latency_ms_p99, agreement, ...); the
  same rows in red.

``table`` holds the DataFrame shown; :meth:`update` replaces it. State is in traitlets
(``column``, ``tolerance``, ``flagged``: the labels of the rows below tolerance).
"""

from __future__ import annotations

import html
import math

import ipywidgets as W
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import traitlets

from workbench.infra.errors import SpecError
from workbench.export.exporters import DEPLOYMENT_COLUMNS

from .chart import Chart

OK, BAD = "#4C78A8", "#E45756"
# what each charted column is, with its unit (axis title and hover)
COLUMN_TITLES = {
    "file_bytes": "file size (bytes)", "flash_bytes": "flash (bytes)", "ram_bytes": "RAM (bytes)",
    "peak_act_estimate_bytes": "peak activation estimate (bytes)", "ram_vs_estimate": "RAM / estimate (ratio)",
    "latency_ms_p50": "latency p50 (ms)", "latency_ms_p99": "latency p99 (ms)", "latency_ms_max": "latency max (ms)",
    "jitter": "jitter (p99 / p50 latency, ratio)", "cycles": "cycles (count)", "agreement": "agreement with the simulation (fraction)",
    "max_lsb_diff": "max difference (LSB)", "metric": "task metric", "samples": "samples (count)", "npu_ops": "NPU operators (count)",
    "cpu_ops": "CPU operators (count)",
}


def column_title(col: str | None, metric_name: str | None = None) -> str:
    """Axis title of a charted column: what it is and its unit."""
    if col is None:
        return ""
    if col == "metric" and metric_name:
        return f"task metric ({metric_name})"
    return COLUMN_TITLES.get(col, col)


PREFERRED = ("file_bytes", "ram_bytes", "latency_ms_p50", "latency_ms_p99", "latency_ms_max", "jitter", "cycles", "agreement",
             "max_lsb_diff", "metric", "peak_act_estimate_bytes", "npu_ops", "cpu_ops")


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "<span style='color:#999'>n/a</span>"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1000 else f"{float(v):.4g}"
    return html.escape(str(v))


class DeploymentMatrix(W.VBox):
    column = traitlets.Unicode("file_bytes", allow_none=True, help="the column charted (None: no numeric column)")
    tolerance = traitlets.Float(0.99, help="rows whose agreement is below this are flagged")
    flagged = traitlets.List(traitlets.Unicode(), help="labels (target @ runtime) of the rows below tolerance")

    def __init__(self, table: pd.DataFrame, column: str = "file_bytes", tolerance: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.table = self._check(table)
        self.tolerance = float(tolerance)
        self.html = W.HTML()
        self.dropdown = W.Dropdown(options=self.numeric_columns(), description="chart")
        self.dropdown.value = self._pick(column)
        self.column = self.dropdown.value
        self.figure = Chart(layout=go.Layout(height=360, margin=dict(l=60, r=10, t=50, b=110), showlegend=False,
                                                       xaxis={"type": "category", "title": "target @ runtime"}))
        traitlets.link((self.dropdown, "value"), (self, "column"))
        self.observe(lambda _: self._draw_chart(), "column")
        self.observe(lambda _: self._refresh(), "tolerance")
        self.children = [self.html, self.dropdown, self.figure]
        self.layout.max_width = "100%"
        self._refresh()

    # -------------------------------------------------------------- data
    @staticmethod
    def _check(table) -> pd.DataFrame:
        if not isinstance(table, pd.DataFrame):
            raise SpecError(f"deployment table of type {type(table).__name__}; expected a DataFrame with the columns {', '.join(DEPLOYMENT_COLUMNS)}")
        lacking = [c for c in ("target", "runtime") if c not in table.columns]
        if lacking:
            raise SpecError(f"deployment table without column(s) {', '.join(lacking)}; expected the columns {', '.join(DEPLOYMENT_COLUMNS)}")
        return table.reset_index(drop=True).copy()

    def labels(self) -> list[str]:
        """``target @ runtime`` of each row (the target alone where the runtime is empty)."""
        return [f"{t} @ {r}" if isinstance(r, str) and r else str(t) for t, r in zip(self.table["target"], self.table["runtime"])]

    def numeric_columns(self) -> list[str]:
        """Columns that can be charted: numeric, with at least one value; known ones first."""
        cols = []
        for c in self.table.columns:
            v = pd.to_numeric(self.table[c], errors="coerce") if self.table[c].dtype == object else self.table[c]
            if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v) and v.notna().any():
                cols.append(c)
        return sorted(cols, key=lambda c: (PREFERRED.index(c) if c in PREFERRED else len(PREFERRED), c))

    def _pick(self, column: str) -> str | None:
        options = list(self.dropdown.options)
        if column in options:
            return column
        return options[0] if options else None

    def below_tolerance(self) -> np.ndarray:
        """True for each row whose agreement is below ``tolerance`` (NaN agreement: False)."""
        if "agreement" not in self.table:
            return np.zeros(len(self.table), dtype=bool)
        a = pd.to_numeric(self.table["agreement"], errors="coerce")
        return (a < self.tolerance).fillna(False).to_numpy(dtype=bool)

    def update(self, table: pd.DataFrame) -> None:
        """Show another deployment table; the charted column stays where the new table has it."""
        self.table = self._check(table)
        current = self.column
        self.dropdown.options = self.numeric_columns()
        self.dropdown.value = self._pick(current)
        self._refresh()

    # -------------------------------------------------------------- drawing
    def _refresh(self) -> None:
        bad = self.below_tolerance()
        self.flagged = [lab for lab, b in zip(self.labels(), bad) if b]
        self._draw_table(bad)
        self._draw_chart()

    def _draw_table(self, bad: np.ndarray) -> None:
        cols = [c for c in DEPLOYMENT_COLUMNS if c in self.table] + [c for c in self.table if c not in DEPLOYMENT_COLUMNS]
        head = "".join(f"<th style='padding:2px 6px'>{html.escape(str(c))}</th>" for c in cols)
        body = []
        for k, row in self.table.iterrows():
            style = " style='background:#fde0dd' class='below-tolerance'" if bad[k] else ""
            cells = "".join(f"<td style='padding:2px 6px'>{_cell(row[c])}</td>" for c in cols)
            body.append(f"<tr{style}>{cells}</tr>")
        note = (f"<div style='color:{BAD}'>{len(self.flagged)} row(s) agree with the simulation below {self.tolerance:g}: "
                f"{html.escape(', '.join(self.flagged))}</div>" if self.flagged else "")
        self.html.value = (f"<div style='overflow-x:auto'><table class='deployment-matrix' style='border-collapse:collapse;font-size:12px'>"
                           f"<tr>{head}</tr>{''.join(body)}</table></div>{note}")

    def _draw_chart(self) -> None:
        bad = self.below_tolerance()
        col = self.column
        with self.figure.batch_update():
            self.figure.data = []
            if col and col in self.table:
                y = pd.to_numeric(self.table[col], errors="coerce").astype(float)
                title = column_title(col, self.table.attrs.get("metric_name"))
                flag = [f"<br>agreement below {self.tolerance:g}" if b else "" for b in bad]
                self.figure.add_bar(x=self.labels(), y=[None if math.isnan(v) else float(v) for v in y],
                                    marker={"color": [BAD if b else OK for b in bad]}, name=col, customdata=flag,
                                    hovertemplate="%{x}<br>" + title + ": %{y:,.4~g}%{customdata}<extra></extra>")
            self.figure.layout.title = f"{column_title(col) or 'nothing to chart'} per target and runtime"
            self.figure.layout.yaxis.title = column_title(col, self.table.attrs.get("metric_name"))
