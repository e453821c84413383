"""Arm Ethos-U NPU targets: an int8 TFLite file compiled by Arm's Vela compiler (``ethos-u-vela``).

One :class:`VelaTarget` is registered per accelerator configuration Vela knows (read from Vela
itself: ``ethos-u55-32`` ... ``ethos-u85-2048``; ``ethos-u55-128`` is the headline one). Its
``export`` compiles an int8 ``.tflite`` (``tflite_path=``, or one built from the float model) into
``<stem>.<config>.tflite`` and nothing else. Vela needs int8 weight tensors: weights quantised at
2 to 7 bits go in *int8 containers* (:func:`workbench.targets.tflite.export_tflite_int8` with
``weight_container="int8"``: int8 tensors holding the simulation's exact integer codes and
scales), which Vela's weight compression stores in fewer flash bytes than 8-bit codes. Its
``evaluate`` returns one deployment row with
Vela's estimates: cycles, inference time at the system configuration's clock, SRAM and flash
used, and which operators Vela placed on the NPU and which fell back to the CPU (with Vela's
reason for each). The compiled file holds an ``ethos-u`` custom operator that no runtime on this
machine executes, so metric and agreement come only from the ``tflite-int8`` rows when given.

Vela runs in a subprocess (its C++ core, Regor, can die of a signal: Vela 5.2 gets a floating
point exception on a TFLite file with INT4 weights, so such files are refused before it runs)
inside a temporary directory; only the compiled file is copied, atomically, to the path asked for.

Defaults (Vela's own, documented in ``vela --help`` and its ``Arm/vela.ini``): Ethos-U55 uses
system configuration ``Ethos_U55_High_End_Embedded`` (500 MHz, SRAM for tensors, weights in
off-chip flash) and memory mode ``Shared_Sram``; Ethos-U65 uses ``Ethos_U65_Client_Server`` and
Ethos-U85 ``Ethos_U85_SYS_DRAM_Mid`` (1 GHz), both with ``Dedicated_Sram_384KB`` (weights and
feature maps in DRAM, the SRAM a 384 KiB cache). ``system_config=``, ``memory_mode=``,
``config=`` (Vela .ini files), ``optimise=`` and ``arena_cache_size=`` choose others.
"""

from __future__ import annotations

import configparser
import csv
import hashlib
import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..infra import children
from ..infra.errors import ExportError, ToolchainError, unknown_name
from ..export.exporters import DEPLOYMENT_COLUMNS, EXPORTERS, Target, find_module_spec, module_installed, register_exporter
from ..infra.fileio import atomic_write_bytes

if TYPE_CHECKING:  # annotations only: importing the target (which registers it) needs no torch
    from torch import nn

HEADLINE = "ethos-u55-128"
#: Weight bits an Ethos-U target takes: 8-bit weights as int8, 2..7-bit codes in int8 containers.
CONTAINER_BITS = range(2, 9)
VELA_MODULE = "ethosu.vela"
OPTIMISE = ("Performance", "Size")
#: What the tests and the docs saw in ``ethos-u-vela`` 5.2 (used only when Vela is not installed,
#: so the targets are still listed and ``available()`` names the extra to install).
_KNOWN_WITHOUT_VELA = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
                       "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")


def _vela_installed() -> bool:
    return module_installed(VELA_MODULE)


def _configs_from_source() -> tuple[str, ...] | None:
    """The values of Vela's ``Accelerator`` enum read from its source file, without importing Vela
    (importing this module registers the targets, and ``workbench targets`` / ``exporters`` import
    no toolchain); None where the file is not a plain enum of strings (then Vela is imported)."""
    import ast

    try:
        origin = find_module_spec("ethosu.vela.architecture_features").origin
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - any surprise: ask Vela itself
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Accelerator":
            values = [s.value.value for s in node.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)]
            members = [s for s in node.body if isinstance(s, ast.Assign)]
            if values and len(values) == len(members) and all(isinstance(v, str) for v in values) and len(set(values)) == len(values):
                return tuple(values)
    return None


def vela_configs() -> tuple[str, ...]:
    """The accelerator configurations the installed Vela knows (``ethos-u55-128``, ...), in Vela's order."""
    if not _vela_installed():
        return _KNOWN_WITHOUT_VELA
    configs = _configs_from_source()
    if configs is not None:
        return configs
    from ethosu.vela.architecture_features import Accelerator

    return tuple(Accelerator.member_list())


