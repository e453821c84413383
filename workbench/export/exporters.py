"""Exporters as a registry: each export target is one :class:`Exporter` (name, file suffix, what it
can carry, ``export`` and ``verify``) registered with :func:`register_exporter`.

``export_and_verify``, ``run_job``, ``workbench quantize --format F`` and a recipe's
``export.formats`` all take names from :data:`EXPORTERS`; an unknown name is a one-line
:class:`~workbench.infra.errors.ExportError` listing the known ones, raised before any work.

Adding an exporter::

    @register_exporter
    class MyTarget(Exporter):
        name, suffix = "mytarget", ".mytarget.onnx"
        carries, max_bits, verified_by = "integers up to 8 bits", 8, "my runtime"

        def export(self, qmodel, example, path, **options):
            ...  # write path (atomically), return Path(path)

        def verify(self, path, qmodel, task, **options) -> dict:
            ...  # compare with the simulation; keys prefixed with the exporter's name

The QCDQ export is the primary one: the summary's top-level keys (``onnx_path``,
``onnx_sha256``, ``onnx_metric``, the latency keys) come from it, so every list of formats must
name ``qcdq`` (:func:`resolve_formats` says so in one line otherwise).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..infra.plugins import PluginRegistry
from ..infra.errors import ExportError, ToolchainError, unknown_name

if TYPE_CHECKING:  # annotations only: the registry imports without torch (``workbench exporters``)
    from torch import nn

def find_module_spec(name: str):
    """The import spec of module ``name``, found without importing it nor, for a dotted name, its
    parent packages (probing a toolchain costs no import): each part of the name is looked up in
    the folders of the one before. None where that finds nothing (not installed, or installed
    through an import hook that only :func:`importlib.util.find_spec` sees)."""
    import importlib.machinery

    try:
        head, *rest = name.split(".")
        spec = importlib.util.find_spec(head)
        for part in rest:
            locations = None if spec is None else spec.submodule_search_locations
            spec = None if not locations else importlib.machinery.PathFinder.find_spec(f"{spec.name}.{part}", list(locations))
        return spec
    except (ImportError, ValueError):
        return None


def module_installed(name: str) -> bool:
    """Whether module ``name`` can be imported here: :func:`find_module_spec`, else (an import
    hook) :func:`importlib.util.find_spec`, which imports the parent packages."""
    import sys

    if name in sys.modules or find_module_spec(name) is not None:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


PRIMARY = "qcdq"
DEFAULT_FORMATS = ("qcdq", "qonnx")


class Exporter:
    """One export target. Subclasses set the class attributes and implement ``export`` and ``verify``.

    ``name``: the registry key (``--format NAME``, a recipe's ``export.formats``); ``suffix``: the
    file name part after the stem (``model.onnx``, ``model.qonnx.onnx``); ``carries``: what it can
    hold, in words; ``max_bits``: the widest integer it carries (None: any); ``verified_by``: what
    runs the file to check it against the simulation; ``path_key``: the summary key holding the
    written file's name.
    """

    name: str = ""
    suffix: str = ""
    carries: str = ""
    max_bits: int | None = None
    verified_by: str = ""
    description: str = ""

    @property
    def path_key(self) -> str:
        return f"{self.name}_path"

    def check(self, qmodel: nn.Module) -> None:
        """Raise a one-line ExportError if ``qmodel`` holds something this exporter cannot carry
        (before any file is written): integers wider than ``max_bits``, or a number format whose
        registry entry (:mod:`workbench.core.formats`) does not name this exporter."""
        from .onnx_io import _check_bits_exportable, check_formats_exportable

        check_formats_exportable(qmodel, self.name, self.label)
        if self.max_bits is not None:
            _check_bits_exportable(qmodel, self.max_bits, self.label)

    @property
    def label(self) -> str:
        return self.name

    def export(self, qmodel: nn.Module, example, path: str | os.PathLike, **options) -> Path:
        raise NotImplementedError

    def verify(self, path: str | os.PathLike, qmodel: nn.Module, task, **options) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<exporter {self.name!r} ({self.suffix})>"


#: The columns of one deployment row (:meth:`Target.evaluate`, ``deployment.csv``), in order.
#: ``ram_bytes`` / ``flash_bytes`` / ``latency_*`` / ``cycles`` say where they come from in
#: ``ram_source`` / ``flash_source`` / ``latency_source`` (measured on this CPU, or estimated by a
#: target compiler); ``notes`` says where a row's metric comes from when not its own runtime.
DEPLOYMENT_COLUMNS = (
    "target", "runtime", "metric", "agreement", "max_lsb_diff", "samples", "file_bytes", "flash_bytes", "flash_source",
    "ram_bytes", "ram_source", "peak_act_estimate_bytes", "ram_vs_estimate",
    "latency_ms_p50", "latency_ms_p99", "latency_ms_max", "jitter", "cycles", "latency_source",
    "npu_ops", "cpu_ops", "unsupported", "artifact", "notes",
)


class Target(Exporter):
    """A deployment target: an exporter whose artifact runs on (or is compiled for) embedded
    hardware, built by a third-party toolchain installed with the ``[targets]`` extra.

    Beyond :class:`Exporter` it has ``requires`` (importable modules, checked by
    :meth:`available` before any work), ``support`` (a DataFrame naming every layer it cannot take
    and why; :meth:`check` refuses them in one line), ``evaluate`` (one row per runtime with the
    :data:`DEPLOYMENT_COLUMNS`) and, where the runtime exposes intermediate tensors,
    ``layer_outputs`` (for :func:`workbench.analysis.divergence`). ``verify`` (the exporter API) returns the
    rows of ``evaluate`` flattened under the target's name."""

    extra = "targets"
    requires: tuple[str, ...] = ()
    runtime = ""
    needs_float_model = True

    def available(self) -> None:
        """Raise a one-line ToolchainError naming the missing module and the extra to install."""
        for module in self.requires:
            if not module_installed(module):
                raise ToolchainError(f"target {self.name!r} needs the Python module {module!r}, which is not installed; "
                                     f"install the extra: pip install 'workbench[{self.extra}]'")

    def support(self, qmodel: nn.Module):
        """One row per quantised layer: ``layer``, ``op``, ``supported`` (bool), ``reason``."""
        import pandas as pd

        return pd.DataFrame(columns=["layer", "op", "supported", "reason"])

    def check(self, qmodel: nn.Module) -> None:
        self.available()
        table = self.support(qmodel)
        bad = table[~table["supported"].astype(bool)] if len(table) else table
        if len(bad):
            named = "; ".join(f"{r.layer}: {r.reason}" for r in bad.itertuples())
            raise ExportError(f"target {self.name!r} cannot take {len(bad)} layer(s): {named}")

    def evaluate(self, path: str | os.PathLike, qmodel: nn.Module, task, **options) -> list[dict]:
        raise NotImplementedError

    def verify(self, path, qmodel, task, **options) -> dict:
        out = {}
        for row in self.evaluate(path, qmodel, task, **options):
            key = f"{self.name}@{row['runtime']}" if row.get("runtime") else self.name
            out[key] = {k: row.get(k) for k in DEPLOYMENT_COLUMNS}
        return out

    def layer_outputs(self, path: str | os.PathLike, x, qmodel: nn.Module | None = None) -> dict:
        """``{tensor or layer name: numpy array}`` of the artifact's intermediate tensors on ``x``."""
        raise NotImplementedError(f"target {self.name!r} does not expose intermediate tensors")


# filled by the modules that define exporters: this one's below, the targets' (and a user package's)
# through the entry-point group "workbench.exporters", imported on the registry's first read
EXPORTERS: dict[str, Exporter] = PluginRegistry("workbench.exporters", home=__name__)


def register_exporter(cls):
    """Class decorator (an instance works too): add an :class:`Exporter` to :data:`EXPORTERS`.

    Re-registering the same class (a re-run notebook cell) replaces the entry; another class
    under a taken name or suffix is an ExportError."""
    obj = cls() if isinstance(cls, type) else cls
    if not isinstance(obj, Exporter):
        raise ExportError(f"register_exporter expects an Exporter subclass; got {type(obj).__name__}")
    if not isinstance(obj.name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*(-[a-z0-9_]+)*", obj.name):
        raise ExportError(f"exporter name {obj.name!r}; expected a short lower-case name such as 'qcdq' or 'tflite-int8'")
    if not isinstance(obj.suffix, str) or not obj.suffix.startswith(".") or "/" in obj.suffix or "\\" in obj.suffix:
        raise ExportError(f"exporter {obj.name!r}: suffix {obj.suffix!r}; expected a file name part such as '.onnx'")
    for other in dict.values(EXPORTERS):  # what is registered so far: no plugin loading mid-registration
        same_class = type(other).__qualname__ == type(obj).__qualname__ and type(other).__module__ == type(obj).__module__
        if other.name == obj.name and not same_class:
            raise ExportError(f"exporter {obj.name!r} is already registered ({type(other).__qualname__})")
        if other.suffix == obj.suffix and other.name != obj.name:
            raise ExportError(f"exporter {obj.name!r}: suffix {obj.suffix!r} is already used by exporter {other.name!r}")
    EXPORTERS[obj.name] = obj
    return cls


def _unknown(name) -> ExportError:
    return ExportError(unknown_name("export format", name, EXPORTERS))


def get_exporter(name: str) -> Exporter:
    """The registered exporter ``name`` (one-line ExportError listing the known ones otherwise)."""
    if not isinstance(name, str) or name not in EXPORTERS:
        raise _unknown(name)
    return EXPORTERS[name]


def resolve_formats(formats: Iterable[str] | str | None = DEFAULT_FORMATS, qonnx: bool | None = None) -> tuple[str, ...]:
    """Checked export format names, ``qcdq`` first, duplicates dropped; raises before any work.

    ``formats``: names from :data:`EXPORTERS` (a single name is taken as a list of one; None: the
    default ``("qcdq", "qonnx")``). ``qonnx``: the deprecated boolean alias kept for old callers;
    False drops ``"qonnx"``, True adds it, None leaves ``formats`` as given.
    """
    if formats is None:
        formats = DEFAULT_FORMATS
    if isinstance(formats, str):
        formats = (formats,)
    try:
        names = list(formats)
    except TypeError:
        raise ExportError(f"formats {formats!r}; expected a list of export format names ({', '.join(EXPORTERS)})") from None
    for name in names:
        get_exporter(name)
    if qonnx is False:
        names = [n for n in names if n != "qonnx"]
    elif qonnx is True and "qonnx" not in names:
        names.append("qonnx")
    out = list(dict.fromkeys(names))
    if PRIMARY not in out:
        raise ExportError(f"formats {out!r} lack {PRIMARY!r}: the summary's primary keys (onnx_path, onnx_metric, latency) come from the QCDQ export, "
                          f"so {PRIMARY!r} is required (add it beside the others)")
    out.remove(PRIMARY)
    return (PRIMARY, *out)


def check_spec_formats(resolved: dict, formats: Iterable[str]) -> None:
    """Before any work: a one-line ExportError if one of the exporters ``formats`` cannot carry a
    number format that the resolved spec ``{layer: LayerQuant}`` asks for (naming layer and format)."""
    from .onnx_io import check_formats_exportable

    for name in formats:
        exporter = get_exporter(name)
        if not getattr(exporter, "needs_float_model", False):
            check_formats_exportable(resolved, exporter.name, exporter.label)


def list_exporters():
    """The registered exporters as a DataFrame: name, suffix, carries, max_bits, verified_by, description."""
    import pandas as pd

    return pd.DataFrame([{"name": e.name, "suffix": e.suffix, "carries": e.carries, "max_bits": e.max_bits, "verified_by": e.verified_by,
                          "description": e.description} for e in EXPORTERS.values()],
                        columns=["name", "suffix", "carries", "max_bits", "verified_by", "description"]).astype({"max_bits": "Int64"})


# --------------------------------------------------------------------------- built-in entries


@register_exporter
class QCDQExporter(Exporter):
    name, suffix = "qcdq", ".onnx"
    carries = "integers of 2-8 bits (QuantizeLinear-Clip-DequantizeLinear, opset 13); FP8 minifloats at opset 19; dynamic batch"
    max_bits = 8
    verified_by = "onnxruntime (whole eval split; integer kernels and latency measured)"
    description = "ONNX for onnxruntime's integer kernels; the primary export (onnx_* summary keys)"
    label = "QCDQ (onnxruntime)"

    @property
    def path_key(self) -> str:
        return "onnx_path"

    def export(self, qmodel, example, path, weight_encoding: str = "u8", pack: bool | str = True, **options) -> Path:
        from .qcdq import export_qcdq

        return export_qcdq(qmodel, example, path, weight_encoding=weight_encoding, pack=pack)

    def verify(self, path, qmodel, task, sim_outputs=None, **options) -> dict:
        from .verify import verify_qcdq

        return verify_qcdq(path, qmodel, task, sim_outputs=sim_outputs)


@register_exporter
class QONNXExporter(Exporter):
    name, suffix = "qonnx", ".qonnx.onnx"
    carries = "integers of any width (Quant nodes; weights stored as integers, at most 4 bits two a byte), batch 1"
    max_bits = None
    verified_by = "qonnx's arithmetic in onnxruntime (qonnx_run; qonnx's own executor where a graph cannot be lowered), first qonnx_samples eval samples"
    description = "QONNX for FPGA flows (FINN, hls4ml)"

    def export(self, qmodel, example, path, pack: bool | str = True, **options) -> Path:
        from .qonnx import export_qonnx

        return export_qonnx(qmodel, example, path, pack=pack)

    def verify(self, path, qmodel, task, qonnx_samples: int = 64, **options) -> dict:
        from .verify import verify_qonnx

        return verify_qonnx(path, qmodel, task, n=qonnx_samples)


@register_exporter
class FloatExporter(Exporter):
    """The float model (not the quantised one) as ONNX: the baseline a deployment compares with.

    It needs the float model: ``export_and_verify(..., float_model=model)`` (``run_job`` passes
    it). Where the job already wrote the float file for latency baselines (``float_onnx``), that
    file is reused, not written twice."""

    name, suffix = "float", ".float.onnx"
    carries = "the float model (no quantisation), dynamic batch"
    max_bits = None
    verified_by = "onnxruntime against the float torch model (whole eval split)"
    description = "float ONNX of the unquantised model, for latency and accuracy baselines"
    needs_float_model = True

    def check(self, qmodel: nn.Module) -> None:
        """Carries no quantised tensor, so nothing in ``qmodel`` can be refused."""

    def export(self, qmodel, example, path, float_model=None, float_onnx=None, **options) -> Path:
        if float_onnx is not None:
            return Path(float_onnx)
        if float_model is None:
            raise ExportError("the float exporter needs the float model: pass float_model= to export_and_verify")
        from .onnx_io import export_float

        return export_float(float_model, example, path)

    def verify(self, path, qmodel, task, float_model=None, fp_outputs=None, **options) -> dict:
        from .verify import verify_float

        return verify_float(path, float_model, task, fp_outputs=fp_outputs)

