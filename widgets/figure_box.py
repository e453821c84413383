"""``FigureBox``: the container every workbench widget with plotly charts is built on.

plotly (6 and 7) refreshes a ``FigureWidget``'s synced data and layout only when that figure is
displayed on its own; nested in a container, the traces added before the container is shown (in
a widget's constructor, or in the cells Voila runs before it renders anything) never reach the
browser, which draws empty axes. ``FigureBox`` hands every figure inside it its current data and
layout whenever the box is displayed.
"""

from __future__ import annotations

from copy import deepcopy

import ipywidgets as W
import plotly.graph_objects as go


def sync_figures(widget: W.Widget) -> int:
    """Copy each nested FigureWidget's current data and layout into its synced state; returns how many."""
    count = 0
    if isinstance(widget, go.FigureWidget):
        widget._widget_layout = deepcopy(widget._layout_obj._props)
        widget._widget_data = deepcopy(widget._data)
        return 1
    for child in getattr(widget, "children", ()):
        count += sync_figures(child)
    return count


class FigureBox(W.VBox):
    def _repr_mimebundle_(self, **kwargs):
        sync_figures(self)
        return super()._repr_mimebundle_(**kwargs)
