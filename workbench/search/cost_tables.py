"""Per-target cost tables: what each layer costs on a deployment target at each choice, measured
or compiled by the target's own toolchain, so a search can budget the target's own units.

A *cost source* (:data:`COST_SOURCES`, a registry) builds a configuration (a weight bit-width per
layer, at a fixed activation width) for one target and reports the target's numbers: per layer
(``layer -> {kind: value}``) and for the whole model (``{kind: value}``). Kinds are cost kinds of
:data:`workbench.core.cost.COST_KINDS`; an additive kind sums over layers, any other kind is a maximum
over layers (RAM for activations).

:func:`build_cost_table` builds every uniform configuration of the choices (each layer's value
at bits ``b`` is read from the uniform-``b`` build), keeps what the layers do not explain as an
``overhead`` per kind (the whole model's figure minus the layers' sum, or minus their maximum),
then validates the additive estimate against the target's own number on a few seeded mixed
configurations (``validation``: one row per point and kind with the relative error).

The table is stored in the :class:`~workbench.infra.store.ResultStore`, keyed by the model's weights,
the task's data, the target, the choices and the toolchain's version, so building it again is a
lookup.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..infra import children
from ..core.cost import get_cost_kind
from ..infra.errors import SpecError, ToolchainError, unknown_name
from ..infra.store import resolve_store, sweep_fingerprint
from ..targets.vela import vela_configs

#: Bumped when what a cost table holds or how it is measured changes (stored tables are rebuilt).
COST_TABLE_VERSION = "2"


@dataclass(frozen=True)
class CostSource:
    """How one deployment target is measured.

    ``name``: the deployment target (``onnxruntime``, ``tflite-int8``, ``ethos-u55-128``, ...).
    ``kinds``: the cost kinds it reports. ``measure(task, model, assignment, act_bits)`` builds the
    configuration ``assignment`` (layer -> weight bits; layers not named: 8) of ``model`` and
    returns ``(per_layer, totals)``: ``{layer: {kind: value}}`` and ``{kind: value}``.
    ``available()``: whether its toolchain is installed (``requires``: the modules it needs, from
    the ``[targets]`` extra). ``version()``: its toolchain's versions (part of a stored table's key).
    ``supported_bits``: the weight widths it can build (empty: any the quantiser takes)."""

    name: str
    kinds: tuple[str, ...]
    measure: Callable
    available: Callable[[], bool] = lambda: True
    requires: str = ""
    version: Callable[[], str] = lambda: ""
    description: str = ""
    supported_bits: tuple[int, ...] = ()


COST_SOURCES: dict[str, CostSource] = {}


def register_cost_source(source: CostSource) -> CostSource:
    """Add ``source`` to :data:`COST_SOURCES` (one per target name; registering again replaces it)."""
    if not isinstance(source, CostSource):
        raise SpecError(f"register_cost_source expects a CostSource; got {type(source).__name__}")
    for k in source.kinds:
        get_cost_kind(k)
    COST_SOURCES[source.name] = source
    return source


@dataclass
class TargetCostTable:
    """Per-layer costs of one model on one target.

    ``table``: one row per (layer, weight_bits) with a column per kind of ``kinds``;
    ``overhead``: per kind, what the layers do not explain; ``totals``: per uniform width, the
    target's whole-model numbers; ``validation``: one row per validated point and kind
    (``point``, ``bits`` as JSON, ``kind``, ``estimate``, ``actual``, ``error`` = |estimate -
    actual| / actual). ``fingerprint``: its result-store key; ``from_store``: read from the store;
    ``builds``: configurations built to make it (0 from the store)."""

    task: str
    target: str
    act_bits: int
    bits: tuple[int, ...]
    kinds: tuple[str, ...]
    table: pd.DataFrame
    overhead: dict[str, float]
    totals: pd.DataFrame = field(default_factory=pd.DataFrame)
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)
    fingerprint: str = ""  # its key in the result store
    from_store: bool = False  # True when read from the store (nothing built)
    builds: int = 0  # configurations built and measured to make it
    toolchain: str = ""  # the source's toolchain versions

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.table["layer"]))

    def _kind(self, kind: str) -> str:
        get_cost_kind(kind)
        if kind not in self.kinds:
            raise SpecError(f"cost kind {kind!r} is not in the {self.target} cost table of {self.task}; it has {', '.join(self.kinds)}")
        return kind

    def matrix(self, kind: str, layers: list[str], bits: list[int]) -> np.ndarray:
        """(layers, bits): each layer's value of ``kind`` at each weight width (no overhead)."""
        kind = self._kind(kind)
        pivot = self.table.pivot(index="layer", columns="weight_bits", values=kind)
        missing = [layer for layer in layers if layer not in pivot.index] + [b for b in bits if b not in pivot.columns]
        if missing:
            raise SpecError(f"the {self.target} cost table has no entry for {', '.join(map(str, missing))}; it holds bits {', '.join(map(str, self.bits))}")
        return pivot.loc[layers, list(bits)].to_numpy(dtype=float)

    def estimate(self, assignment: dict[str, int], kind: str) -> float:
        """The table's estimate of ``kind`` for ``assignment`` (layers not named: 8 bits, or the
        table's widest where it holds no 8): the layers' sum (additive kinds) or maximum (others)
        plus the overhead; NaN where a layer is NaN in the table (the target cannot run it at those bits)."""
        kind = self._kind(kind)
        layers = self.layers
        default = 8 if 8 in self.bits else max(self.bits)
        unknown = [name for name in assignment if name not in layers]
        if unknown:
            raise SpecError(f"the {self.target} cost table of {self.task} has no layer {unknown[0]!r}; it has {', '.join(layers)}")
        chosen = [assignment.get(layer, default) for layer in layers]
        values = self.matrix(kind, layers, sorted(set(chosen)))
        col = {b: j for j, b in enumerate(sorted(set(chosen)))}
        values = [float(values[i, col[b]]) for i, b in enumerate(chosen)]
        if any(math.isnan(v) for v in values):  # a layer the target cannot run at those bits
            return math.nan
        if get_cost_kind(kind).additive:
            return float(sum(values)) + self.overhead.get(kind, 0.0)
        return float(max(values)) + self.overhead.get(kind, 0.0)