def vela_version() -> str | None:
    if not _vela_installed():
        return None
    from ethosu.vela import __version__

    return str(__version__)


def _default_ini() -> Path:
    from ethosu.vela.architecture_features import CONFIG_FILES_PATH

    return Path(CONFIG_FILES_PATH) / "Arm" / "vela.ini"


def _ini_sections(files: list[str]) -> tuple[list[str], list[str]]:
    """``(system configurations, memory modes)`` defined in Vela .ini ``files``."""
    parser = configparser.ConfigParser()
    parser.read(files)
    systems = [s.split(".", 1)[1] for s in parser.sections() if s.startswith("System_Config.")]
    modes = [s.split(".", 1)[1] for s in parser.sections() if s.startswith("Memory_Mode.")]
    return systems, modes


# --------------------------------------------------------------------------- the compile report


@dataclass
class VelaResult:
    """What one Vela compile reported.

    ``config``: the accelerator configuration; ``system_config`` / ``memory_mode``: those Vela
    used; ``clock_hz``: the NPU clock of that system configuration; ``cycles``: total cycles of one
    inference (NPU and memory access overlapped, Vela's ``cycles_total``); ``inference_ms``:
    cycles at the clock; ``sram_bytes`` / ``dram_bytes`` / ``on_chip_flash_bytes`` /
    ``off_chip_flash_bytes``: memory used in each area; ``weights_area`` /
    ``feature_map_area``: where Vela placed weights and feature maps; ``npu_ops`` / ``cpu_ops``:
    Vela's operator counts (its own graph, after it splits and fuses the TFLite operators);
    ``fallbacks``: one dict per CPU operator (``op``, ``name``, ``layer``, ``reason``); ``layers``:
    the per-layer table (:func:`vela_layers`); ``summary``: Vela's summary CSV row as read;
    ``input_ops``: the TFLite operators of the input file; ``compiled_bytes`` / ``sha256``: the
    compiled file; ``log``: Vela's printed report."""

    config: str
    system_config: str
    memory_mode: str
    clock_hz: float
    cycles: int
    inference_ms: float
    sram_bytes: int
    dram_bytes: int
    on_chip_flash_bytes: int
    off_chip_flash_bytes: int
    weights_area: str
    feature_map_area: str
    npu_ops: int
    cpu_ops: int
    macs: int
    fallbacks: list[dict]
    layers: object  # pandas.DataFrame
    summary: dict
    input_ops: list[str]
    compiled_bytes: int
    sha256: str
    vela_version: str | None
    log: str = field(repr=False, default="")

    @property
    def flash_bytes(self) -> int:
        """Bytes used in the memory that holds the weights (off-chip flash on the Ethos-U55
        defaults; DRAM, shared with feature maps, on the Ethos-U65/U85 defaults)."""
        return {"Off-chip Flash": self.off_chip_flash_bytes, "On-chip Flash": self.on_chip_flash_bytes,
                "DRAM": self.dram_bytes, "SRAM": self.sram_bytes}.get(self.weights_area, self.off_chip_flash_bytes)

    @property
    def clock_mhz(self) -> float:
        return self.clock_hz / 1e6

    @property
    def unsupported(self) -> str:
        """Each CPU-fallback operator and Vela's reason, ``"; "``-joined ("" when all are on the NPU)."""
        return "; ".join(f"{f['op']} {f['layer']!r}: {f['reason']}" for f in self.fallbacks)


def _short_name(name: str) -> str:
    """A readable form of a TFLite tensor name: ``workbench.tasks.models.DSCNN/torch.nn.modules.conv.Conv2d_3;1``
    becomes ``Conv2d_3``; fused names (``a;;b;;c``) keep each distinct part, ``+``-joined."""
    parts = []
    for part in str(name).split(";;"):
        part = re.sub(r";\d*", "", part.strip()).rsplit("/", 1)[-1]
        part = re.sub(r"^(?:[A-Za-z_][\w]*\.)+", "", part)  # module path prefix: torch.nn.modules.conv.
        if part and part not in parts:
            parts.append(part)
    return "+".join(parts) or str(name)


_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'\s*$")


