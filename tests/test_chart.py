"""Chart: the plotly figure the browser draws is the figure's JSON, resent whole on every edit;
clicks come back as point dicts; plotly.js is served from the installed plotly package."""

import json

import plotly.graph_objects as go
import plotly.io as pio

from widgets.chart import Chart, plotly_source


def test_every_edit_reaches_the_synced_spec():
    chart = Chart(layout=dict(title="t"))
    assert chart.spec["data"] == [] and chart.spec["layout"]["title"]["text"] == "t"
    chart.add_scatter(x=[1, 2], y=[3, 4], name="a")
    assert chart.spec["data"][0]["y"] == [3, 4]
    seen = []
    chart.observe(lambda ch: seen.append(len(ch["new"]["data"])), "spec")
    with chart.batch_update():  # one redraw for the whole batch
        chart.data = []
        chart.add_bar(x=["p"], y=[1])
        chart.add_bar(x=["q"], y=[2])
        chart.layout.xaxis.title.text = "layer"
    assert seen == [2]
    assert chart.spec == json.loads(pio.to_json(chart.fig, validate=False))
    assert chart.spec["layout"]["xaxis"]["title"]["text"] == "layer"


def test_clicks_reach_the_handlers_as_the_browser_sends_them():
    chart = Chart(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], x=["W2", "W8"], y=["conv1", "fc"])))
    chart.add_scatter(x=[0.5, 1.5], y=[7, 8], customdata=[10, 11], mode="markers")
    got = []
    chart.on_click(got.append)
    chart.click(0, [1, 0])
    assert got[-1] == [{"curve": 0, "index": [1, 0], "x": "W2", "y": "fc", "z": 3, "customdata": None}]
    chart._on_message(chart, {"type": "click", "points": [{"curve": 1, "index": 1, "x": 1.5, "y": 8, "customdata": 11}]}, [])
    assert got[-1][0]["customdata"] == 11
    chart._on_message(chart, {"type": "something else"}, [])
    assert len(got) == 2


def test_plotly_js_is_the_installed_packages_own():
    source = plotly_source()
    assert len(source) > 1_000_000 and "window.Plotly" in source
    sent = []
    chart = Chart()
    chart.send = lambda content, buffers=None: sent.append(content)
    chart._on_message(chart, {"type": "need-plotly"}, [])
    assert sent == [{"type": "plotly", "source": source}]


def test_one_open_chart_per_kernel_carries_plotly_js_in_its_state():
    import widgets.chart as chart_module

    for c in list(chart_module._CARRIERS):
        c.close()
    first, second = Chart(), Chart()
    assert first.get_state()["_plotly_js"] == plotly_source() and second.get_state()["_plotly_js"] == ""
    first.close()  # the page may still ask by message; a new chart carries it again
    third = Chart()
    assert third.get_state()["_plotly_js"] == plotly_source()