# ----------------------------------------------------------------------------- the registry


def _modules_found(modules) -> list[str]:
    """The modules of ``modules`` that are not installed."""
    import importlib.util

    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def get_cost_source(target: str) -> CostSource:
    """The registered cost source of ``target``, its toolchain checked: an unknown target is a
    one-line SpecError listing the known ones; a source whose toolchain is missing is a one-line
    ToolchainError naming the extra to install."""
    if not isinstance(target, str) or target not in COST_SOURCES:
        raise SpecError(unknown_name("cost-table target", target, COST_SOURCES))
    source = COST_SOURCES[target]
    if not source.available():
        raise ToolchainError(f"cost-table target {target!r} needs {source.requires or 'its toolchain'}, which is not installed; "
                             f"install the extra: pip install 'workbench[targets]'")
    return source


def list_cost_sources() -> pd.DataFrame:
    """The registered cost sources: ``name``, ``kinds`` (comma-joined), ``available``, ``requires``,
    ``bits`` (the weight widths it builds; empty: any), ``description``."""
    cols = ["name", "kinds", "available", "requires", "bits", "description"]
    return pd.DataFrame([{"name": s.name, "kinds": ", ".join(s.kinds), "available": bool(s.available()), "requires": s.requires,
                          "bits": ", ".join(map(str, s.supported_bits or ())), "description": s.description}
                         for s in COST_SOURCES.values()], columns=cols)


# ----------------------------------------------------------------------------- building one configuration


