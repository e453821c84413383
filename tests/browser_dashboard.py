"""What a person does on the compression dashboard, and how long the page takes to show it.

Shared by the Voila and the JupyterLab runs of tests/test_dashboard_browser.py: every step gets
the Playwright ``page`` and a ``root`` locator (Voila's body, Lab's notebook panel), finds the
widgets by the text a person reads (button labels, dropdown and slider descriptions), acts with
the mouse or a select, and waits until the DOM shows the change. Charts are read from the DOM:
``.js-plotly-plot`` elements carry the ``data`` and ``layout`` Plotly drew; axis and chart titles
are read from the SVG text on screen. Each step returns ``(seconds, box, facts)``: the time from
the action to the DOM showing its result, the widget box acted on (for a screenshot) and what
was seen (asserted by the test).
"""

from __future__ import annotations

import re
import time

# The widget box holding `el` and its plots: walk up to the first ancestor that has a plot.
PLOTS_NEAR = """(el) => {
  for (let n = el; n; n = n.parentElement) {
    const plots = Array.from(n.querySelectorAll('.js-plotly-plot'));
    if (plots.length) return [n, ...plots];
  }
  return [null];
}"""
TITLE = "(p, cls) => (p.querySelector(cls) || {}).textContent || ''"  # SVG text drawn by Plotly ('.xtitle', '.gtitle')
HAS_NUMBERS = """(p => (p.data || []).some(t => [...(t.z || []).flat(), ...(t.y || [])].some(v => typeof v === 'number' && isFinite(v))))"""
MARKER_POINTS = """(p) => (p.data || []).filter(t => (t.type || 'scatter') === 'scatter' && String(t.mode || 'markers').includes('markers'))
                         .reduce((n, t) => n + (t.x || []).length, 0)"""


def _exact(text: str) -> re.Pattern:
    return re.compile(rf"^\s*{re.escape(text)}\s*$")


def dropdown(page, root, description: str):
    """The <select> of the dropdown whose description is ``description``."""
    box = root.locator(".widget-dropdown").filter(has=page.locator("label", has_text=_exact(description)))
    return box.locator("select").first


def button(root, label: str):
    """The button labelled ``label`` (its text; an icon's glyph is not part of it)."""
    return root.locator("button").filter(has_text=_exact(label)).first


def slider(page, root, description: str):
    """The slider box (track, handle, readout) whose description is ``description``."""
    return root.locator(".widget-slider").filter(has=page.locator("label", has_text=_exact(description))).first


def plots_near(locator) -> tuple:
    """Element handles of the widget box holding ``locator``'s element and of its plots."""
    handles = locator.evaluate_handle(PLOTS_NEAR)
    props = handles.get_properties()
    box, *plots = [props[k].as_element() for k in sorted(props, key=int)]
    assert box is not None and plots, "no chart in the widget box"
    return box, plots


def _timed_wait(page, t0: float, expression: str, arg, timeout_s: float) -> float:
    page.wait_for_function(expression, arg=arg, timeout=timeout_s * 1000)
    return time.perf_counter() - t0


def wait_until_done(page, root, timeout_s: float, sweeps: int = 2) -> float:
    """Wait until the page's sweeps all say "done: ... from the store" (the last cell has finished
    and the kernel is free for the steps); returns when (perf_counter)."""
    page.wait_for_function("([r, n]) => (r.innerText.match(/from the store/g) || []).length >= n",
                           arg=[root.first.element_handle(timeout=timeout_s * 1000), sweeps], timeout=timeout_s * 1000)
    return time.perf_counter()


def wait_for_charts(page, root, n: int, timeout_s: float) -> float:
    """Wait until ``n`` charts under ``root`` have drawn numbers (y or z values); returns when (perf_counter)."""
    page.wait_for_function(f"([r, n]) => Array.from(r.querySelectorAll('.js-plotly-plot')).filter({HAS_NUMBERS}).length >= n",
                           arg=[root.first.element_handle(timeout=timeout_s * 1000), n], timeout=timeout_s * 1000)
    return time.perf_counter()


def switch_axis(page, root, want: str = "BOPs", timeout_s: float = 30) -> tuple[float, dict]:
    """Pick the explorer's x axis whose label mentions ``want``; wait until the scatter's x values
    and its x-axis title (the SVG text) change and the title mentions ``want``."""
    select = dropdown(page, root, "x axis")
    box, (plot, *_) = plots_near(select)
    before = plot.evaluate("p => ({x: JSON.stringify((p.data || []).map(t => t.x)), title: (p.querySelector('.xtitle') || {}).textContent || ''})")
    label = select.evaluate("(s, want) => Array.from(s.options).map(o => o.text).find(t => t.includes(want))", want)
    assert label, f"no x axis option mentions {want!r}"
    t0 = time.perf_counter()
    select.select_option(label=label)
    seconds = _timed_wait(page, t0, """([p, before, want]) => {
        const title = (p.querySelector('.xtitle') || {}).textContent || '';
        return title.includes(want) && title !== before.title && JSON.stringify((p.data || []).map(t => t.x)) !== before.x;
    }""", [plot, before, want], timeout_s)
    after = plot.evaluate("p => ({x: JSON.stringify((p.data || []).map(t => t.x)), title: (p.querySelector('.xtitle') || {}).textContent || ''})")
    return seconds, box, {"label": label, "title_before": before["title"], "title_after": after["title"], "x_changed": after["x"] != before["x"]}


