"""``BitWidthTable``: choose weight / activation bits per layer, evaluate, see metric and size.

State lives in traitlets (``spec``, ``metric``, ``weight_bytes``, ``status``) so other widgets
and notebook code can ``observe`` it; the plotly ``FigureWidget`` shows bytes per layer: float,
the estimate for the current choice (updated on every change, no model run) and, after
"Evaluate", the bytes measured on the built model.
"""

from __future__ import annotations


import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go
import traitlets

import workbench as wb
from workbench.cost import packed_weight_bytes

from .chart import Chart

def bit_choices() -> list[tuple[str, int | str]]:
    """Dropdown choices from the number-format registry: the integer widths, then each
    fixed-width format by name (``fp8_e4m3``), then ``float``."""
    from workbench.formats import FORMATS, INT, fixed_width_formats

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

    def __init__(self, task, float_model, spec: wb.QuantSpec | dict | None = None, ptq: wb.PTQConfig = wb.PTQConfig(), **kwargs):
        super().__init__(**kwargs)
        self.task, self.float_model, self.ptq = task, float_model, ptq
        base = wb.QuantSpec.parse(spec or {})
        self._defaults = {k: v for k, v in base.to_dict().items() if k != "layers"}
        self.layer_types = wb.quantisable_layers(float_model)
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
        self.evaluate_button = W.Button(description="Evaluate", button_style="primary", icon="play")
        self.evaluate_button.on_click(lambda _: self.evaluate())
        self.progress = W.IntProgress(value=0, min=0, max=3, description="", layout=W.Layout(width="200px"))
        self.result = W.HTML()
        names = list(self.layer_types)
        self.figure = Chart(
            data=[
                go.Bar(name="float32", x=names, y=[packed_weight_bytes(w, b, None) for w, b in self._sizes.values()], marker_color="#BBBBBB"),
                go.Bar(name="estimate", x=names, y=[0] * len(names), marker_color="#4C78A8"),
                go.Bar(name="measured", x=names, y=[0] * len(names), marker_color="#F58518"),
            ],
            layout=go.Layout(title="Weight bytes per layer", barmode="group", height=360, margin=dict(l=40, r=10, t=40, b=80)),
        )
        self.children = [header, *rows, W.HBox([self.evaluate_button, self.progress]), self.result, self.figure]
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
        from workbench.formats import FORMATS

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
        self.figure.data[1].y = estimate
        self.estimated_bytes = int(sum(estimate))

    def _on_change(self, change) -> None:
        self._sync_spec()
        self.status = "changed: press Evaluate"

    def set_bits(self, layer: str, weight=None, act=None) -> None:
        """Set a layer's bits as the dropdowns would (``"float"`` for unquantised, a format name such as ``"fp8_e4m3"``)."""
        if layer not in self.layer_types:
            raise wb.SpecError(f"no quantisable layer {layer!r}; layers are {', '.join(self.layer_types)}")
        if weight is not None:
            self.weight_dropdowns[layer].value = weight
        if act is not None:
            self.act_dropdowns[layer].value = act

    # ------------------------------------------------------------------ actions
    def evaluate(self) -> dict:
        """Quantise with the current spec, calibrate, evaluate; update traits, text and chart."""
        self.progress.value = 0
        self.status = "quantising"
        try:
            qmodel = wb.quantize_task(self.task, self.float_model, self.spec, self.ptq)
            self.progress.value = 1
            self.status = "evaluating"
            ev = wb.evaluate_quantized(self.task, self.float_model, qmodel)
        except wb.WorkbenchError as exc:
            self.status = f"error: {exc}"
            self.result.value = f"<span style='color:#c00'>{exc}</span>"
            self.progress.value = 0
            raise
        self.progress.value = 2
        self.qmodel, self.layers = qmodel, ev["layers"]
        self.fp_metric, self.metric, self.weight_bytes = ev["fp_metric"], ev["quant_metric"], ev["weight_bytes_quant"]
        self.figure.data[2].y = list(self.layers.set_index("layer").loc[list(self.layer_types), "weight_bytes"])
        name = self.task.metric.name
        self.result.value = (
            f"<b>{name}</b>: {self.metric:.4f} (float {self.fp_metric:.4f}, change {self.metric - self.fp_metric:+.4f}) &nbsp; "
            f"<b>weights</b>: {self.weight_bytes:,} bytes ({ev['weight_bytes_fp'] / max(1, self.weight_bytes):.1f}x smaller than float32)"
        )
        self.progress.value = 3
        self.status = "evaluated"
        return {k: v for k, v in ev.items() if k not in ("layers", "sim_outputs")}