def _quantised(task, model, assignment: dict[str, int], act_bits: int):
    from ..export.pipeline import quantize_task
    from ..core.spec import assignment_spec

    return quantize_task(task, model, assignment_spec(assignment, act_bits))


def _tflite_for(task, model, assignment: dict[str, int], act_bits: int, path, weight_container: str = "native") -> Path:
    """The integer TFLite file of ``assignment`` written to ``path``: ``native`` stores 4-bit
    weights as INT4 (what TFLite Micro runs), ``int8`` stores 2..8-bit codes in int8 tensors (what
    Vela takes; its weight encoder compresses the narrow codes)."""
    from ..targets.tflite import tflite_for_assignment

    return Path(tflite_for_assignment(task, model, assignment, path, act_bits=act_bits, weight_container=weight_container))


def _flatbuffer(path):
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    model = fb.read_model(str(path))
    return fb, model, model.subgraphs[0]


def _tensor_bytes(t) -> int:
    """Bytes of one activation tensor of the flatbuffer (its shape times its type's width)."""
    width = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 7: 2, 9: 1, 17: 1}.get(int(t.type), 4)
    shape = [int(d) for d in (t.shape if t.shape is not None else [])]
    return int(np.prod(shape, dtype=np.int64)) * width if shape else width


FULLY_CONNECTED = 9  # the TFLite builtin operator code


def tflite_layer_facts(path, layers) -> dict[str, dict]:
    """Per workbench layer of an integer TFLite file: ``{"weight_bytes"}`` (bytes of the constant
    buffers the layer's op reads: weights, bias), ``"act_bytes"`` (its input + output activation
    tensors), ``"scratch_bytes"`` (int4 weights: the int8 buffer TFLite Micro unpacks them into
    while the op runs), ``"weights"`` (the weight tensor's stored values, int8 where stored as int8, else
    None), ``"out_channels"`` and ``"int4_fully_connected"`` (an INT4 FULLY_CONNECTED op, which the
    TFLite Micro here has no kernel for). Layers are found by :func:`workbench.targets.tflite.layer_tensor_map`."""
    from ..targets.tflite import layer_tensor_map

    fb, model, graph = _flatbuffer(path)
    mapping = layer_tensor_map(path, layers)
    by_output = {fb.get_tensor_name(graph.tensors[op.outputs[0]]): op for op in graph.operators if len(op.outputs)}
    codes = [max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) for c in model.operatorCodes]
    counted: set[int] = set()
    out = {}
    for layer, tname in mapping.items():
        op = by_output.get(tname)
        if op is None:
            continue
        wbytes, abytes, weights, channels, scratch, int4 = 0, 0, None, 0, 0, False
        for k, i in enumerate(list(op.inputs) + list(op.outputs)):
            if i < 0:
                continue
            t = graph.tensors[i]
            data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
            if data is not None and len(data):
                if t.buffer not in counted:
                    counted.add(t.buffer)
                    wbytes += len(data)
                if k == 1:
                    channels = int(t.shape[0]) if t.shape is not None and len(t.shape) else 0
                    if int(t.type) == 9:
                        weights = np.frombuffer(bytes(data), dtype=np.int8)
                    elif int(t.type) == 17:  # int4: TFLite Micro unpacks it to int8 in a scratch buffer while the op runs
                        scratch += int(np.prod([int(d) for d in t.shape], dtype=np.int64))
                        int4 = True
            else:
                abytes += _tensor_bytes(t)
        out[layer] = {"weight_bytes": wbytes, "act_bytes": abytes, "scratch_bytes": scratch, "weights": weights, "out_channels": channels,
                      "int4_fully_connected": int4 and codes[op.opcodeIndex] == FULLY_CONNECTED}
    return out


def _quant_layer_names(model) -> list[str]:
    from ..core.quantize import quantisable_layers

    return list(quantisable_layers(model))


# ----------------------------------------------------------------------------- tflite-int8 (TFLite Micro)