def _parse_fallbacks(log: str) -> dict[str, dict]:
    """``{ofm name: {"op", "name", "reason"}}`` from Vela's "Warning (supported operators)"
    blocks: the ``Reason:`` line and the constraint text printed under it."""
    out: dict[str, dict] = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        m = _WARNING.match(line)
        if not m:
            continue
        reason, extra = "", []
        for nxt in lines[i + 1:]:
            if not nxt.strip() or _WARNING.match(nxt):
                break
            if nxt.startswith("Reason:"):
                reason = nxt[len("Reason:"):].strip()
            else:
                extra.append(nxt.strip())
        text = reason or "no reason given"
        if extra:
            text += f" ({' '.join(extra)})"
        out.setdefault(m.group(2), {"op": m.group(1), "name": m.group(2), "reason": text})
    return out


def _count(log: str, where: str) -> int | None:
    m = re.search(rf"^{where} operators = (\d+)", log, re.M)
    return int(m.group(1)) if m else None


def _number(value: str):
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return int(f) if f.is_integer() and "." not in value and "e" not in value.lower() else f


LAYER_COLUMNS = ("layer", "name", "original_op", "op", "placed", "cycles", "cycles_percent", "macs", "macs_percent",
                 "mac_util_percent", "npu_cycles", "sram_access_cycles", "staging_sram_bytes", "staging_peak_percent", "reason")
_CSV_COLUMNS = {"Original Operator": "original_op", "NNG Operator": "op", "Target": "placed", "Staging Usage": "staging_sram_bytes",
                "Peak% (Staging)": "staging_peak_percent", "Op Cycles": "cycles", "Network% (cycles)": "cycles_percent", "NPU": "npu_cycles",
                "SRAM AC": "sram_access_cycles", "MAC Count": "macs", "Network% (MAC)": "macs_percent", "Util% (MAC)": "mac_util_percent",
                "Name": "name"}


def _read_layers(csv_path: Path | None, fallbacks: dict[str, dict]):
    import pandas as pd

    if csv_path is None:
        return pd.DataFrame(columns=list(LAYER_COLUMNS))
    table = pd.read_csv(csv_path)
    table = table.rename(columns=_CSV_COLUMNS)
    table["placed"] = table["placed"].astype(str).str.lower()
    table["layer"] = table["name"].map(_short_name)
    table["reason"] = [fallbacks.get(n, {}).get("reason") if p == "cpu" else None for n, p in zip(table["name"], table["placed"])]
    for col in LAYER_COLUMNS:
        if col not in table.columns:
            table[col] = None
    return table[list(LAYER_COLUMNS)].reset_index(drop=True)


