"""``Chart``: a plotly chart that stays live wherever widgets run (JupyterLab, Voila, VS Code).

plotly's ``FigureWidget`` (plotly 7: an anywidget whose 5 MB module is loaded once per figure)
drops updates in Voila 0.5: a figure drawn at load time never redraws afterwards, for some of
the figures on a page, differently on each load (measured: 1 to 2 of 4 figures frozen in 2 of 3
loads, while plain anywidgets and ipywidgets on the same page update every time). ``Chart`` keeps
a plain ``go.Figure`` on the Python side and syncs the whole figure as JSON (``spec``); the
browser redraws it with ``Plotly.react`` on every change. plotly.js (the copy inside the
installed plotly package, so the version always matches) travels once per kernel, in the state of
the first open chart, so a chart shown before a long cell draws and fills while the cell runs (a
page whose carrier chart was closed asks the kernel for it by message).

The Python API follows ``FigureWidget`` where the workbench uses it: ``data``, ``layout``,
``add_trace`` / ``add_bar`` / ``add_scatter``, ``batch_update()`` (one redraw at the end), and
``on_click(callback)``: ``callback(points)`` with one dict per clicked point
(``curve``, ``index``, ``x``, ``y``, ``z``, ``customdata``). ``click(curve, index)`` delivers the
same event from Python (what a click in the browser sends).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path

import anywidget
import plotly.graph_objects as go
import plotly.io as pio
import traitlets


@lru_cache(maxsize=1)
def plotly_source() -> str:
    """plotly.min.js of the installed plotly package (what the browser draws with)."""
    return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_text(encoding="utf-8")


_CARRIERS: weakref.WeakSet = weakref.WeakSet()  # the open charts whose state holds plotly.js


class Chart(anywidget.AnyWidget):
    _esm = Path(__file__).with_name("chart.js")
    spec = traitlets.Dict(help="the figure as plotly JSON: {'data': [...], 'layout': {...}}").tag(sync=True)
    _plotly_js = traitlets.Unicode("", help="plotly.js, carried by one open chart per kernel").tag(sync=True)

    def __init__(self, figure: go.Figure | dict | None = None, *, data=None, layout=None, **kwargs):
        """``Chart(figure)`` or ``Chart(data=..., layout=...)`` as ``go.Figure`` takes them."""
        self.fig = go.Figure(figure) if figure is not None else go.Figure(data=data, layout=layout)
        self._held = 0
        self._click_handlers: list[Callable[[list[dict]], None]] = []
        super().__init__(**kwargs)
        if not any(c.comm is not None for c in _CARRIERS):  # the page gets plotly.js with this chart's state
            self._plotly_js = plotly_source()
            _CARRIERS.add(self)
        self.on_msg(self._on_message)
        self.push()

    # ------------------------------------------------------------------ figure API
    @property
    def data(self):
        return self.fig.data

    @data.setter
    def data(self, traces) -> None:
        self.fig.data = traces
        self.push()

    @property
    def layout(self):
        return self.fig.layout

    def add_trace(self, trace, **kwargs):
        self.fig.add_trace(trace, **kwargs)
        self.push()
        return self

    def add_bar(self, **kwargs):
        return self.add_trace(go.Bar(**kwargs))

    def add_scatter(self, **kwargs):
        return self.add_trace(go.Scatter(**kwargs))

    def update_layout(self, **kwargs):
        self.fig.update_layout(**kwargs)
        self.push()
        return self

    @contextmanager
    def batch_update(self) -> Iterator[Chart]:
        """Edit ``data`` / ``layout`` freely inside; the browser redraws once, at the end."""
        self._held += 1
        try:
            yield self
        finally:
            self._held -= 1
            self.push()

    def push(self) -> None:
        """Send the figure as it is now to the browser (done by every edit outside ``batch_update``)."""
        if not self._held:
            self.spec = json.loads(pio.to_json(self.fig, validate=False))

    # ------------------------------------------------------------------ clicks
    def on_click(self, callback: Callable[[list[dict]], None], remove: bool = False) -> None:
        """Call ``callback(points)`` when a point is clicked in the browser."""
        if remove:
            self._click_handlers = [c for c in self._click_handlers if c is not callback]
        else:
            self._click_handlers.append(callback)

    def click(self, curve: int, index) -> None:
        """Deliver a click on point ``index`` of trace ``curve`` as the browser would."""
        trace = self.fig.data[curve]

        def at(values, i):
            if values is None:
                return None
            if isinstance(i, (list, tuple)):  # a heatmap cell: [row, column]
                row = values[i[0]]
                return row[i[1]] if isinstance(row, (list, tuple)) else row
            return values[i]

        i = list(index) if isinstance(index, (list, tuple)) else index
        if isinstance(i, list):  # heatmap: x is the column, y the row
            point = {"curve": curve, "index": i, "x": at(getattr(trace, "x", None), i[1]), "y": at(getattr(trace, "y", None), i[0]),
                     "z": at(getattr(trace, "z", None), i), "customdata": at(getattr(trace, "customdata", None), i)}
        else:
            point = {"curve": curve, "index": i, "x": at(getattr(trace, "x", None), i), "y": at(getattr(trace, "y", None), i),
                     "z": None, "customdata": at(getattr(trace, "customdata", None), i)}
        self._dispatch([point])

    def _dispatch(self, points: list[dict]) -> None:
        for callback in list(self._click_handlers):
            callback(points)

    def _on_message(self, _widget, content, _buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "need-plotly":
            self.send({"type": "plotly", "source": plotly_source()})
        elif kind == "click":
            self._dispatch(list(content.get("points") or []))
