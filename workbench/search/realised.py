"""Realised cost kinds (``onnx_kib``, ``tflite_kib``): the bytes an artifact really holds.

Each layer's part is a formula of the exporter's containers
(:func:`workbench.core.cost.realised_weight_bytes`: at most 4 bits packed two a byte in QCDQ
ONNX, 4 bits packed in TFLite, every other integer width a byte a weight, plus biases and
per-channel scales and zero points). The rest of the file (graph, names, tensors of no layer) is
not a formula: :func:`measure_overhead` writes the uniform-8 and uniform-4 artifacts of the model
with the real exporters, takes each file's bytes minus its layers' sum and keeps the larger (so an
estimate is never below a written file), and stores it in the
:class:`~workbench.infra.store.ResultStore`, keyed by the model's weights, the task's data, the
kind, the target's weight encoding and the toolchain's version: the second search is a lookup.

:func:`realised_costs` gives :func:`~workbench.core.cost.layer_costs` with the overheads of the
realised kinds a search reads, so every cost column of those kinds is the whole file's bytes.
:func:`check_toolchain` refuses a realised kind whose exporter is not installed, before any work.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from ..core.cost import COST_KINDS, LayerCosts, cost_table, get_cost_kind
from ..infra import children
from ..infra.errors import ToolchainError
from ..infra.store import resolve_store, sweep_fingerprint

#: Bumped when what the overhead holds or how it is measured changes (stored overheads are measured again).
REALISED_VERSION = "1"

#: Per artifact format: the modules its exporter needs, and the extra that installs them.
TOOLCHAINS = {"onnx": (("onnx", "onnxruntime"), "pip install onnxruntime"),
              "tflite": (("litert_torch", "ai_edge_quantizer", "ai_edge_litert"), "pip install 'workbench[targets]'")}
_DISTS = {"onnx": ("onnx", "onnxruntime", "brevitas", "torch"), "tflite": ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "brevitas", "torch")}

#: The widths whose files the overhead is measured from: uniform 8, uniform 4 (the two container
#: widths) and a mix of both (layers alternately at 8 and 4 bits: a packed graph holding int8
#: layers too, which the version converter and the packing write slightly differently).
OVERHEAD_BITS = (8, 4)


def overhead_assignments(layers) -> dict[str, dict[str, int]]:
    """The assignments whose files :func:`measure_overhead` writes: ``w8``, ``w4`` and ``mixed``."""
    out = {f"w{b}": {layer: b for layer in layers} for b in OVERHEAD_BITS}
    if len(layers) > 1:
        out["mixed"] = {layer: OVERHEAD_BITS[i % 2] for i, layer in enumerate(layers)}
    return out


def realised_kinds() -> list[str]:
    """Names of the registered realised kinds (a cost kind with an ``artifact`` format)."""
    return [k.name for k in COST_KINDS.values() if k.artifact]


def _missing(fmt: str) -> list[str]:
    import importlib.util

    return [m for m in TOOLCHAINS[fmt][0] if importlib.util.find_spec(m) is None]


def check_toolchain(kind: str) -> None:
    """Refuse (one-line ToolchainError naming the extra) a realised kind whose artifact's exporter
    is not installed: ``tflite_kib`` needs LiteRT from the ``targets`` extra. Other kinds pass."""
    k = get_cost_kind(kind)
    if not k.artifact:
        return
    missing = _missing(k.artifact)
    if missing:
        raise ToolchainError(f"cost kind {kind} counts the bytes of the {k.artifact} file, whose exporter is not installed "
                             f"(missing {', '.join(missing)}); install it with {TOOLCHAINS[k.artifact][1]}, or budget another kind")


def toolchain_version(fmt: str) -> str:
    out = []
    for dist in _DISTS[fmt]:
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} -")
    return "; ".join(out)


def write_artifact(fmt: str, task, model, assignment: dict[str, int], path, act_bits: int = 8, weight_encoding: str = "u8") -> Path:
    """Write the artifact of format ``fmt`` for ``assignment`` (layer -> weight bits) as the
    target deploys it: ``onnx`` the QCDQ export (packed INT4 at <= 4 bits) in ``weight_encoding``,
    ``tflite`` the integer TFLite file with native containers (what tflite-int8 deploys)."""
    if fmt == "onnx":
        from ..core.spec import assignment_spec
        from ..export.pipeline import quantize_task
        from ..export.qcdq import export_qcdq

        qmodel = quantize_task(task, model, assignment_spec(assignment, act_bits))
        return export_qcdq(qmodel, task.example_input(), path, weight_encoding=weight_encoding)
    from ..targets.tflite import tflite_for_assignment

    return Path(tflite_for_assignment(task, model, assignment, path, act_bits=act_bits, weight_container="native"))


def estimate_kib(kind: str, costs, assignment: dict[str, int], act_bits: int = 8) -> float:
    """A realised kind's value of ``assignment``: its layers' sum plus ``costs``' overhead (a
    :class:`~workbench.core.cost.LayerCosts` from :func:`realised_costs`; a plain dict: layers only)."""
    return float(get_cost_kind(kind).value(cost_table(costs, assignment, act_bits)))


def _valid(key: str, row: dict) -> str | None:
    v = row.get("overhead_kib")
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) else "overhead_kib is not a number"


def measure_overhead(task, model, kind: str, costs=None, act_bits: int = 8, weight_encoding: str = "u8", store=None) -> float:
    """The artifact overhead of the realised ``kind`` for ``model``, in KiB: per assignment of
    :func:`overhead_assignments`, the written file's bytes minus its layers' sum; the largest.
    Stored (``store``: a ResultStore, None for the default one, False for none) and read back
    under the model's weights, data, kind, encoding and toolchain version."""
    from ..core.cost import layer_costs

    k = get_cost_kind(kind)
    if not k.artifact:
        raise ToolchainError(f"cost kind {kind} is not realised; realised kinds are {', '.join(realised_kinds())}")
    check_toolchain(kind)
    costs = dict(layer_costs(model, task.example_input()) if costs is None else costs)  # layers only: no overhead of its own
    config = {"kind": kind, "act_bits": act_bits, "weight_encoding": weight_encoding if k.artifact == "onnx" else "", "plans": sorted(overhead_assignments(list(costs)))}
    key = sweep_fingerprint("realised_overhead", task, model, config, REALISED_VERSION, toolchain=toolchain_version(k.artifact))
    store = resolve_store(store)
    if store is not None:
        row = store.rows(key, _valid).get("overhead")
        if row is not None:
            return float(row["overhead_kib"])
    files = {}
    plans = overhead_assignments(list(costs))
    with children.temp_dir("wb-realised-") as tmp:
        for name, assignment in plans.items():
            path = write_artifact(k.artifact, task, model, assignment, Path(tmp) / f"{name}.{k.artifact}", act_bits, weight_encoding)
            files[name] = path.stat().st_size
    overhead = max(files[name] / 1024 - estimate_kib(kind, costs, plans[name], act_bits) for name in plans)
    if store is not None:
        store.put(key, "realised_overhead", "overhead", {"overhead_kib": float(overhead), **{f"file_bytes_{n}": int(v) for n, v in files.items()}})
    return float(overhead)


def realised_costs(task, model, costs, kinds, act_bits: int = 8, weight_encoding: str = "u8", store=None) -> LayerCosts:
    """``costs`` (:func:`~workbench.core.cost.layer_costs`) with the measured overhead of each
    realised kind among ``kinds`` (others are ignored), so their values are whole files."""
    overhead = dict(getattr(costs, "overhead", {}))
    for kind in dict.fromkeys(kinds):
        if kind in COST_KINDS and COST_KINDS[kind].artifact and kind not in overhead:
            overhead[kind] = measure_overhead(task, model, kind, costs, act_bits, weight_encoding, store)
    return LayerCosts(costs, overhead)