def _measure_tflite(task, model, assignment: dict[str, int], act_bits: int):
    """flash_kib (file bytes; per layer its weight and bias buffers) and ram_kib (TFLite Micro's
    smallest arena; per layer its op's input + output tensors, plus the unpacked copy of int4
    weights) of the integer TFLite file. ram_kib is NaN where TFLite Micro cannot allocate the file
    (the TFLite Micro build here has no int4 FULLY_CONNECTED kernel): that configuration does not
    run on it."""
    from ..targets.tflite import micro_arena_bytes

    layers = _quant_layer_names(model)
    with children.temp_dir("wb-costs-") as tmp:
        path = _tflite_for(task, model, assignment, act_bits, Path(tmp) / "model.tflite")
        facts = tflite_layer_facts(path, layers)
        file_bytes = path.stat().st_size
        try:
            arena = micro_arena_bytes(path, task.example_input()[:1].float().numpy(), limit=max(1 << 22, 16 * file_bytes))
        except ToolchainError:
            arena = float("nan")
    # a layer TFLite Micro has no kernel for (INT4 FULLY_CONNECTED) has no RAM: NaN, so a search never picks it
    per_layer = {layer: {"flash_kib": f["weight_bytes"] / 1024,
                         "ram_kib": math.nan if f["int4_fully_connected"] else (f["act_bytes"] + f["scratch_bytes"]) / 1024}
                 for layer, f in facts.items()}
    return per_layer, {"flash_kib": file_bytes / 1024, "ram_kib": arena / 1024}


# ----------------------------------------------------------------------------- Vela (Arm Ethos-U)


def _mlw_bytes(weights: np.ndarray | None, channels: int) -> float:
    """Vela's weight stream size of one layer, estimated with its own encoder (``ethosu.mlw_codec``)
    on the layer's int8 values in stored order, plus 10 bytes of bias and scale per output channel
    (Vela's packed bias/scale record). Vela reorders weights into blocks before encoding, so this is
    an estimate: the table's validation measures how close it is."""
    if weights is None or not len(weights):
        return 0.0
    from ethosu import mlw_codec

    return float(len(mlw_codec.encode(weights.astype(np.int64).tolist())) + 10 * channels)


def _vela_rows_to_layers(rows: pd.DataFrame, layer_tensors: dict[str, str]) -> dict[str, float]:
    """Cycles per workbench layer from Vela's per-layer table: a row belongs to a layer when its
    ``name`` (the operator's output tensor, as Vela names it) is the layer's TFLite output tensor or
    the last ``;;``-joined part of it (Vela keeps that part of a fused name). Other rows: none."""
    out: dict[str, float] = {}
    for name, cycles in zip(rows["name"].astype(str), rows["cycles"]):
        for layer, tname in layer_tensors.items():
            if name == tname or tname.endswith(";;" + name) or name in tname.split(";;"):
                out[layer] = out.get(layer, 0.0) + float(cycles or 0)
                break
    return out


def _vela_measure(config: str):
    def measure(task, model, assignment: dict[str, int], act_bits: int):
        """cycles, latency_ms, flash_kib, ram_kib of the Vela compile of the configuration's TFLite
        file for ``config`` (Vela's defaults for the accelerator)."""
        from ..targets.tflite import layer_tensor_map
        from ..targets.vela import compile_vela

        layers = _quant_layer_names(model)
        with children.temp_dir("wb-costs-") as tmp:
            path = _tflite_for(task, model, assignment, act_bits, Path(tmp) / "model.tflite", weight_container="int8")
            facts = tflite_layer_facts(path, layers)
            layer_tensors = layer_tensor_map(path, layers)
            result = compile_vela(path, config)
        cycles = _vela_rows_to_layers(result.layers, layer_tensors)
        per_layer = {}
        for layer in layers:
            c = cycles.get(layer, 0.0)
            f = facts.get(layer, {})
            per_layer[layer] = {"cycles": c, "latency_ms": c / result.clock_hz * 1e3,
                                "flash_kib": _mlw_bytes(f.get("weights"), f.get("out_channels", 0)) / 1024,
                                "ram_kib": f.get("act_bytes", 0) / 1024}
        totals = {"cycles": float(result.cycles), "latency_ms": float(result.inference_ms), "flash_kib": result.flash_bytes / 1024,
                  "ram_kib": result.sram_bytes / 1024}
        return per_layer, totals

    return measure