def _tflite_facts(path: Path) -> dict:
    """The builtin operator names of a TFLite file's first subgraph and its INT4 tensors (read with
    Vela's own flatbuffer schema; ``ops`` None where the flatbuffer does not read, left for Vela to
    report). A file without the TFLite identifier is a ToolchainError."""
    from ethosu.vela.tflite.BuiltinOperator import BuiltinOperator
    from ethosu.vela.tflite.Model import Model
    from ethosu.vela.tflite.TensorType import TensorType

    ops_by_code = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ToolchainError(f"{str(path)!r} is not a TFLite file (no 'TFL3' identifier); Vela compiles an int8 .tflite file")
    try:
        model = Model.GetRootAsModel(data, 0)
        sg = model.Subgraphs(0)
        ops = []
        for i in range(sg.OperatorsLength()):
            code = model.OperatorCodes(sg.Operators(i).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            ops.append(code.CustomCode().decode() if builtin == BuiltinOperator.CUSTOM and code.CustomCode() else ops_by_code.get(builtin, str(builtin)))
        int4 = [sg.Tensors(i).Name().decode(errors="replace") for i in range(sg.TensorsLength()) if sg.Tensors(i).Type() == TensorType.INT4]
    except Exception:  # a corrupt flatbuffer raises whatever the generated reader hits: Vela says what is wrong
        return {"ops": None, "int4": []}
    return {"ops": ops, "int4": int4}


def _vela_failure(proc: subprocess.CompletedProcess, source: Path, config: str) -> ToolchainError:
    """One line: Vela's own last message (a Python traceback's last line, or the last line it
    printed that is not one of its default-configuration warnings), or the signal that killed it."""
    said = [ln.strip() for ln in (proc.stdout or "").splitlines() if ln.strip() and not ln.startswith(("Warning: No ", "#"))]
    err = proc.stderr or ""
    if "Traceback" in err:  # the exception line: the last unindented line of the traceback
        said += [ln.strip() for ln in err.splitlines() if ln.strip() and not ln.startswith((" ", "Traceback"))][-1:]
    else:
        said += [ln.strip() for ln in err.splitlines() if ln.strip() and not ln.startswith("Warning: No ")]
    message = "; ".join(dict.fromkeys(said[-2:]))
    if proc.returncode < 0:
        try:
            how = f"killed by {signal.Signals(-proc.returncode).name}"
        except ValueError:
            how = f"killed by signal {-proc.returncode}"
    else:
        how = f"exited with status {proc.returncode}"
    tail = f": {message[:300]}" if message else " and printed no message"
    return ToolchainError(f"Vela {vela_version() or ''} failed on {source.name!r} for {config}: {how}{tail}".replace("Vela  ", "Vela "))


def compile_vela(tflite_path: str | os.PathLike, config: str = HEADLINE, out_path: str | os.PathLike | None = None, *,
                 system_config: str | None = None, memory_mode: str | None = None, config_files: list[str] | str | None = None,
                 optimise: str | None = None, arena_cache_size: int | None = None, timeout_s: float = 600) -> VelaResult:
    """Compile the int8 TFLite file ``tflite_path`` with Vela for accelerator ``config`` and return
    its report; with ``out_path``, also write the compiled ``*_vela.tflite`` there (atomically, the
    only file written outside a temporary directory).

    ``system_config`` / ``memory_mode``: sections of the Vela .ini files (``config_files``; Vela's
    ``Arm/vela.ini`` when None) - None: Vela's default for the accelerator. ``optimise``:
    ``Performance`` (Vela's default) or ``Size``. Every option is checked before Vela runs (one-line
    errors listing the known values); a TFLite file with INT4 tensors is refused (Vela needs int8
    weight tensors; Vela 5.2 dies of a floating point exception on one: write 4-bit weights in
    int8 containers, ``export_tflite_int8(..., weight_container="int8")``). A Vela failure is one-line
    :class:`ToolchainError` with Vela's own message."""
    if not _vela_installed():
        raise ToolchainError("the Ethos-U targets need the Python module 'ethosu.vela', which is not installed; "
                             "install the extra: pip install 'workbench[targets]'")
    config = _check_config(config)
    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files or [])
    for f in files:
        if not Path(f).is_file():
            raise ExportError(f"Vela config file {str(f)!r} does not exist; pass .ini files in Vela's format (or None for its Arm/vela.ini)")
    systems, modes = _ini_sections([str(f) for f in files] or [str(_default_ini())])
    if files and (system_config is None or memory_mode is None):
        raise ExportError("config_files= needs system_config= and memory_mode= too (Vela refuses its default configuration beside a config file)")
    if system_config is not None and system_config not in systems:
        raise ExportError(unknown_name("Vela system configuration", system_config, systems))
    if memory_mode is not None and memory_mode not in modes:
        raise ExportError(unknown_name("Vela memory mode", memory_mode, modes))
    if optimise is not None and optimise not in OPTIMISE:
        raise ExportError(unknown_name("Vela optimise strategy", optimise, OPTIMISE))
    if arena_cache_size is not None and (isinstance(arena_cache_size, bool) or not isinstance(arena_cache_size, int) or arena_cache_size <= 0):
        raise ExportError(f"arena_cache_size {arena_cache_size!r}; expected a positive number of bytes")
    source = Path(tflite_path)
    if not source.is_file():
        raise ExportError(f"tflite_path {str(source)!r} does not exist; pass an int8 .tflite file")
    facts = _tflite_facts(source)
    if facts["int4"]:
        raise ExportError(f"{source.name!r} holds INT4 tensors ({facts['int4'][0]!r}...): Vela needs int8 weight tensors on every Ethos-U "
                          f"('Weight tensors must be 8-bit precision'), and Vela 5.2 crashes (floating point exception) on INT4 weights; "
                          f"write the file with int8 weight containers (export_tflite_int8(..., weight_container='int8'))")

    with children.temp_dir("workbench-vela-") as tmp:
        work = Path(tmp)
        network = work / "model.tflite"
        shutil.copyfile(source, network)
        out_dir = work / "out"
        cmd = [sys.executable, "-m", VELA_MODULE, str(network), "--accelerator-config", config, "--output-dir", str(out_dir),
               "--verbose-performance", "--show-cpu-operations"]
        for f in files:
            cmd += ["--config", str(Path(f).resolve())]
        if system_config is not None:
            cmd += ["--system-config", system_config]
        if memory_mode is not None:
            cmd += ["--memory-mode", memory_mode]
        if optimise is not None:
            cmd += ["--optimise", optimise]
        if arena_cache_size is not None:
            cmd += ["--arena-cache-size", str(arena_cache_size)]
        try:
            proc = children.run(cmd, cwd=work, timeout=timeout_s)  # Vela and all it starts die with this run
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"Vela did not finish compiling {source.name!r} for {config} within {timeout_s:g} s") from None
        compiled = out_dir / "model_vela.tflite"
        summaries = sorted(out_dir.glob("model_summary_*.csv"))
        if proc.returncode != 0 or not compiled.is_file() or not summaries:
            raise _vela_failure(proc, source, config)
        log = proc.stdout
        fallbacks = _parse_fallbacks(log)
        per_layer = out_dir / "model_per-layer.csv"
        layers = _read_layers(per_layer if per_layer.is_file() else None, fallbacks)
        with open(summaries[0], newline="") as f:
            rows = list(csv.DictReader(f))
        data = compiled.read_bytes()
    if not rows:
        raise ToolchainError(f"Vela wrote an empty summary for {source.name!r} ({config}); expected one row")
    s = {k: _number(v) for k, v in rows[0].items()}
    kib = lambda key: int(round(float(s.get(key) or 0) * 1024))  # noqa: E731 - Vela reports memory in KiB
    cpu_rows = layers[layers["placed"] == "cpu"] if len(layers) else layers
    fallback_list = []
    for r in cpu_rows.itertuples():
        got = fallbacks.get(r.name, {})
        fallback_list.append({"op": got.get("op") or r.original_op, "name": r.name, "layer": r.layer,
                              "reason": got.get("reason") or "placed on the CPU by Vela (no reason printed)"})
    listed = set(cpu_rows["name"]) if len(cpu_rows) else set()
    for name, got in fallbacks.items():  # a warned operator with no per-layer row (none seen in Vela 5.2)
        if name not in listed:
            fallback_list.append({**got, "layer": _short_name(name)})
    npu_ops = _count(log, "NPU")
    cpu_ops = _count(log, "CPU")
    clock = float(s["core_clock"])
    cycles = int(s["cycles_total"])
    result = VelaResult(
        config=config, system_config=str(s["system_config"]), memory_mode=str(s["memory_mode"]), clock_hz=clock, cycles=cycles,
        inference_ms=float(s["inference_time"]) * 1e3, sram_bytes=kib("sram_memory_used"), dram_bytes=kib("dram_memory_used"),
        on_chip_flash_bytes=kib("on_chip_flash_memory_used"), off_chip_flash_bytes=kib("off_chip_flash_memory_used"),
        weights_area=str(s["weights_storage_area"]), feature_map_area=str(s["feature_map_storage_area"]),
        npu_ops=npu_ops if npu_ops is not None else int((layers["placed"] == "npu").sum()),
        cpu_ops=cpu_ops if cpu_ops is not None else len(cpu_rows), macs=int(s.get("nn_macs") or 0),
        fallbacks=fallback_list, layers=layers, summary=s,
        input_ops=facts["ops"] or [], compiled_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), vela_version=vela_version(), log=log)
    if out_path is not None:
        atomic_write_bytes(out_path, data)
        _REPORTS[result.sha256] = result
    return result