def edit_bits(page, root, layer: str, timeout_s: float = 30) -> tuple[float, dict]:
    """Change ``layer``'s bit-width dropdown; wait until the estimate text changes."""
    estimate = root.locator(".widget-html-content", has_text="estimate").first
    before = estimate.inner_text()
    select = dropdown(page, root, layer)
    current = select.evaluate("s => s.options[s.selectedIndex].text")
    options = select.evaluate("s => Array.from(s.options).map(o => o.text)")
    new = next(o for o in (["2", "8"] + options) if o != current and o in options)
    handle = estimate.element_handle()
    t0 = time.perf_counter()
    select.select_option(label=new)
    seconds = _timed_wait(page, t0, "([e, before]) => e.innerText !== before", [handle, before], timeout_s)
    box, _ = plots_near(estimate)
    return seconds, box, {"before": before, "after": estimate.inner_text(), "bits": f"{current} -> {new}"}


def evaluate_point(page, root, timeout_s: float = 300) -> tuple[float, dict]:
    """Press Evaluate; wait until the explorer's chart has a trace named "edited" or one more point."""
    evaluate = button(root, "Evaluate")
    box, (plot, *_) = plots_near(evaluate)
    before = plot.evaluate(MARKER_POINTS)
    t0 = time.perf_counter()
    evaluate.click()
    seconds = _timed_wait(page, t0, f"""([p, before]) => (p.data || []).some(t => t.name === 'edited') || ({MARKER_POINTS})(p) > before""",
                          [plot, before], timeout_s)
    return seconds, box, {"points_before": before, "points_after": plot.evaluate(MARKER_POINTS),
                     "traces": plot.evaluate("p => (p.data || []).map(t => t.name)")}


def click_heatmap(page, root, row: int = 1, timeout_s: float = 30) -> tuple[float, dict]:
    """Click (real mouse, on Plotly's drag layer) the heatmap cell of layer ``row`` at its first
    measured setting; wait until both detail charts have data and a detail title names the layer."""
    box, plots = plots_near(dropdown(page, root, "colour by"))
    kinds = [p.evaluate("p => (p.data || []).map(t => t.type).join(',')") for p in plots]
    heatmap = plots[next(i for i, k in enumerate(kinds) if "heatmap" in k)]
    cell = heatmap.evaluate("""(p, row) => {
        const t = p.data[0], z = t.z[row], col = Math.max(0, z.findIndex(v => v !== null && v !== undefined));
        const xa = p._fullLayout.xaxis, ya = p._fullLayout.yaxis;
        return {layer: t.y[row], setting: t.x[col], x: xa.l2p(col), y: ya.l2p(row)};
    }""", row)
    drag = heatmap.query_selector(".nsewdrag")
    t0 = time.perf_counter()
    drag.click(position={"x": cell["x"], "y": cell["y"]})
    # the detail charts are drawn when their panel is shown (a hidden chart is not drawn at all)
    seconds = _timed_wait(page, t0, """([box, layer]) => {
        const details = Array.from(box.querySelectorAll('.js-plotly-plot')).filter(p => !(p.data || []).some(t => t.type === 'heatmap'));
        const filled = details.map(p => (p.data || []).some(t => (t.y || []).length > 0));
        const titles = details.map(p => (p.querySelector('.gtitle') || {}).textContent || '');
        return details.length >= 2 && filled.slice(0, 2).every(Boolean) && titles.some(t => t.includes(layer));
    }""", [box, cell["layer"]], timeout_s)
    details = [p for p in box.query_selector_all(".js-plotly-plot") if "heatmap" not in p.evaluate("p => (p.data || []).map(t => t.type).join(',')")]
    assert len(details) >= 2, "expected the histogram and the metric-against-bits chart beside the heatmap"
    fits = [p.evaluate("p => [p.getBoundingClientRect().width, p.parentElement.closest('.workbench-chart').getBoundingClientRect().width]") for p in details[:2]]
    assert all(w <= outer + 1 for w, outer in fits), f"a detail chart is wider than its place (chart, place px): {fits}"
    facts = [p.evaluate("""p => ({title: (p.querySelector('.gtitle') || {}).textContent || '',
                                  traces: (p.data || []).map(t => [t.type || 'scatter', t.name, (t.y || []).length])})""") for p in details[:2]]
    return seconds, box, {**cell, "details": facts}


def move_slider(page, root, description: str = "global level", timeout_s: float = 30) -> tuple[float, dict]:
    """Drag the slider's handle (real mouse) to the far right; wait until the chart's marker trace
    (named after the level) sits at the new level shown by the slider's readout."""
    box = slider(page, root, description)
    area, (plot, *_) = plots_near(box)
    readout = box.locator(".widget-readout")
    before = readout.inner_text().strip()
    handle, track = box.locator(".noUi-handle").first, box.locator(".noUi-base, .noUi-target").first
    handle.scroll_into_view_if_needed()
    hb, tb = handle.bounding_box(), track.bounding_box()
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(tb["x"] + tb["width"] + 20, hb["y"] + hb["height"] / 2, steps=8)
    t0 = time.perf_counter()
    page.mouse.up()
    page.wait_for_function("([r, before]) => r.textContent.trim() !== before", arg=[readout.element_handle(), before], timeout=timeout_s * 1000)
    after = readout.inner_text().strip()
    seconds = _timed_wait(page, t0, """([p, level]) => (p.data || []).some(t => /level/i.test(t.name || '') && (t.x || []).length === 1
                                                                             && Math.abs(t.x[0] - level) < 1e-9)""",
                          [plot, float(after)], timeout_s)
    marker = plot.evaluate("p => (p.data || []).filter(t => /level/i.test(t.name || '')).map(t => ({name: t.name, x: t.x}))")
    return seconds, area, {"before": before, "after": after, "marker": marker}
