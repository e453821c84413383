"""The QONNX writer (Quant nodes with arbitrary bit widths, for FPGA flows: FINN, hls4ml):
Brevitas's export cleaned up with qonnx, its weights then stored as integers
(:func:`workbench.export.packing.pack_qonnx_weights`) and its tensor names shortened. Batch 1."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import torch
from torch import nn

from .onnx_io import NAMES, _exporting
from .packing import pack_qonnx_weights, resolve_pack
from .rewrites import compact_qonnx_names


def export_qonnx(qmodel: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, pack: bool | str = True) -> Path:
    """QONNX (Quant nodes with arbitrary bit widths), cleaned up with qonnx, batch 1.

    ``pack=True`` (``"int4"``, the default) stores integer weights as integers at their bit width
    (:func:`workbench.export.packing.pack_qonnx_weights`: 2-4 bits two a byte, 5-8 bits int8, 9-16 bits int16) in front of
    the same Quant nodes: qonnx executes the file bit for bit as before, and qonnx's cleanup
    (FoldConstants) gives back float weight initialisers for FINN / hls4ml; tensor names are
    shortened (:func:`workbench.export.rewrites.compact_qonnx_names`; cleanup's GiveReadableTensorNames names them again).
    ``pack=False`` (``"none"``) writes Brevitas's float weights and names, as before. A bad
    ``pack`` is a one-line ExportError before any file is written."""
    from brevitas.export import export_qonnx as _export
    from qonnx.util.cleanup import cleanup

    mode = resolve_pack(pack)
    qmodel.eval()
    with _exporting(path, "QONNX") as tmp:
        _export(qmodel, args=example_input[:1], export_path=tmp, dynamo=False, **NAMES)
        cleanup(tmp, out_file=tmp)
        if mode != "none":
            model = onnx.load(tmp)
            pack_qonnx_weights(model, mode)
            compact_qonnx_names(model)
            onnx.save(model, tmp)
    return Path(path)