#: Reports of the files compiled in this process, by the compiled file's SHA-256 (a run folder is
#: built aside and moved into place, so paths change): the compiled file does not hold Vela's
#: estimates, and the output folder holds nothing but the compiled file.
_REPORTS: dict[str, VelaResult] = {}


def _report_for(path: str | os.PathLike) -> VelaResult | None:
    path = Path(path)
    if not path.is_file():
        return None
    return _REPORTS.get(hashlib.sha256(path.read_bytes()).hexdigest())


def _as_result(path_or_result, config: str | None = None, **options) -> VelaResult:
    if isinstance(path_or_result, VelaResult):
        return path_or_result
    got = _report_for(path_or_result)
    if got is not None:
        return got
    path = Path(path_or_result)
    if path.is_file() and "ethos-u" not in (_tflite_facts(path)["ops"] or ()):
        return compile_vela(path, config or HEADLINE, **options)  # an uncompiled int8 TFLite: compile it (nothing written)
    raise ExportError(f"no Vela report for {str(path)!r}: pass a VelaResult, a file a Vela target compiled in this process, "
                      f"or the int8 .tflite to compile")


def vela_layers(path_or_result, config: str | None = None, **options):
    """Per layer of Vela's graph (a DataFrame): ``layer`` (short name), ``name`` (TFLite tensor
    name), ``original_op`` (the TFLite operator), ``op`` (Vela's operator), ``placed`` (``npu`` /
    ``cpu``), ``cycles``, ``cycles_percent`` (of the network), ``macs``, ``macs_percent``,
    ``mac_util_percent``, ``npu_cycles``, ``sram_access_cycles``, ``staging_sram_bytes`` /
    ``staging_peak_percent`` (SRAM staging use), ``reason`` (why a CPU operator fell back).

    ``path_or_result``: a :class:`VelaResult`, a file a Vela target compiled in this process, or
    an int8 ``.tflite`` (compiled for ``config``, ``ethos-u55-128`` by default, nothing written)."""
    return _as_result(path_or_result, config, **options).layers.copy()