# ----------------------------------------------------------------------------- onnxruntime (host CPU)

#: onnxruntime's profiled runs per configuration (one thread, batch 1) and the timed runs of the total.
ORT_PROFILE_RUNS = 30
ORT_LATENCY_RUNS = 100


def onnx_node_layers(graph, layers) -> dict[str, str]:
    """``{ONNX node name: workbench layer}`` of a QCDQ export: a node belongs to the layer whose
    module path its name's scope holds (``/features.3/Conv`` -> ``features.3``, the longest layer
    matching), or, for a scope named by the attribute alone (``/conv1_1/Conv``), the k-th layer
    with that last name part in graph order (as :func:`workbench.analysis.divergence.onnx_layer_outputs`)."""
    from ..analysis.divergence import _LAYER_OPS, _node_module

    out: dict[str, str] = {}
    taken: set[str] = set()
    for n in graph.node:
        if not n.name:
            continue
        paths = _node_module(n.name)
        layer = next((p for p in paths if p in layers), None)
        if layer is None:
            scope = n.name.strip("/").split("/")
            layer = max((lay for lay in layers if lay in scope), key=len, default=None)
        if layer is None and n.op_type in _LAYER_OPS and len(paths) == 1:
            m = re.fullmatch(r"(.+?)(?:_(\d+))?", paths[-1])
            same = [k for k in layers if k.rsplit(".", 1)[-1] == m.group(1)]
            k = int(m.group(2) or 0)
            if k < len(same) and same[k] not in taken:
                layer = same[k]
                prefix = "/" + "/".join(n.name.strip("/").split("/")[:-1]) + "/"
                for other in graph.node:  # the rest of that scope (its weight's DequantizeLinear)
                    if other.name.startswith(prefix):
                        out.setdefault(other.name, layer)
        if layer is not None:
            out[n.name] = layer
            if n.op_type in _LAYER_OPS:
                taken.add(layer)
    return out


def _profile_node(name: str, known: dict[str, str]) -> str | None:
    """The workbench layer of a profiled node: onnxruntime names a fused node after the node it
    replaced plus ``_token_<n>`` (QDQ fusion); otherwise the longest known node name it starts with."""
    base = re.sub(r"_token_\d+$", "", name)
    if base in known:
        return known[base]
    hit = max((k for k in known if base.startswith(k)), key=len, default=None)
    return known[hit] if hit else None


def _measure_onnxruntime(task, model, assignment: dict[str, int], act_bits: int):
    """latency_ms of the QCDQ export in onnxruntime (CPU, one thread, batch 1): per layer the median
    over profiled runs of each node's kernel time, summed over the layer's nodes; total: the p50
    of timed runs (:func:`workbench.export.verify.latency_ms`)."""
    import json

    import onnx
    import onnxruntime as ort

    from ..export.qcdq import export_qcdq
    from ..export.verify import _LEVELS, as_onnx_input, latency_level, latency_ms

    layers = _quant_layer_names(model)
    qmodel = _quantised(task, model, assignment, act_bits)
    example = task.example_input()
    with children.temp_dir("wb-costs-") as tmp:
        path = export_qcdq(qmodel, example, Path(tmp) / "model.onnx")
        known = onnx_node_layers(onnx.load(str(path)).graph, layers)
        so = ort.SessionOptions()
        level = latency_level(path)
        if level != "default":
            so.graph_optimization_level = _LEVELS[level]
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: as_onnx_input(example[:1])}
        for _ in range(ORT_PROFILE_RUNS + 5):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
        total = latency_ms(path, example, runs=ORT_LATENCY_RUNS, warmup=10)["p50"]
    times: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            times.setdefault(e["name"][: -len("_kernel_time")], []).append(float(e["dur"]) / 1e3)
    per_layer = {layer: {"latency_ms": 0.0} for layer in layers}
    for node, ts in times.items():
        layer = _profile_node(node, known)
        if layer is not None:
            per_layer[layer]["latency_ms"] += float(np.median(ts[5:] or ts))  # the first runs are warm-up
    return per_layer, {"latency_ms": float(total)}


