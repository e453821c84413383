"""``BitWidthTable``: choose weight / activation bits per layer, evaluate, see metric and size.

State lives in traitlets (``spec``, ``metric``, ``weight_bytes``, ``status``, ``stale``) so other
widgets and notebook code can ``observe`` it; the chart shows weight bytes per layer: float, the
estimate for the current choice (updated on every change, no model run) and, after "Evaluate",
the bytes measured on the built model. An edit after Evaluate marks the measured bars stale
(grey, hatched, "measured (stale: edited since)") until the next Evaluate. The Evaluate button
runs in a background thread (:class:`widgets.background.Runner`); an error is one line in the
widget. ``evaluate()`` stays synchronous for notebooks and scripts.
"""

from __future__ import annotations

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go
import traitlets

import workbench as wb
from workbench.core.cost import packed_weight_bytes

from .background import Runner, message_html, one_line
from .chart import Chart

MEASURED = ("measured", "#F58518")
STALE = ("measured (stale: edited since)", "#BBBBBB")


def labels_missing(task) -> str:
    """A readable line when ``task``'s metric cannot be measured for want of labels on its eval
    split (:meth:`workbench.Task.missing_labels`); empty when it can."""
    try:
        why = task.missing_labels()
    except (wb.WorkbenchError, OSError):  # data that cannot load says so when it is used
        return ""
    return f"{why}: Evaluate cannot measure {task.metric.name} (give the eval split targets: Split(x, y)); sizes and estimates still work." if why else ""


def setting_label(value) -> str:
    """``W4`` for 4-bit integer weights, a format's name (``fp8_e4m3``), ``float32`` for float."""
    return "float32" if value == "float" else (f"W{value}" if isinstance(value, int) else str(value))


def bit_choices() -> list[tuple[str, int | str]]:
    """Dropdown choices from the number-format registry: the integer widths, then each
    fixed-width format by name (``fp8_e4m3``), then ``float``."""
    from workbench.core.formats import FORMATS, INT, fixed_width_formats

    fixed = [(n, n) for n in fixed_width_formats()]
    return [(str(b), b) for b in FORMATS[INT].bits] + fixed + [("float", "float")]


BIT_CHOICES = bit_choices()  # at import; the table reads bit_choices() when built, so later registrations show too


