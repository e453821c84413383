"""Runner: button work in a background thread; whatever fails (the work or what shows its result)
reaches the widget as one line, never a thread traceback; the button is busy until it ends."""

import threading

import ipywidgets as W

import workbench as wb
from widgets.background import Cancelled, Runner


def _hook():
    seen = []
    old = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.exc_value)
    return seen, old


def test_a_failure_after_the_work_is_one_line_in_the_widget_not_a_thread_traceback():
    runner = Runner(W.Button(description="Promote"), running="Promoting...")
    errors = []
    seen, uncaught_old = _hook()
    try:
        def shown(_):
            raise wb.runs.RecipeError("task 'mine' was built inline\nand has no importable factory")

        go = threading.Event()
        runner.start(lambda: go.wait(10), errors.append, shown)
        assert runner.button.disabled and runner.button.description == "Promoting..."
        go.set()
        runner.join()
    finally:
        threading.excepthook = uncaught_old
    assert seen == [] and errors == ["task 'mine' was built inline and has no importable factory"]
    assert not runner.button.disabled and runner.button.description == "Promote" and runner.cancel_button.layout.display == "none"


def test_cancel_stops_the_work_at_its_next_check_and_a_second_click_is_ignored():
    runner = Runner(W.Button(description="Run sweep"))
    started, release, errors, done = threading.Event(), threading.Event(), [], []

    def work():
        started.set()
        release.wait(10)
        runner.check()
        done.append("unit after cancel")

    runner.start(work, errors.append)
    started.wait(10)
    assert runner.start(work, errors.append) is None  # a double click queues nothing
    runner.cancel()
    release.set()
    runner.join()
    assert done == [] and errors and errors[0].startswith("cancelled by the user")
    assert issubclass(Cancelled, wb.WorkbenchError)