# ----------------------------------------------------------------------------- measuring and building


def measure_point(task, model, assignment: dict[str, int], target: str, act_bits: int = 8) -> dict[str, float]:
    """The target's own whole-model numbers (``{kind: value}``) of the configuration
    ``assignment`` (layer -> weight bits; layers not named: 8) at ``act_bits`` activations."""
    source = get_cost_source(target)
    _check_assignment(source, assignment)
    return dict(source.measure(task, model, dict(assignment), act_bits)[1])


def _check_assignment(source: CostSource, assignment: dict) -> None:
    if not isinstance(assignment, dict):
        raise SpecError(f"assignment {type(assignment).__name__}; expected a dict of layer name -> weight bits")
    if source.supported_bits:
        bad = sorted({b for b in assignment.values() if b not in source.supported_bits}, key=str)
        if bad:
            raise SpecError(f"target {source.name!r} builds weights of {', '.join(map(str, source.supported_bits))} bits; "
                            f"got {', '.join(map(str, bad))}")


def _overhead(kind: str, total: float, values: list[float]) -> float:
    if get_cost_kind(kind).additive:
        return float(total - sum(values))
    return float(total - (max(values) if values else 0.0))


def cost_table_fingerprint(task, model, source: CostSource, bits, act_bits, kinds, n_validate, seed) -> str:
    """The store key of a cost table: model weights, data, target, choices and toolchain version."""
    config = {"target": source.name, "bits": list(bits), "act_bits": act_bits, "kinds": list(kinds), "n_validate": n_validate, "seed": seed}
    return sweep_fingerprint("cost_table", task, model, config, COST_TABLE_VERSION, toolchain=source.version())


