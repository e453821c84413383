"""MLflow tracking, off unless asked for (``pip install 'workbench[mlflow]'``).

Turn it on with a tracking URI: the ``tracking=`` argument of the sweeps, ``apply_recipe`` and
``train_qat``, the CLI's ``--mlflow URI``, or the ``WORKBENCH_MLFLOW`` environment variable.
``"local"`` is a SQLite store in ``./mlruns`` (``mlruns/mlflow.db``, artifacts in
``mlruns/artifacts``); any other value is an MLflow tracking URI (``http://host:5000``,
``sqlite:///path.db``, ...). An http(s) server that does not answer is a one-line
:class:`TrackingError` within seconds, before any work starts.

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

from .errors import WorkbenchError

ENV = "WORKBENCH_MLFLOW"
LOCAL_DIR = "mlruns"
DEFAULT_EXPERIMENT = "workbench"


class TrackingError(WorkbenchError):
    """MLflow is not installed, or its tracking URI is malformed or unreachable."""


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


class Tracker:
    """One MLflow tracking destination; :meth:`log_run` records one run."""

    def __init__(self, uri: str = "local", experiment: str = DEFAULT_EXPERIMENT):
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise TrackingError("MLflow tracking needs MLflow: pip install 'workbench[mlflow]'") from None
        if not isinstance(uri, str) or not uri:
            raise TrackingError(f"mlflow tracking URI {uri!r}; expected 'local' or a URI such as http://host:5000 or sqlite:///runs.db")
        self.artifact_location = None
        if uri == "local":
            root = Path(LOCAL_DIR).resolve()
            root.mkdir(parents=True, exist_ok=True)
            uri, self.artifact_location = f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()
        parsed = urlparse(uri)
        if parsed.scheme in ("http", "https"):
            from .executors import check_reachable

            if not parsed.hostname:
                raise TrackingError(f"mlflow tracking URI {uri!r}; expected http(s)://HOST[:PORT]")
            check_reachable(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80), "mlflow tracking server",
                            "a running MLflow server (or leave tracking off)", error=TrackingError)
        elif parsed.scheme == "sqlite" and self.artifact_location is None:
            db = Path(uri[len("sqlite:///"):]).resolve()  # sqlite:///relative.db or sqlite:////absolute.db
            self.artifact_location = (db.parent / "artifacts").as_uri() if db.parent.is_dir() else None
        elif parsed.scheme not in ("sqlite", "postgresql", "mysql", "databricks", "file"):
            raise TrackingError(f"mlflow tracking URI {uri!r}; expected 'local', http(s)://..., sqlite:///..., postgresql://... or databricks")
        self.uri, self.experiment = uri, experiment

    def _client(self):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        exp = client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        return client, exp_id

    def log_run(self, name: str, *, params: dict | None = None, metrics: dict[str, float] | None = None,
                steps: dict[str, list[float]] | None = None, artifacts: list[str | os.PathLike] | None = None,
                tables: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
        """Record one finished run; returns its run id. ``steps``: per-step metric series;
        ``tables``: DataFrames saved as CSV artifacts."""
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
            client.set_terminated(rid, status)
        return rid


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


def log_sweep(tracker: Tracker | None, kind: str, task, config, df) -> None:
    """Log a finished sweep as one run (its configuration, summary metrics, the table as CSV);
    the run id goes to ``df.attrs["mlflow_run_id"]``."""
    if tracker is None:
        return
    params = {"task": task.name, "executor": df.attrs.get("executor", "local"), **config.to_dict()}
    metrics = {**sweep_metrics(df), "computed": float(df.attrs.get("computed", 0)), "from_store": float(df.attrs.get("from_store", 0))}
    df.attrs["mlflow_run_id"] = tracker.log_run(f"{kind} {task.name}", params=params, metrics=metrics, tables={f"{kind}.csv": df},
                                                tags={"workbench.sweep": str(df.attrs.get("sweep", ""))})
