"""Serve the compression dashboard with Voila, locked: ``make dashboard`` runs this.

    .venv/bin/python scripts/serve_dashboard.py [--port 8866] [--cull-idle-s 600] [--cull-interval-s 60] [NOTEBOOK]

- **A token, fresh per start** (``secrets``), printed once to the terminal as the URL to open,
  ``http://127.0.0.1:PORT/?token=...``, as Jupyter does; the browser then holds a login cookie.
  It is written nowhere else (not on the command line, not in a file; the access log scrubs it).
  With ``WORKBENCH_DASHBOARD_PASSWORD`` set, there is no token: the page asks for that password.
- **Loopback only**: it listens on 127.0.0.1 and answers only a ``Host`` of ``localhost`` or a
  loopback address (``127.0.0.1``, ``[::1]``), so a web page that rebinds its own name to
  127.0.0.1 (DNS rebinding) gets 403. Voila 0.5 turns Jupyter Server's Host check off
  (``allow_remote_access=True``) and serves its static files without it; both are undone here.
- **A kernel only for a logged-in request**: every page and kernel route needs the token, the
  login cookie or the password (anything else is redirected to ``/login`` or gets 403, and
  starts nothing); no file of the notebook's folder is served.
- **Idle kernels are culled**: a kernel idle for ``--cull-idle-s`` seconds with no page connected
  to it (a fetched page never opened, a closed tab) is shut down (Jupyter Server's culler, checked
  every ``--cull-interval-s``); an open dashboard keeps its kernel.

The lock is set after Voila has read the user's Jupyter config files, so none of them opens it.
The workbench itself never imports Jupyter; this script is the dashboard's only server entry.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "dashboards" / "compression_dashboard.ipynb"
PASSWORD_ENV = "WORKBENCH_DASHBOARD_PASSWORD"
HOST = "127.0.0.1"
RUN_PING_TIMEOUT = 6 * 3600 * 1000  # ms: how long the notebook's progressive run may take before Voila gives its socket up


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1 second")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the compression dashboard with Voila on 127.0.0.1, behind a token or a password.")
    parser.add_argument("notebook", nargs="?", type=Path, default=NOTEBOOK, help="the notebook to serve (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8866, help="the port to listen on (default %(default)s; the next free one if taken)")
    parser.add_argument("--cull-idle-s", type=_seconds, default=600, help="shut a kernel down after this many idle seconds with no page open (default %(default)s)")
    parser.add_argument("--cull-interval-s", type=_seconds, default=60, help="how often idle kernels are looked for (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.notebook.is_file():
        _fail(f"no notebook at {args.notebook}: give the path of an .ipynb file")
    password = os.environ.pop(PASSWORD_ENV, None)  # popped: the kernels inherit this process's environment
    if password is not None and not password.strip():
        _fail(f"{PASSWORD_ENV} is set but empty: set it to a password, or unset it to log in with a fresh token")
    try:
        import tornado.web
        from tornado.log import access_log
        from jupyter_server.auth.identity import PasswordIdentityProvider
        from jupyter_server.auth.security import passwd
        from jupyter_server.base.handlers import JupyterHandler
        from jupyter_server.log import log_request
        from voila.app import Voila as VoilaApp
        from voila.tornado.execution_request_handler import ExecutionRequestHandler
    except ImportError as e:
        _fail(f"the dashboard needs Voila ({e.name} is missing): pip install 'workbench[dashboard]'")

    class LoopbackOnly:
        """A Host check before a non-Jupyter handler (Voila's static files) answers; Jupyter's own
        handlers run JupyterHandler.check_host."""

        log = access_log

        def prepare(self):
            if not JupyterHandler.check_host(self):
                raise tornado.web.HTTPError(403)
            return super().prepare()

    class Voila(VoilaApp):  # the name its log lines carry
        token_in_url = ""

        @property
        def display_url(self):  # the URL printed once at start, holding the token as Jupyter's does
            url = self._url(self.ip)
            return f"{url}?token={self.token_in_url}" if self.token_in_url else f"{url} (log in with the password from {PASSWORD_ENV})"

        def init_handlers(self):
            handlers = []
            for pattern, handler, *rest in super().init_handlers():
                if not issubclass(handler, JupyterHandler):
                    handler = type(handler.__name__, (LoopbackOnly, handler), {})
                if handler is ExecutionRequestHandler:  # it runs the whole notebook inside one message, reading no pong meanwhile:
                    handler = type(handler.__name__, (handler,), {"ping_timeout": RUN_PING_TIMEOUT})  # a run over 90 s was cut off
                handlers.append((pattern, handler, *rest))
            return handlers

    app = Voila.instance()
    app.initialize([str(args.notebook), f"--port={args.port}", "--no-browser", f"--Voila.ip={HOST}", "--progressive_rendering=True"])
    # The lock, set after Voila read the user's config files.
    app.ip = HOST
    app.identity_provider_class = PasswordIdentityProvider
    if password is None:
        app.token = app.token_in_url = secrets.token_urlsafe(32)
    else:
        app.token = None  # Voila then passes token="": the password alone logs in
        app.config.PasswordIdentityProvider.hashed_password = passwd(password)
    app.auto_token = False
    app.config.PasswordIdentityProvider.allow_password_change = False  # the login form never writes a password into the user's Jupyter config
    app.tornado_settings = {**app.tornado_settings, "allow_remote_access": False, "local_hostnames": ["localhost"],
                            "log_function": log_request}  # Jupyter's access log: scrubs ?token=
    app.voila_configuration.file_allowlist = []  # /voila/files serves nothing (the dashboard has no files of its own)
    app.config.MappingKernelManager.cull_idle_timeout = args.cull_idle_s
    app.config.MappingKernelManager.cull_interval = args.cull_interval_s
    app.config.MappingKernelManager.cull_connected = False  # an open dashboard keeps its kernel
    app.config.MappingKernelManager.cull_busy = False  # a running sweep is not idle
    app.start()


if __name__ == "__main__":
    main()
