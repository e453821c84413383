"""``Runner``: long work started by a button runs in a background thread, so the page stays live.

While it runs the button is disabled and says so ("Running..."), a Cancel button is shown, and
any other controls named are disabled; a second click cannot queue a second run. The work calls
``runner.check()`` between units (rows, candidates, epochs): after Cancel it raises
:class:`Cancelled`, so the run stops at the next unit boundary (finished units stay in the result
store, and the next run resumes from them). An error ends the run with a one-line message for
the widget (``on_error``), never a traceback in the output area.

``run()`` methods stay synchronous for notebooks and scripts (a cell waits for them; the
kernel's interrupt stops them); buttons call ``start()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from workbench.infra.errors import WorkbenchError


class Cancelled(WorkbenchError):
    """The user pressed Cancel; the run stopped between two units of work."""


class Runner:
    def __init__(self, button: W.Button, *, running: str = "Running...", controls: tuple[W.Widget, ...] = ()):
        self.button = button
        self.idle_description = button.description
        self.running_description = running
        self.controls = controls
        self.cancel_button = W.Button(description="Cancel", icon="stop", button_style="warning", layout=W.Layout(display="none", width="auto"))
        self.cancel_button.on_click(lambda _: self.cancel())
        self._cancel = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def cancel(self) -> None:
        """Ask the running work to stop at its next ``check()``."""
        if self.running:
            self._cancel.set()
            self.cancel_button.description = "Cancelling..."
            self.cancel_button.disabled = True

    def check(self) -> None:
        """Raise :class:`Cancelled` if Cancel was pressed (call between units of work)."""
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user; the finished units are kept and a new run resumes from them")

    def _busy(self, busy: bool) -> None:
        self.button.disabled = busy
        self.button.description = self.running_description if busy else self.idle_description
        for c in self.controls:
            c.disabled = busy
        self.cancel_button.disabled = False
        self.cancel_button.description = "Cancel"
        self.cancel_button.layout.display = "" if busy else "none"

    def start(self, work: Callable[[], Any], on_error: Callable[[str], None], on_done: Callable[[Any], None] | None = None,
              background: bool = True) -> threading.Thread | None:
        """Run ``work()`` then ``on_done(result)`` (in a thread unless ``background`` is False); ignored
        while a run is going. ``on_error(message)`` gets a one-line message for any failure of
        either, Cancel included."""
        if self.running:
            return None
        self._cancel.clear()
        self._busy(True)

        def go():
            try:
                result = work()
                if on_done is not None:
                    on_done(result)
            except Exception as exc:  # shown in the widget (a thread has no output area: a traceback would land in the log)
                on_error(one_line(exc))
            finally:
                self._busy(False)

        if not background:
            go()
            return None
        self.thread = threading.Thread(target=go, name=f"workbench-{self.idle_description}", daemon=True)
        self.thread.start()
        return self.thread

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running work (tests and scripts)."""
        if self.thread is not None:
            self.thread.join(timeout)


def one_line(exc: BaseException) -> str:
    """``exc`` as one line for a widget: the workbench's own errors as they read, others with their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {text}"


def message_html(text: str, kind: str = "error") -> str:
    """A short coloured message for an ``HTML`` widget (errors red, notes grey)."""
    import html

    color = {"error": "#c0392b", "note": "#666", "stale": "#b26b00"}.get(kind, "#666")
    return f"<span style='color:{color}'>{html.escape(text)}</span>"


class RunnerWidget:
    """Mixin of the widgets whose button work runs on a :class:`Runner`: what they show when the
    work fails or is cancelled. A widget has ``status`` and ``message`` (an HTML line), and says
    where it stands (:meth:`_done_text`), what is kept (:meth:`_kept_text`) and which label shows
    its status (:meth:`_status_label`)."""

    def _done_text(self) -> str:
        raise NotImplementedError

    def _kept_text(self) -> str:
        raise NotImplementedError

    def _status_label(self) -> W.Widget:
        raise NotImplementedError

    def _after_cancel(self) -> None:
        """Redraw what depends on the status (nothing by default)."""

    def _run_cancellable(self):
        """:meth:`run`, with Cancel shown as a note (what is done and what is kept), not an error."""
        try:
            return self.run()
        except Cancelled:
            self.status = f"cancelled after {self._done_text()} ({self._kept_text()})"
            self._status_label().value = self.status
            self.message.value = message_html(self.status, "note")
            self._after_cancel()
            return None

    def _failed(self, text: str) -> None:
        self.status = f"error: {text}"
        self.message.value = message_html(text)


class SweepWidget(RunnerWidget):
    """A :class:`RunnerWidget` whose units are result-store rows (``rows_done`` of ``total``)."""

    def _done_text(self) -> str:
        return f"{self.rows_done}/{self.total} rows"

    def _kept_text(self) -> str:
        return "kept in the result store; Run sweep resumes from them" if self.store is not False else "not kept (no result store)"

    def _status_label(self) -> W.Widget:
        return self.progress_label
