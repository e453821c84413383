"""FigureBox: figures nested in a widget reach the browser with the traces added before display."""

import plotly.graph_objects as go

from widgets.figure_box import FigureBox, sync_figures


def test_nested_figures_carry_their_traces_when_the_box_is_displayed():
    inner = go.FigureWidget()
    inner.add_scatter(x=[1, 2], y=[3, 4])  # before display: plotly keeps it out of the synced state
    box = FigureBox([FigureBox([inner])])
    assert inner._widget_data == []
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert [t["type"] for t in inner._widget_data] == ["scatter"] and inner._widget_data[0]["y"] == [3, 4]
    inner.layout.title.text = "t"
    assert sync_figures(box) == 1 and inner._widget_layout["title"]["text"] == "t"