def vela_summary(path_or_result, config: str | None = None, **options) -> dict:
    """The whole-network figures of a Vela compile (same arguments as :func:`vela_layers`):
    accelerator and system configuration, clock, cycles, inference time, memory used per area,
    operator counts, MACs, fallbacks, the input's TFLite operators and the compiled file's size."""
    r = _as_result(path_or_result, config, **options)
    return {"config": r.config, "system_config": r.system_config, "memory_mode": r.memory_mode, "clock_mhz": r.clock_mhz,
            "cycles": r.cycles, "cycles_npu": int(r.summary.get("cycles_npu") or 0), "inference_ms": r.inference_ms,
            "inferences_per_second": float(r.summary.get("inferences_per_second") or 0), "sram_bytes": r.sram_bytes,
            "flash_bytes": r.flash_bytes, "weights_area": r.weights_area, "feature_map_area": r.feature_map_area,
            "dram_bytes": r.dram_bytes, "on_chip_flash_bytes": r.on_chip_flash_bytes, "off_chip_flash_bytes": r.off_chip_flash_bytes,
            "npu_ops": r.npu_ops, "cpu_ops": r.cpu_ops, "npu_fraction": r.npu_ops / (r.npu_ops + r.cpu_ops) if r.npu_ops + r.cpu_ops else math.nan,
            "macs": r.macs, "unsupported": r.unsupported, "fallbacks": list(r.fallbacks), "input_ops": len(r.input_ops),
            "input_op_types": sorted(set(r.input_ops)), "original_weight_bytes": int(r.summary.get("total_original_weights") or 0),
            "encoded_weight_bytes": int(r.summary.get("total_npu_encoded_weights") or 0), "compiled_bytes": r.compiled_bytes,
            "sha256": r.sha256, "vela_version": r.vela_version}


# --------------------------------------------------------------------------- what the NPU takes


def _check_config(name) -> str:
    known = vela_configs()
    if not isinstance(name, str) or name not in known:
        raise ExportError(unknown_name("Ethos-U accelerator config", name, known))
    return name


def get_vela_target(name: str) -> "VelaTarget":
    """The registered Ethos-U target for accelerator configuration ``name`` (``ethos-u55-128``, ...);
    an unknown name is a one-line ExportError listing the known ones."""
    _check_config(name)
    return EXPORTERS[name]


def _layer_reason(lq) -> str | None:
    """Why Vela cannot carry the resolved settings ``lq`` of one layer (None: it can)."""
    if lq.weight_bits is not None and lq.weight_format != "int":
        return (f"weight_format {lq.weight_format!r}: Ethos-U NPUs compute in integers only (int8 weights, int8 or int16 activations); "
                f"Vela has no FP8 type")
    if lq.act_bits is not None and lq.act_format != "int":
        return f"act_format {lq.act_format!r}: Ethos-U NPUs take int8 or int16 activations only; Vela has no FP8 type"
    if lq.weight_bits is not None and lq.weight_bits not in CONTAINER_BITS:
        return (f"weight_bits {lq.weight_bits}: Vela needs int8 weight tensors on every Ethos-U ('Weight tensors must be 8-bit "
                f"precision'); weights of 2 to 8 bits are stored in int8 containers")
    if lq.act_bits is not None and lq.act_bits not in (8, 16):
        return f"act_bits {lq.act_bits}: Ethos-U NPUs take int8 or int16 activations (8 or 16 bits)"
    if lq.dynamic:
        return "act_mode 'dynamic': Ethos-U needs activation scales fixed at compile time (static)"
    return None


