"""A local result store for sweeps: SQLite, one transaction per row.

Rows are keyed by (sweep fingerprint, case key). A sweep killed at any moment (even SIGKILL)
leaves every committed row intact and none half-written; running it again skips the cases
already stored. Shared by every sweep kind (sensitivity, pruning, ...).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    sweep TEXT NOT NULL,
    kind TEXT NOT NULL,
    case_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (sweep, case_key)
)
"""


def _encode(row: dict) -> str:
    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return {"__float__": repr(v)}
        if hasattr(v, "item"):
            return fix(v.item())
        return v

    return json.dumps({k: fix(v) for k, v in row.items()}, sort_keys=True)


def _decode(text: str) -> dict:
    row = json.loads(text)
    return {k: (float(v["__float__"]) if isinstance(v, dict) and "__float__" in v else v) for k, v in row.items()}


class ResultStore:
    """``ResultStore(path)``; ``path`` defaults to ``<cache>/results.sqlite``."""

    def __init__(self, path: str | os.PathLike | None = None):
        if path is None:
            from .baseline import cache_dir

            path = cache_dir() / "results.sqlite"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(SCHEMA)

    def rows(self, sweep: str) -> dict[str, dict]:
        """Stored rows of a sweep, ``{case_key: row}`` in the order they were computed."""
        cur = self._conn.execute("SELECT case_key, payload FROM rows WHERE sweep = ? ORDER BY seq", (sweep,))
        return {k: _decode(p) for k, p in cur.fetchall()}

    def put(self, sweep: str, kind: str, case_key: str, row: dict) -> bool:
        """Store one row atomically; returns False when the case was already stored."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            seq = self._conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM rows WHERE sweep = ?", (sweep,)).fetchone()[0]
            cur = self._conn.execute("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, ?)", (sweep, kind, case_key, seq, _encode(row)))
            return cur.rowcount == 1

    def count(self, sweep: str | None = None) -> int:
        if sweep is None:
            return self._conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM rows WHERE sweep = ?", (sweep,)).fetchone()[0]

    def integrity_ok(self) -> bool:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def model_hash(model) -> str:
    """sha256 of a model's state (names and bytes of every tensor)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def sweep_fingerprint(kind: str, task, model, config: dict, version: str, **extra) -> str:
    """The key a sweep's rows are stored under: model weights, data, configuration and code versions."""
    import torch

    from . import __version__

    key = {"model": model_hash(model), "data": task.data.fingerprint(), "config": config, "task": task.name, "metric": task.metric.name,
           "workbench": __version__, kind: version, "torch": torch.__version__, **extra}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def resolve_store(store: "ResultStore | None | bool") -> "ResultStore | None":
    """A sweep's ``store=`` argument: a store, None for the default one, False for none."""
    return ResultStore() if store is None else (None if store is False else store)


class SweepRecorder:
    """The rows of one running sweep: stored rows are replayed as they were, each new row is
    stored at once (one transaction), and every row goes to ``on_row`` and the progress bar."""

    def __init__(self, store: ResultStore | None, sweep: str, kind: str, on_row: Callable[[dict], None] | None = None, bar=None):
        self.store, self.sweep, self.kind, self.on_row, self.bar = store, sweep, kind, on_row, bar
        self.done = store.rows(sweep) if store is not None else {}
        self.rows: list[dict] = []
        self.computed = 0

    def replay(self, keys) -> None:
        """Report the stored rows among ``keys`` (in that order) before new ones are computed."""
        for key in keys:
            if key in self.done:
                self._emit(self.done[key])

    def put(self, key: str, row: dict) -> dict:
        """Store a newly computed row (one transaction) and report it."""
        if self.store is not None:
            self.store.put(self.sweep, self.kind, key, row)
        self.done[key] = row
        self.computed += 1
        self._emit(row)
        return row

    def _emit(self, row: dict) -> None:
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)
        if self.bar is not None:
            self.bar.update()

    def ordered(self, keys) -> list[dict]:
        """The rows of ``keys`` in that order."""
        return [self.done[k] for k in keys]

    @property
    def from_store(self) -> int:
        return len(self.rows) - self.computed