class BitWidthTable(W.VBox):
    """A dropdown per layer for weight and activation bits, an Evaluate button and a bar chart."""

    spec = traitlets.Dict(help="the QuantSpec (as a dict) the dropdowns describe")
    metric = traitlets.Float(None, allow_none=True, help="task metric of the last evaluated spec")
    fp_metric = traitlets.Float(None, allow_none=True, help="task metric of the float model")
    weight_bytes = traitlets.Int(None, allow_none=True, help="packed weight bytes of the last evaluated model")
    estimated_bytes = traitlets.Int(0, help="packed weight bytes the current choice would take")
    status = traitlets.Unicode("")
    stale = traitlets.Bool(False, help="the measured bars are of bits edited since")

    def __init__(self, task, float_model, spec: wb.QuantSpec | dict | None = None, ptq: wb.PTQConfig = wb.PTQConfig(), **kwargs):
        super().__init__(**kwargs)
        self.task, self.float_model, self.ptq = task, float_model, ptq
        base = wb.QuantSpec.parse(spec or {})
        self._defaults = {k: v for k, v in base.to_dict().items() if k != "layers"}
        self.layer_types = wb.core.quantisable_layers(float_model)
        self._sizes = {name: (m.weight.numel(), 0 if m.bias is None else m.bias.numel()) for name, m in float_model.named_modules() if name in self.layer_types}
        self.qmodel = None
        self.layers: pd.DataFrame | None = None  # describe() of the last evaluated model

        probe = wb.quantize_model(float_model, base)  # resolve the starting spec per layer
        resolved = probe.workbench_plan.layers
        self.weight_dropdowns, self.act_dropdowns, rows = {}, {}, []
        header = W.HBox([W.HTML("<b>layer</b>", layout=W.Layout(width="220px")), W.HTML("<b>weight bits</b>", layout=W.Layout(width="110px")),
                         W.HTML("<b>act bits</b>", layout=W.Layout(width="110px"))])
        for name, (kind, depthwise) in self.layer_types.items():
            lq = resolved[name]
            choices = bit_choices()
            wd = W.Dropdown(options=choices, value=self._choice(lq.weight_bits, lq.weight_format), layout=W.Layout(width="110px"))
            ad = W.Dropdown(options=choices, value=self._choice(lq.act_bits, lq.act_format), layout=W.Layout(width="110px"))
            wd.observe(self._on_change, "value")
            ad.observe(self._on_change, "value")
            self.weight_dropdowns[name], self.act_dropdowns[name] = wd, ad
            label = W.HTML(f"{name} <span style='color:#888'>{kind}{' dw' if depthwise else ''}</span>", layout=W.Layout(width="220px"))
            rows.append(W.HBox([label, wd, ad]))
        self.evaluate_button = W.Button(description="Evaluate", button_style="primary", icon="play", layout=W.Layout(width="auto"))
        self.runner = Runner(self.evaluate_button, running="Evaluating...")
        self.evaluate_button.on_click(lambda _: self.runner.start(self._run, self._on_error, self._show))
        self.progress = W.IntProgress(value=0, min=0, max=3, description="", layout=W.Layout(width="200px"))
        self.result = W.HTML(message_html(labels_missing(task), "note") if labels_missing(task) else "")
        names = list(self.layer_types)
        hover = "%{x} %{customdata}: %{y:,} bytes<extra></extra>"
        self.figure = Chart(
            data=[
                go.Bar(name="float32", x=names, y=[packed_weight_bytes(w, b, None) for w, b in self._sizes.values()], marker_color="#999999",
                       customdata=["as float32"] * len(names), hovertemplate=hover),
                go.Bar(name="estimate", x=names, y=[0] * len(names), marker_color="#4C78A8", hovertemplate=hover),
                go.Bar(name=MEASURED[0], x=names, y=[0] * len(names), marker_color=MEASURED[1], hovertemplate=hover,
                       customdata=["measured (not evaluated yet)"] * len(names)),
            ],
            layout=go.Layout(title="Weight bytes per layer (packed at their bits)", barmode="group", height=360,
                             xaxis_title="layer", yaxis_title="weight bytes", margin=dict(l=60, r=10, t=40, b=80)),
        )
        self.children = [header, *rows, W.HBox([self.evaluate_button, self.runner.cancel_button, self.progress],
                                               layout=W.Layout(flex_flow="row wrap", align_items="center")), self.result, self.figure]
        self._sync_spec()

    # ------------------------------------------------------------------ state
    @staticmethod
    def _choice(bits, fmt) -> int | str:
        """The dropdown value of resolved settings: bits, a format name, or "float"."""
        if bits is None:
            return "float"
        return bits if fmt in (None, "int") else fmt

    def _default_choice(self, what: str):
        fmt = self._defaults.get(f"{what}_format", "int")
        bits = self._defaults[f"{what}_bits"]
        return self._choice(None if bits == "float" else bits, fmt)

    def _settings(self, what: str, value) -> dict:
        """The spec fields of a dropdown value: bits (naming the ``int`` format where the spec's default is another) or a format."""
        if isinstance(value, str) and value != "float":
            return {f"{what}_format": value}
        out = {f"{what}_bits": value}
        if value != "float" and self._defaults.get(f"{what}_format", "int") != "int":
            out[f"{what}_format"] = "int"
        return out

    def _layer_bits(self) -> dict[str, dict]:
        return {n: {"weight_bits": self.weight_dropdowns[n].value, "act_bits": self.act_dropdowns[n].value} for n in self.layer_types}

    def _sync_spec(self) -> None:
        from workbench.core.formats import FORMATS

        layers = {}
        for name, bits in self._layer_bits().items():
            diff = {}
            for what in ("weight", "act"):
                v = bits[f"{what}_bits"]
                if v != self._default_choice(what):
                    diff.update(self._settings(what, v))
            if diff:
                layers[name] = diff
        self.spec = {**self._defaults, "layers": layers}
        estimate = []
        for name, bits in self._layer_bits().items():
            n_w, n_b = self._sizes[name]
            wbits = bits["weight_bits"]
            wbits = FORMATS[wbits].fixed_bits if wbits in FORMATS else wbits  # a format stores its own bits
            estimate.append(packed_weight_bytes(n_w, n_b, wbits))
        with self.figure.batch_update():
            self.figure.data[1].y = estimate
            self.figure.data[1].customdata = [f"estimate at {setting_label(b['weight_bits'])}" for b in self._layer_bits().values()]
        self.estimated_bytes = int(sum(estimate))

    def _on_change(self, change) -> None:
        self._sync_spec()
        self.status = "changed: press Evaluate"
        if self.qmodel is not None and not self.stale:
            self._mark_stale(True)

    def _mark_stale(self, stale: bool) -> None:
        """Grey and hatch the measured bars (and say so) once the bits are edited after Evaluate."""
        self.stale = stale
        name, color = STALE if stale else MEASURED
        with self.figure.batch_update():
            bar = self.figure.data[2]
            bar.name, bar.marker.color = name, color
            bar.marker.pattern = {"shape": "/" if stale else ""}
        if stale and self.metric is not None:
            self.result.value = self._result_text() + "<br>" + message_html(
                "stale: the bits were edited since this evaluation; press Evaluate to measure them", "stale")

    def set_bits(self, layer: str, weight=None, act=None) -> None:
        """Set a layer's bits as the dropdowns would (``"float"`` for unquantised, a format name such as ``"fp8_e4m3"``)."""
        if layer not in self.layer_types:
            raise wb.infra.SpecError(f"no quantisable layer {layer!r}; layers are {', '.join(self.layer_types)}")
        if weight is not None:
            self.weight_dropdowns[layer].value = weight
        if act is not None:
            self.act_dropdowns[layer].value = act

    # ------------------------------------------------------------------ actions
    def _run(self) -> tuple:
        """Quantise, calibrate, evaluate the current spec: (quantised model, evaluation, the bits it had)."""
        spec, bits = dict(self.spec), self._layer_bits()
        self.progress.value = 0
        self.status = "quantising"
        if labels_missing(self.task):
            raise wb.infra.TaskError(labels_missing(self.task))
        qmodel = wb.quantize_task(self.task, self.float_model, spec, self.ptq)
        self.progress.value = 1
        self.runner.check()
        self.status = "evaluating"
        ev = wb.export.evaluate_quantized(self.task, self.float_model, qmodel)
        self.progress.value = 2
        return qmodel, ev, bits

    def _on_error(self, message: str) -> None:
        self.status = f"error: {message}"
        self.result.value = message_html(message, "error")
        self.progress.value = 0

    def _result_text(self) -> str:
        name = self.task.metric.name
        return (f"<b>{name}</b>: {self.metric:.4f} (float {self.fp_metric:.4f}, change {self.metric - self.fp_metric:+.4f}) &nbsp; "
                f"<b>weights</b>: {self.weight_bytes:,} bytes ({self._fp_bytes / max(1, self.weight_bytes):.1f}x smaller than float32)")

    def _show(self, outcome: tuple) -> dict:
        qmodel, ev, bits = outcome
        self.qmodel, self.layers = qmodel, ev["layers"]
        self.fp_metric, self.metric, self.weight_bytes = ev["fp_metric"], ev["quant_metric"], ev["weight_bytes_quant"]
        self._fp_bytes = ev["weight_bytes_fp"]
        with self.figure.batch_update():
            self.figure.data[2].y = list(self.layers.set_index("layer").loc[list(self.layer_types), "weight_bytes"])
            self.figure.data[2].customdata = [f"measured at {setting_label(b['weight_bits'])}" for b in bits.values()]
        self._mark_stale(bits != self._layer_bits())  # edited while it ran: stale at once
        if not self.stale:
            self.result.value = self._result_text()
        self.progress.value = 3
        self.status = "evaluated"
        return {k: v for k, v in ev.items() if k not in ("layers", "sim_outputs")}

    def evaluate(self) -> dict:
        """Quantise with the current spec, calibrate, evaluate; update traits, text and chart.
        Synchronous (the Evaluate button runs the same in the background); errors raise, and show
        as one line in the widget."""
        try:
            outcome = self._run()
        except Exception as exc:
            self._on_error(one_line(exc))
            raise
        return self._show(outcome)
