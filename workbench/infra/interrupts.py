"""Ctrl-C always stops the ``workbench`` command: exit 130, one line, nothing half-written.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to be, and
libraries the workbench calls catch it there: a bare ``except:`` around an import inside torch or a
converter, an ``__del__`` or weakref callback (where Python only prints it), a C extension's module
init. The run then goes on (exit 0, its folder written) or fails with a confusing error. So the
command line keeps its own record: :func:`catch` installs a handler that notes the interrupt before
raising ``KeyboardInterrupt``, and :func:`check` raises it again wherever the workbench is about to
make a result final (:class:`~workbench.infra.outdir.RunDir` before moving a result folder into place),
so a swallowed Ctrl-C still ends the run with nothing written; the CLI then exits 130 whatever
error or success followed the interrupt.

While the workbench package itself is being imported by the ``workbench`` command (seconds of
torch, Brevitas and scipy imports, nothing written yet), Ctrl-C ends the process at once
(:func:`exit_while_loading`). Library users (notebooks, scripts) keep Python's own handler.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_CODE = 130
MESSAGE = "interrupted"
_SEEN = threading.Event()


def _exit_now(signum, frame) -> None:  # pragma: no cover - runs in the killed process
    try:
        os.write(2, f"{MESSAGE}\n".encode())
    finally:
        os._exit(EXIT_CODE)


def exit_while_loading() -> None:
    """Ctrl-C ends the process (exit 130, one line) until :func:`catch` takes over: for the
    ``workbench`` command's imports, where nothing has been written yet."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_now)


def _note_and_raise(signum, frame) -> None:
    _SEEN.set()
    raise KeyboardInterrupt


def catch() -> None:
    """From now on a Ctrl-C is noted (:func:`interrupted`) and raised as ``KeyboardInterrupt``."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _note_and_raise)


def interrupted() -> bool:
    """Whether a Ctrl-C arrived since :func:`catch` (False where it was never called)."""
    return _SEEN.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived, even one a library swallowed."""
    if _SEEN.is_set():
        raise KeyboardInterrupt


def run_command(call, *args, **kwargs):
    """``call(*args, **kwargs)`` (the typer app's standalone main, which exits) with Ctrl-C noted:
    an interrupt, even one a library swallowed before an error or a success followed, ends the
    process with exit 130 and the one line ``interrupted`` (typer alone exits 130 silently, and
    only when the ``KeyboardInterrupt`` reaches it)."""
    catch()
    try:
        return call(*args, **kwargs)
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        if interrupted() or isinstance(exc, KeyboardInterrupt) or (isinstance(exc, SystemExit) and exc.code == EXIT_CODE):
            sys.stderr.write(f"{MESSAGE}\n")
            _exit_interrupted()
        raise


def _exit_interrupted() -> None:  # pragma: no cover - ends the process
    """Exit 130 once the interrupt has unwound the workbench's own clean-up (its ``with`` blocks):
    the exit handlers run, then the process ends without the interpreter's finalisation. A Ctrl-C
    leaves library threads mid-call (onnxruntime's and TensorFlow's pools, tqdm's monitor), and
    finalising the interpreter under them can abort the process (SIGABRT, exit -6, seen once in
    a few hundred interrupted deploys) instead of exiting 130."""
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say
                pass
        os._exit(EXIT_CODE)


def is_workbench_command() -> bool:
    """Whether this process is the ``workbench`` console script (not a notebook, test or worker)."""
    return os.path.basename(sys.argv[0] if sys.argv else "") == "workbench"