class VelaTarget(Target):
    """An Arm Ethos-U NPU compiled for by Vela, one instance per accelerator configuration."""

    requires = (VELA_MODULE,)
    depends_on = ("tflite-int8",)  # compiles that target's file (workbench.runs.deploy adds it first)
    carries = "2..8-bit weights in int8 tensors (per-channel), int8 or int16 activations, via an int8 TFLite file"
    max_bits = 16
    needs_float_model = True

    def __init__(self, config: str = HEADLINE):
        self.name = config
        self.suffix = f".{config}.tflite"
        self.config = config
        self.runtime = f"vela ({config})"
        self.verified_by = f"Vela's performance estimate for {config} (the compiled file runs only on the NPU)"
        family, macs = config.split("-")[1:3]
        self.description = f"Arm Ethos-{family.upper()} NPU, {macs} MACs/cycle: an int8 TFLite file compiled by Vela"

    @property
    def label(self) -> str:
        return f"Vela ({self.config})"

    def support(self, qmodel: nn.Module):
        """One row per quantised layer: ``layer``, ``op``, ``supported``, ``reason`` (integer
        weights of 2 to 8 bits are taken, those under 8 bits as their codes in int8 containers;
        FP8 formats, weights of 1 or more than 8 bits, activations other than 8 or 16 bits and
        run-time activation scales are refused; float layers are taken, since the int8 TFLite file
        quantises them)."""
        import pandas as pd

        plan = getattr(qmodel, "workbench_plan", None)
        rows = []
        for name, lq in (plan.layers.items() if plan is not None else ()):
            try:
                op = type(qmodel.get_submodule(name)).__name__
            except AttributeError:
                op = None
            refused = _layer_reason(lq)
            reason = refused
            if refused is None and lq.weight_bits is None and lq.act_bits is None:
                reason = "float in the spec: the int8 TFLite file quantises it to int8 (Vela places a float operator on the CPU)"
            elif refused is None and lq.weight_bits is not None and lq.weight_bits < 8:
                reason = f"{lq.weight_bits}-bit weight codes in an int8 container"
            rows.append({"layer": name, "op": op, "supported": refused is None, "reason": reason})
        return pd.DataFrame(rows, columns=["layer", "op", "supported", "reason"])

    def export(self, qmodel, example, path, tflite_path=None, float_model=None, calib=None, system_config=None, memory_mode=None,
               config_files=None, optimise=None, arena_cache_size=None, **options) -> Path:
        """Compile ``tflite_path`` (an int8 TFLite file of the model) for this NPU into ``path``.
        Without ``tflite_path``, the ``tflite-int8`` target's file (``artifacts``, when it holds no
        INT4 tensors) or one built from ``float_model`` with int8 weight containers (calibrated on
        ``calib``, else on the task's calibration split, else on ``example``) in a temporary
        directory. Only ``path`` is written, atomically."""
        self.check(qmodel)
        vela_options = {"system_config": system_config, "memory_mode": memory_mode, "config_files": config_files, "optimise": optimise,
                        "arena_cache_size": arena_cache_size}
        if tflite_path is None:  # built before it by export_and_verify; its 4-bit weights are INT4, which Vela cannot take
            built = options.get("artifacts", {}).get("tflite-int8")
            if built is not None and not (Path(built).is_file() and _tflite_facts(Path(built))["int4"]):
                tflite_path = built
        if calib is None and options.get("task") is not None:
            calib = options["task"].data.calib.x
        if tflite_path is not None:
            compile_vela(tflite_path, self.config, path, **vela_options)
            return Path(path)
        if float_model is None:
            raise ExportError(f"target {self.name!r} compiles an int8 TFLite file: pass tflite_path= (the tflite-int8 export) or float_model= to build one")
        from .tflite.convert import export_tflite_int8

        with children.temp_dir("workbench-vela-tflite-") as tmp:
            int8 = Path(tmp) / "model.int8.tflite"
            export_tflite_int8(qmodel, float_model, example, int8, calib=calib, weight_container="int8")
            compile_vela(int8, self.config, path, **vela_options)
        return Path(path)

    def evaluate(self, path, qmodel, task, tflite_rows=None, tflite_path=None, system_config=None, memory_mode=None, config_files=None,
                 optimise=None, arena_cache_size=None, **options) -> list[dict]:
        """One row: Vela's estimates for the compiled file ``path`` (exported by this target in
        this process, or recompiled from ``tflite_path``). ``tflite_rows`` (the ``tflite-int8``
        target's rows) give metric and agreement: the same int8 graph run by the TFLite
        interpreter; without them both are None, since nothing here runs the NPU."""
        self.available()
        if tflite_rows is None:  # export_and_verify: the rows of the targets built before this one
            tflite_rows = [r for r in options.get("rows", {}).values() if r.get("target") == "tflite-int8"] or None
        if tflite_path is None:
            tflite_path = options.get("artifacts", {}).get("tflite-int8")
        result = _report_for(path)
        if result is None and tflite_path is not None:
            result = compile_vela(tflite_path, self.config, system_config=system_config, memory_mode=memory_mode, config_files=config_files,
                                  optimise=optimise, arena_cache_size=arena_cache_size)
        if result is None:
            raise ExportError(f"no Vela report for {str(path)!r}: evaluate a file target {self.name!r} exported in this process, "
                              f"or pass tflite_path= (the int8 TFLite it was compiled from)")
        if result.config != self.config:
            raise ExportError(f"{str(path)!r} was compiled for {result.config}, not {self.config}; evaluate it with target {result.config!r}")
        row = {k: None for k in DEPLOYMENT_COLUMNS}
        ms = result.inference_ms
        row.update({
            "target": self.name, "runtime": self.runtime, "file_bytes": Path(path).stat().st_size if Path(path).is_file() else result.compiled_bytes,
            "ram_bytes": result.sram_bytes, "ram_source": f"Vela SRAM estimate ({result.memory_mode})",
            "latency_ms_p50": ms, "latency_ms_p99": ms, "latency_ms_max": ms, "jitter": 1.0, "cycles": result.cycles,
            "latency_source": f"estimated by Vela at {result.clock_mhz:g} MHz ({result.system_config})",
            "npu_ops": result.npu_ops, "cpu_ops": result.cpu_ops, "unsupported": result.unsupported, "artifact": Path(path).name,
        })
        peak = _peak_act_estimate(qmodel, task)
        if peak:
            row["peak_act_estimate_bytes"] = peak
            row["ram_vs_estimate"] = result.sram_bytes / peak
        source = _tflite_row(tflite_rows)
        if source is not None:
            row.update({k: source.get(k) for k in ("metric", "agreement", "max_lsb_diff", "samples")})
            row["notes"] = (f"metric and agreement of {source.get('target') or 'tflite-int8'} "
                            f"({source.get('runtime') or 'TFLite'}): the same int8 graph, not run on the NPU")
        row["flash_bytes"] = result.flash_bytes
        row["flash_source"] = f"Vela estimate: weights in {result.weights_area} ({result.system_config}, {result.memory_mode})"
        return [row]


    def verify(self, path, qmodel, task, **options) -> dict:
        """The row of :meth:`evaluate` under the target's name, and ``<name>_verified`` False: no
        runtime here runs the compiled file (its ``ethos-u`` operator needs the NPU)."""
        out = super().verify(path, qmodel, task, **options)
        out[f"{self.name}_verified"] = False
        out[f"{self.name}_unverified_reason"] = (f"the compiled file runs only on an {self.config} NPU; the figures are Vela's estimates "
                                                  f"(metric and agreement from the tflite-int8 rows where given)")
        return out


def _tflite_row(rows) -> dict | None:
    if not rows:
        return None
    rows = list(rows)
    named = [r for r in rows if str(r.get("target", "")).startswith("tflite")]
    return (named or rows)[0]


def _peak_act_estimate(qmodel, task) -> int | None:
    """The workbench's peak activation estimate of ``qmodel`` (:func:`workbench.targets.tflite.peak_act_estimate_bytes`):
    what ``ram_vs_estimate`` compares Vela's SRAM with; None without a workbench plan or task."""
    if qmodel is None or task is None or getattr(qmodel, "workbench_plan", None) is None:
        return None
    from .tflite.runtime import peak_act_estimate_bytes

    return peak_act_estimate_bytes(qmodel, task.example_input()) or None


for _config in vela_configs():
    register_exporter(VelaTarget(_config))
