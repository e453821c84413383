"""Where a QCDQ export and the Brevitas simulation part ways, quantiser by quantiser.

:func:`quantiser_divergence` exports ``qmodel`` with Brevitas's own QCDQ exporter (no workbench
rewrite: their node names still name the module each QuantizeLinear came from), runs it in
onnxruntime with every activation QuantizeLinear's integer output exposed, and compares those
integers with the codes the simulation's quantiser modules produce on the same inputs (forward
hooks). One row per activation quantiser, in graph order: the fraction of codes that differ and
the largest difference. What the rows tell:

- a quantiser placed differently in export and simulation, or a different rounding mode or
  scale, shows where its inputs are still identical: codes differing by more than one step, or
  differing at the first quantisers (those that read the model input through float ops alone);
- float operations that the two runtimes compute with different last-bit rounding (LayerNorm,
  softmax, GELU, float matmuls) move a value across a rounding boundary now and then: codes one
  step apart in a small fraction of places, a fraction that grows with depth because each moved
  code moves the next layer's inputs by a whole step (:func:`workbench.divergence` measured this on
  ``hf-bert``; the same cascade appears between the float32 simulation and the same simulation in
  float64).

The workbench's own rewrites (:func:`workbench.export.export_qcdq`) are exact re-encodings checked
end to end (``tests/test_encoder_agreement.py``); this tool bisects placement and rounding.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

_LEVELS = ("disabled", "basic", "extended", "default")


def _module_of(node_name: str) -> str:
    """``/model/bert/encoder/layer.0/attention/self/query/input_quant/export_handler/QuantizeLinear``
    -> ``model.bert.encoder.layer.0.attention.self.query.input_quant``."""
    parts = node_name.strip("/").split("/")
    cut = parts.index("export_handler") if "export_handler" in parts else len(parts) - 1
    return ".".join(parts[:cut])


def quantiser_divergence(qmodel: nn.Module, x: torch.Tensor, level: str = "disabled") -> list[dict]:
    """Per activation quantiser (graph order): ``{"quantiser", "elements", "mismatch", "max_code_diff"}``,
    comparing onnxruntime (at optimisation ``level``: disabled, basic, extended or default) with the
    simulation on inputs ``x``. ``mismatch`` is the fraction of integer codes that differ. Quantisers
    the hooks cannot reach are left out."""
    import onnxruntime as ort
    from brevitas.export import export_onnx_qcdq

    from .export import DYNAMIC_BATCH, OPSET, _quiet
    from .verify import _LEVELS as ORT_LEVELS, as_onnx_input

    if level not in _LEVELS:
        raise ValueError(f"level {level!r}; expected one of {', '.join(_LEVELS)}")
    qmodel.eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        with _quiet():
            export_onnx_qcdq(qmodel, args=x[:1], export_path=raw, dynamo=False, opset_version=OPSET, **DYNAMIC_BATCH)
        model = onnx.load(raw)
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts = set(inits) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    modules = dict(qmodel.named_modules())
    picked = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DynamicQuantizeLinear") or node.input[0] in consts:
            continue
        name = _module_of(node.name)
        if name not in modules:
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        unsigned = node.op_type == "DynamicQuantizeLinear" or zp is not None and zp.dtype == np.uint8
        elem = onnx.TensorProto.UINT8 if unsigned else onnx.TensorProto.INT8
        graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], elem, None))
        picked.append(name)
    so = ort.SessionOptions()
    if level != "default":
        so.graph_optimization_level = ORT_LEVELS.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: as_onnx_input(x)})[1:]

    codes: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(mod, args, out):
            if hasattr(out, "scale") and out.scale is not None:
                codes[name] = torch.round(out.value / out.scale + out.zero_point).double()
        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in dict.fromkeys(picked)]
    try:
        with torch.no_grad():
            qmodel(x)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, got in zip(picked, outs):
        sim = codes.get(name)
        if sim is None or tuple(sim.shape) != got.shape:
            continue
        diff = (torch.from_numpy(got.astype(np.float64)) - sim).abs()
        rows.append({"quantiser": name, "elements": int(diff.numel()), "mismatch": float((diff > 0).double().mean()),
                     "max_code_diff": int(diff.max()) if diff.numel() else 0})
    return rows


def first_divergence(rows: list[dict]) -> dict | None:
    """The first row (graph order) whose codes differ anywhere; None when all agree."""
    return next((r for r in rows if r["mismatch"] > 0), None)
