"""Exception types raised by the workbench.

Every error the workbench raises on bad input is a :class:`WorkbenchError` (itself a
``ValueError``) with a one-line message naming what was wrong and what was expected.
"""

from __future__ import annotations

import re

MAX_MESSAGE = 600

# ``scheme://user:password@host``: the userinfo part of a URI, never echoed
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@?#]*@")


def redact_uri(uri) -> str:
    """``uri`` as it may be echoed in a message: any ``user:password@`` in it replaced by ``***@``
    (``http://alice:s3cret@host:5000`` -> ``http://***@host:5000``; a bare ``user:pw@host:6379``
    Ray address -> ``***@host:6379``). Every message that shows a URI or an address passes it here."""
    text = _USERINFO.sub(r"\1***@", str(uri))
    if "://" not in text and "@" in text:
        text = "***@" + text.rpartition("@")[2]
    return text


class WorkbenchError(ValueError):
    """Base class of every documented workbench error."""

    def __init__(self, message: str):
        # One line, always: multi-line messages are folded so a CLI prints a single line.
        # Capped too, so an error never echoes a huge input back.
        text = _USERINFO.sub(r"\1***@", " ".join(str(message).split()))  # a URI's password never shows
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 15] + " ... (cut)"
        super().__init__(text)


class SpecError(WorkbenchError):
    """A quantisation spec is malformed or names layers the model does not have."""


class UnsupportedLayerError(WorkbenchError):
    """A spec asks to quantise a layer type the workbench cannot quantise."""


class DatasetError(WorkbenchError):
    """A dataset file is missing, corrupt, of the wrong shape or fails its checksum."""


class TaskError(WorkbenchError):
    """An unknown task name, or a task built from inconsistent parts."""


class CalibrationError(WorkbenchError):
    """Calibration data is empty or holds NaN / inf values."""


class ExportError(WorkbenchError):
    """A quantised model cannot be exported to the requested format."""


class ToolchainError(WorkbenchError):
    """A deployment target's toolchain is not installed (the message names the extra to install), or
    a third-party tool (a converter, compiler or emulator) failed: its own message, in one line,
    with the layer where it is known."""


class OutputPathError(WorkbenchError):
    """An output path would escape its output directory, or an output directory cannot be
    written: it is a file or a symlink, holds files the workbench did not write, is a protected
    folder (``.``, ``~``, ``/``, an ancestor of the working directory), is in use by another run,
    or the disk is full or read-only."""


class StoreError(WorkbenchError):
    """The result store cannot be opened or written (read-only, locked, on a full disk)."""


class PruningError(WorkbenchError):
    """A layer cannot be pruned as asked (it would break the graph or remove every channel), or
    Torch-Pruning cannot trace the model."""


class UserCodeError(TaskError):
    """The user's own code failed: a metric that raised or returned something other than one
    number, a model whose ``forward`` raised, a model or data factory that raised, a model whose
    weights are not on the CPU (the meta device, say). The message names the user's function as
    ``module:qualname`` and what it returned or raised."""


class CheckpointError(WorkbenchError):
    """A checkpoint is unreadable, or belongs to another model or training configuration."""


def unknown_name(what: str, name, known, listed: str = "known:", cutoff: float = 0.6) -> str:
    """``unknown <what> 'x' (did you mean 'y'?); known: a, b``: the one message of every registry
    lookup (formats, exporters, cost kinds). ``name`` is cut to about 200 characters."""
    import difflib

    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=cutoff)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    text = repr(name)
    text = text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"
    return f"unknown {what} {text}{hint}; {listed} {', '.join(known)}"


class MissingWeightsError(TaskError):
    """A model directory lacks weights its architecture or the asked kind needs (a task head the
    checkpoint does not hold, say): the workbench never initialises them at random unless asked
    (``load_hf_directory(..., new_head=True)``)."""