def build_cost_table(task, model, target: str, bits=(8, 4), act_bits: int = 8, kinds=None, n_validate: int = 3, seed: int = 0,
                     store=None, progress: bool = True) -> TargetCostTable:
    """The :class:`TargetCostTable` of ``model`` on ``target`` (a :data:`COST_SOURCES` name).

    For each width of ``bits`` the uniform configuration is built and measured by the target's
    toolchain; each layer's value at that width is read from that build. The overhead of each kind
    is the widest build's total minus its layers' sum (additive kinds) or maximum (others). Then
    ``n_validate`` seeded random mixed configurations are built and the table's estimate compared
    with the target's own number (``validation``). ``kinds``: a subset of the source's kinds
    (default all). ``store``: a :class:`~workbench.infra.store.ResultStore`, None for the default one, or
    False for none; a table stored under the same key (weights, data, target, choices, toolchain
    version) is returned without building anything (``from_store`` True)."""
    source = get_cost_source(target)
    try:
        bits = tuple(dict.fromkeys(int(b) for b in ([bits] if isinstance(bits, int) else bits)))
    except (TypeError, ValueError):
        raise SpecError(f"bits {bits!r}; expected weight widths such as (8, 4)") from None
    if not bits:
        raise SpecError("bits is empty; expected weight widths such as (8, 4)")
    _check_assignment(source, {str(i): b for i, b in enumerate(bits)})
    kinds = tuple(source.kinds if kinds is None else ([kinds] if isinstance(kinds, str) else kinds))
    for k in kinds:
        get_cost_kind(k)
        if k not in source.kinds:
            raise SpecError(f"cost kind {k!r} is not measured by target {target!r}; it measures {', '.join(source.kinds)}")
    if isinstance(n_validate, bool) or not isinstance(n_validate, int) or n_validate < 0:
        raise SpecError(f"n_validate {n_validate!r}; expected an integer >= 0")
    store = resolve_store(store)
    key = cost_table_fingerprint(task, model, source, bits, act_bits, kinds, n_validate, seed)
    if store is not None:
        row = store.rows(key, _stored_table_problem).get("table")  # an edited or damaged table: set aside, measured again
        if row is not None:
            return _from_row(row, from_store=True)

    layers = _quant_layer_names(model)
    uniform = {b: {layer: b for layer in layers} for b in bits}
    measured: dict[str, tuple] = {}
    bar = tqdm(total=len(bits) + n_validate, desc=f"cost table {task.name} on {target}", disable=not progress)

    def run(assignment):
        k = _bits_json(assignment)
        if k not in measured:
            measured[k] = source.measure(task, model, assignment, act_bits)
            bar.update()
        return measured[k]

    rows, totals = [], []
    for b in bits:
        per_layer, total = run(uniform[b])
        for layer in layers:
            rows.append({"layer": layer, "weight_bits": b, **{k: float(per_layer.get(layer, {}).get(k, 0.0)) for k in kinds}})
        totals.append({"weight_bits": b, **{k: float(total[k]) for k in kinds}})
    table = pd.DataFrame(rows, columns=["layer", "weight_bits", *kinds])
    widest = max(bits)
    ref = table[table["weight_bits"] == widest]
    ref_total = next(t for t in totals if t["weight_bits"] == widest)
    overhead = {k: _overhead(k, ref_total[k], ref[k].tolist()) for k in kinds}
    out = TargetCostTable(task=task.name, target=target, act_bits=act_bits, bits=bits, kinds=kinds, table=table, overhead=overhead,
                          totals=pd.DataFrame(totals, columns=["weight_bits", *kinds]))
    # validation points: seeded mixes of the widths each layer runs at (a NaN in the table: the
    # target cannot run that layer at those bits, so no configuration holding it is validated)
    rng = np.random.default_rng(seed)
    runnable = {layer: [b for b in bits if not table[(table["layer"] == layer) & (table["weight_bits"] == b)][list(kinds)].isna().any(axis=None)]
                or [widest] for layer in layers}
    points = [{layer: int(rng.choice(runnable[layer])) for layer in layers} for _ in range(n_validate)]
    bar.total = len(bits) + len({_bits_json(p) for p in points} - {_bits_json(u) for u in uniform.values()})
    bar.refresh()
    vrows = []
    for i, point in enumerate(points):
        _, actual = run(point)
        for k in kinds:
            est, act = out.estimate(point, k), float(actual[k])
            vrows.append({"point": i, "bits": _bits_json(point), "kind": k, "estimate": est, "actual": act,
                          "error": _error(est, act)})
    bar.close()
    out.validation = pd.DataFrame(vrows, columns=["point", "bits", "kind", "estimate", "actual", "error"])
    out.fingerprint, out.from_store, out.builds = key, False, len(measured)
    out.toolchain = source.version()
    if store is not None:
        store.put(key, "cost_table", "table", _to_row(out))
    return out


def _error(estimate: float, actual: float) -> float:
    """|estimate - actual| / actual; 0 where both are NaN (both say the target does not run it),
    inf where only one is, or where actual is 0 and the estimate is not."""
    if math.isnan(estimate) or math.isnan(actual):
        return 0.0 if math.isnan(estimate) and math.isnan(actual) else math.inf
    return abs(estimate - actual) / abs(actual) if actual else (0.0 if estimate == actual else math.inf)


