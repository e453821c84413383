"""MLflow tracking, off unless asked for (``pip install 'workbench[mlflow]'``).

Turn it on with a tracking URI: the ``tracking=`` argument of the sweeps, ``apply_recipe`` and
``train_qat``, the CLI's ``--mlflow URI``, or the ``WORKBENCH_MLFLOW`` environment variable.
``"local"`` is a SQLite store in the cache folder (``$WORKBENCH_CACHE/mlruns/mlflow.db``, artifacts
in ``mlruns/artifacts`` beside it), made when the first run is logged; any other value is an MLflow tracking URI (``http://host:5000``,
``sqlite:///path.db``, ...). An http(s) server that does not answer, or answers but is not an
MLflow server (its REST API is asked for the experiment), is a one-line :class:`TrackingError`
within seconds, before any work starts. A server that fails later, while a run is logged, is a
:class:`TrackingError` from :meth:`Tracker.log_run` (after a few retries) and a
:class:`TrackingWarning` from the sweeps and ``apply_recipe``, whose results are kept (the CLI
writes its files first, then tracks). A URI's ``user:password@`` is never shown in a message.

Each sweep, search, apply or QAT run becomes one MLflow run: its parameters (the spec, recipe
or configuration, flattened), its metrics (QAT: one step per epoch) and its artifacts (recipe,
CSV, ONNX, summary, report).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import WorkbenchError, redact_uri

ENV = "WORKBENCH_MLFLOW"
LOCAL_DIR = "mlruns"
DEFAULT_EXPERIMENT = "workbench"


class TrackingError(WorkbenchError):
    """MLflow is not installed, or its tracking URI is malformed or unreachable, or the server
    failed while a run was logged."""


class TrackingWarning(RuntimeWarning):
    """A finished run could not be logged to MLflow; its results are kept."""


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (MLflow parameters are flat strings, at most 6000 chars)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            out[key] = text[:6000]
    return out


PROBE_TIMEOUT = 5.0


def check_mlflow_server(uri: str, experiment: str = DEFAULT_EXPERIMENT, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise :class:`TrackingError` unless ``uri`` (http or https) answers MLflow's REST API:
    ``GET <uri>/api/2.0/mlflow/experiments/get-by-name`` must give JSON holding an experiment (200)
    or MLflow's error body (``error_code``, e.g. 404 RESOURCE_DOES_NOT_EXIST) within ``timeout`` s.
    Credentials come from ``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``."""
    import base64
    import http.client
    import ssl
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    shown = redact_uri(uri)
    parsed = urlparse(uri)
    userinfo = parsed.netloc.rpartition("@")[0] if "@" in parsed.netloc else ""
    if userinfo:  # http://user:password@host: sent as basic auth, as MLflow's client does, never in the URL
        uri = parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl()
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?experiment_name={quote(experiment)}"
    where = f"{shown} does not answer MLflow's REST API"
    expected = "expected an MLflow tracking server (mlflow server --host HOST --port PORT), or leave tracking off"
    headers = {"Accept": "application/json", "User-Agent": "workbench"}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    elif os.environ.get("MLFLOW_TRACKING_USERNAME") or userinfo:
        from urllib.parse import unquote

        user, _, password = userinfo.partition(":")
        pair = (f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
                if os.environ.get("MLFLOW_TRACKING_USERNAME") else f"{unquote(user)}:{unquote(password)}")
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    context = None
    if url.startswith("https") and os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
        context = ssl._create_unverified_context()  # noqa: S323 - what MLflow itself does with this setting
    request = urllib.request.Request(url, headers=headers, method="GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}) if _no_proxy(uri) else urllib.request.ProxyHandler(),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout) as resp:
            status, body = resp.status, resp.read(65536)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(65536) if exc.fp is not None else b""
    except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        text = str(reason).strip().splitlines()[0][:160] if str(reason).strip() else type(reason).__name__
        raise TrackingError(f"mlflow tracking server {where} ({type(reason).__name__}: {text}); {expected}") from None
    if status in (401, 403):
        raise TrackingError(f"mlflow tracking server {shown} refused the request (HTTP {status}); set MLFLOW_TRACKING_TOKEN or "
                            f"MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or leave tracking off")
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        answer = None
    if isinstance(answer, dict) and (("experiment" in answer and status == 200) or "error_code" in answer):
        return
    kind = "JSON of another service" if answer is not None else ("an empty body" if not body else "a body that is not JSON")
    raise TrackingError(f"mlflow tracking server {where} (HTTP {status} with {kind} for GET /api/2.0/mlflow/experiments/get-by-name); {expected}")


def _no_proxy(uri: str) -> bool:
    """A loopback server is asked directly, never through an HTTP proxy."""
    host = (urlparse(uri).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class Tracker:
    """One MLflow tracking destination; :meth:`log_run` records one run."""

    def __init__(self, uri: str = "local", experiment: str = DEFAULT_EXPERIMENT):
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise TrackingError("MLflow tracking needs MLflow: pip install 'workbench[mlflow]'") from None
        if not isinstance(uri, str) or not uri:
            raise TrackingError(f"mlflow tracking URI {uri!r}; expected 'local' or a URI such as http://host:5000 or sqlite:///runs.db")
        self.artifact_location, self.local_root = None, None
        if uri == "local":  # in the cache folder, made when the first run is logged (never in the working folder)
            from .outdir import cache_dir

            root = self.local_root = (cache_dir() / LOCAL_DIR).resolve()
            uri, self.artifact_location = f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()
        parsed = urlparse(uri)
        if parsed.scheme in ("http", "https"):
            from .executors import check_reachable

            if not parsed.hostname:
                raise TrackingError(f"mlflow tracking URI {redact_uri(uri)!r}; expected http(s)://HOST[:PORT]")
            check_reachable(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80), "mlflow tracking server",
                            "a running MLflow server (or leave tracking off)", error=TrackingError)
            check_mlflow_server(uri, experiment)
        elif parsed.scheme == "sqlite" and self.artifact_location is None:
            db = Path(uri[len("sqlite:///"):]).resolve()  # sqlite:///relative.db or sqlite:////absolute.db
            self.artifact_location = (db.parent / "artifacts").as_uri() if db.parent.is_dir() else None
        elif parsed.scheme not in ("sqlite", "postgresql", "mysql", "databricks", "file"):
            raise TrackingError(f"mlflow tracking URI {redact_uri(uri)!r}; expected 'local', http(s)://..., sqlite:///..., postgresql://... or databricks")
        self.uri, self.experiment = uri, experiment

    @property
    def shown(self) -> str:
        """The URI as messages show it (no ``user:password@``)."""
        return redact_uri(self.uri)

    def _client(self):
        from mlflow.tracking import MlflowClient

        if self.local_root is not None:
            self.local_root.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(self.uri)
        exp = client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        return client, exp_id

    def log_run(self, name: str, *, params: dict | None = None, metrics: dict[str, float] | None = None,
                steps: dict[str, list[float]] | None = None, artifacts: list[str | os.PathLike] | None = None,
                tables: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
        """Record one finished run; returns its run id. ``steps``: per-step metric series;
        ``tables``: DataFrames saved as CSV artifacts. A server or store that fails meanwhile (after
        a few retries: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` etc. default to 2 retries here) is a
        one-line :class:`TrackingError`."""
        with _bounded_retries():
            try:
                return self._log_run(name, params=params, metrics=metrics, steps=steps, artifacts=artifacts, tables=tables, tags=tags)
            except TrackingError:
                raise
            except Exception as exc:  # MlflowException, requests' errors, OSError, sqlite's ...
                text = " ".join(str(exc).split())[:200] or type(exc).__name__
                raise TrackingError(f"mlflow tracking server {self.shown}: logging run {name!r} failed "
                                    f"({type(exc).__name__}: {redact_uri(text)})") from None

    def _log_run(self, name, *, params, metrics, steps, artifacts, tables, tags) -> str:
        import math

        client, exp_id = self._client()
        run = client.create_run(exp_id, run_name=name, tags={"workbench.kind": name.split(" ")[0], **(tags or {})})
        rid = run.info.run_id
        status = "FAILED"
        try:
            for k, v in flatten(params or {}).items():
                client.log_param(rid, k, v)
            for k, v in (metrics or {}).items():
                if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
                    client.log_metric(rid, k, float(v))
            for k, series in (steps or {}).items():
                for i, v in enumerate(series):
                    if v is not None and math.isfinite(v):
                        client.log_metric(rid, k, float(v), step=i)
            for path in artifacts or []:
                if Path(path).exists():
                    client.log_artifact(rid, str(path))
            if tables:
                with tempfile.TemporaryDirectory() as tmp:
                    for fname, df in tables.items():
                        df.to_csv(Path(tmp) / fname, index=False)
                        client.log_artifact(rid, str(Path(tmp) / fname))
            status = "FINISHED"
        finally:
            try:
                client.set_terminated(rid, status)
            except Exception:
                if status == "FINISHED":  # the run's own failure, when there is one, is the one to report
                    raise
        return rid


_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class _bounded_retries:
    """MLflow's HTTP retries bounded while a run is logged (its defaults wait about four minutes on a
    failing server); a value the user set is kept."""

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in _RETRY_DEFAULTS}
        for k, v in _RETRY_DEFAULTS.items():
            os.environ.setdefault(k, v)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)