def _bits_json(assignment: dict) -> str:
    import json

    return json.dumps(assignment, sort_keys=False)


def _to_row(t: TargetCostTable) -> dict:
    return {"task": t.task, "target": t.target, "act_bits": t.act_bits, "bits": list(t.bits), "kinds": list(t.kinds),
            "table": t.table.to_dict("records"), "overhead": t.overhead, "totals": t.totals.to_dict("records"),
            "validation": t.validation.to_dict("records"), "fingerprint": t.fingerprint, "builds": t.builds, "toolchain": t.toolchain}


def _from_row(row: dict, from_store: bool) -> TargetCostTable:
    kinds = tuple(row["kinds"])
    t = TargetCostTable(task=row["task"], target=row["target"], act_bits=int(row["act_bits"]), bits=tuple(int(b) for b in row["bits"]),
                        kinds=kinds, table=pd.DataFrame(row["table"], columns=["layer", "weight_bits", *kinds]),
                        overhead={k: float(v) for k, v in row["overhead"].items()},
                        totals=pd.DataFrame(row["totals"], columns=["weight_bits", *kinds]),
                        validation=pd.DataFrame(row["validation"], columns=["point", "bits", "kind", "estimate", "actual", "error"]))
    t.fingerprint, t.from_store, t.builds, t.toolchain = row["fingerprint"], from_store, 0 if from_store else row["builds"], row["toolchain"]
    return t


def _stored_table_problem(key: str, row: dict) -> str | None:
    """Why a stored cost table is unsound (it does not read back, or a cost is not a number), or None."""
    try:
        t = _from_row(row, True)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"it does not read back as a cost table ({type(exc).__name__})"
    for name, df in (("table", t.table), ("totals", t.totals)):
        for col in ("weight_bits", *t.kinds):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in df[col]):
                return f"{name}.{col} holds a value that is not a number"
    return None


# ----------------------------------------------------------------------------- the built-in sources


def _version(*modules) -> Callable[[], str]:
    def version() -> str:
        from importlib import metadata

        out = []
        for m in modules:
            try:
                out.append(f"{m} {metadata.version(m)}")
            except metadata.PackageNotFoundError:
                out.append(f"{m} -")
        return "; ".join(out)

    return version


_TFLITE_MODULES = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro")
_TFLITE_DISTS = ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "tflite-micro")

register_cost_source(CostSource(
    "onnxruntime", ("latency_ms",), _measure_onnxruntime, available=lambda: not _modules_found(("onnxruntime",)), requires="onnxruntime",
    version=_version("onnxruntime", "brevitas", "torch"),
    description="host CPU: the QCDQ export in onnxruntime, one thread, batch 1; per layer: profiled node times (median), total: p50 latency"))
register_cost_source(CostSource(
    "tflite-int8", ("flash_kib", "ram_kib"), _measure_tflite, available=lambda: not _modules_found(_TFLITE_MODULES),
    requires=", ".join(_TFLITE_MODULES), version=_version(*_TFLITE_DISTS), supported_bits=(8, 7, 6, 5, 4, 3, 2),
    description="TFLite Micro: flash = file bytes (per layer: its weight and bias buffers), RAM = smallest arena (per layer: op input + output)"))
for _config in vela_configs():
    register_cost_source(CostSource(
        _config, ("cycles", "latency_ms", "flash_kib", "ram_kib"), _vela_measure(_config),
        available=lambda: not _modules_found(("ethosu.vela", *_TFLITE_MODULES)), requires=", ".join(("ethosu.vela", *_TFLITE_MODULES)),
        version=_version("ethos-u-vela", *_TFLITE_DISTS), supported_bits=(8, 7, 6, 5, 4, 3, 2),
        description=f"Arm Vela for {_config}: cycles per layer from Vela's per-layer table, latency at the system clock, "
                    f"flash (per layer: its weights through Vela's encoder), SRAM"))