def resolve_tracker(tracking: "Tracker | str | bool | None" = None) -> Tracker | None:
    """``tracking``: a :class:`Tracker`, a URI, False (off), or None (``$WORKBENCH_MLFLOW`` if set, else off)."""
    if tracking is False:
        return None
    if isinstance(tracking, Tracker):
        return tracking
    uri = tracking if tracking not in (None, True) else os.environ.get(ENV) or ("local" if tracking is True else None)
    return Tracker(uri) if uri else None


def sweep_metrics(df, metric_column: str = "metric") -> dict[str, float]:
    """Summary metrics of a sweep's DataFrame: rows, and the worst and mean metric."""
    vals = df[metric_column].dropna() if metric_column in df else []
    out = {"rows": float(len(df))}
    if len(vals):
        out.update({f"{metric_column}_min": float(vals.min()), f"{metric_column}_mean": float(vals.mean())})
    return out


def log_sweep(tracker: Tracker | None, kind: str, task, config, df, strict: bool = False) -> None:
    """Log a finished sweep as one run (its configuration, summary metrics, the table as CSV);
    the run id goes to ``df.attrs["mlflow_run_id"]``. A failure is a :class:`TrackingWarning`
    (the message in ``df.attrs["mlflow_error"]``; the sweep's rows are kept), or with ``strict``
    the :class:`TrackingError`."""
    if tracker is None:
        return
    params = {"task": task.name, "executor": df.attrs.get("executor", "local"), **config.to_dict()}
    metrics = {**sweep_metrics(df), "computed": float(df.attrs.get("computed", 0)), "from_store": float(df.attrs.get("from_store", 0))}
    try:
        df.attrs["mlflow_run_id"] = tracker.log_run(f"{kind} {task.name}", params=params, metrics=metrics, tables={f"{kind}.csv": df},
                                                    tags={"workbench.sweep": str(df.attrs.get("sweep", ""))})
    except TrackingError as exc:
        if strict:
            raise
        df.attrs["mlflow_error"] = str(exc)
        warn_untracked(exc)


def warn_untracked(exc: TrackingError) -> None:
    import warnings

    warnings.warn(f"{exc}; the results are kept, the run is not tracked", TrackingWarning, stacklevel=3)
