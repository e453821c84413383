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
import threading
import warnings
from pathlib import Path

import torch
from typing import Callable

from .errors import StoreError
from .fileio import move_aside

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
# rows that failed their check on read (a damaged or edited payload): kept here, out of the sweep,
# so the case is computed again and nothing the store held is lost
SET_ASIDE = """
CREATE TABLE IF NOT EXISTS set_aside (
    sweep TEXT NOT NULL,
    kind TEXT NOT NULL,
    case_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    problem TEXT NOT NULL,
    at TEXT NOT NULL
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


NO_STORE = "or run without the store (--no-store on the command line, store=False in Python)"
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_READONLY = {3, 8, 14}  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN


class _Corrupt(Exception):
    """The store file is not a sound SQLite database."""


def _code(exc: sqlite3.Error) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


class ResultStore:
    """``ResultStore(path)``; ``path`` defaults to ``<cache>/results.sqlite``.

    Opening checks the store at once, before a sweep does any work: a file that is not a sound
    SQLite database (random bytes, a truncated copy) is moved aside as
    ``results.sqlite.corrupt-<YYYYmmdd-HHMMSS>`` (with its ``-wal`` / ``-shm``) with a warning,
    and a fresh store is made; a store that cannot be written (read-only file or folder, locked,
    full disk) is a one-line :class:`~workbench.infra.errors.StoreError` naming the file.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        if path is None:
            from .outdir import cache_dir

            path = cache_dir() / "results.sqlite"
        self.path = Path(path)
        self._conn = None
        self._lock = threading.RLock()  # a widget sweeps in a background thread on the store the notebook opened
        self._check_access()
        try:
            self._open()
        except _Corrupt as exc:
            self._close_quietly()
            try:
                move_aside(self.path, str(exc), "started a fresh result store", companions=("-wal", "-shm"))
            except OSError as err:
                raise StoreError(f"result store {self.path} is corrupt and cannot be moved aside ({err.strerror or type(err).__name__}); "
                                 f"delete it, {NO_STORE}") from None
            try:
                self._open()
            except _Corrupt as again:
                self._close_quietly()
                raise StoreError(f"result store {self.path} is still unreadable after moving the corrupt file aside ({again}); {NO_STORE}") from None

    # ------------------------------------------------------------------ opening
    def _check_access(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the result store folder {folder} ({exc.strerror or type(exc).__name__}); "
                             f"set WORKBENCH_CACHE to a writable folder {NO_STORE}") from None
        if self.path.is_dir():
            raise StoreError(f"result store {self.path} is a folder; expected an SQLite file (or a path where one can be made)")
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise StoreError(f"result store {self.path} is read-only; make it writable, set WORKBENCH_CACHE to a writable folder, {NO_STORE}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(f"result store {self.path} is in a read-only folder (SQLite writes its -wal and -shm files beside it); "
                             f"make {folder} writable, set WORKBENCH_CACHE to a writable folder, {NO_STORE}")

    def _open(self) -> None:
        try:  # not even an SQLite header: moved aside before SQLite opens it (and drops its -wal)
            with open(self.path, "rb") as f:
                head = f.read(16)
        except FileNotFoundError:
            head = b""
        except OSError as exc:
            raise StoreError(f"result store {self.path} cannot be read ({exc.strerror or type(exc).__name__}); {NO_STORE}") from None
        if head and head != b"SQLite format 3\x00":
            raise _Corrupt("file is not a database")
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)  # one lock serialises threads
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(SCHEMA)
            self._conn.execute(SET_ASIDE)
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _Corrupt(str(check).splitlines()[0][:200])
            cols = [r[1] for r in self._conn.execute("PRAGMA table_info(rows)").fetchall()]
            if cols != ["sweep", "kind", "case_key", "seq", "payload"]:
                self._close_quietly()
                raise StoreError(f"result store {self.path} is an SQLite file of another layout (its rows table has columns {', '.join(cols)}); "
                                 f"expected the workbench's result store: point WORKBENCH_CACHE elsewhere, {NO_STORE}")
            # a write that is rolled back: a store that cannot be written fails here, before any work
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("INSERT OR REPLACE INTO rows VALUES ('', '', '', -1, '')")
            finally:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if _code(exc) in _CORRUPT:
                raise _Corrupt(str(exc)) from None
            self._close_quietly()
            raise self._error(exc, "open") from None

    def _error(self, exc: sqlite3.Error, doing: str) -> StoreError:
        code, text = _code(exc), str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if code in _READONLY:
            return StoreError(f"result store {self.path} cannot be written ({text}); make it and its folder writable, "
                              f"set WORKBENCH_CACHE to a writable folder, {NO_STORE}")
        if code == 5 or code == 6:  # SQLITE_BUSY, SQLITE_LOCKED
            return StoreError(f"result store {self.path} is locked by another process ({text}); wait for it to finish, {NO_STORE}")
        if code == 13:  # SQLITE_FULL
            return StoreError(f"result store {self.path}: the disk is full ({text}); free some space, {NO_STORE}")
        return StoreError(f"result store {self.path}: cannot {doing} it ({type(exc).__name__}: {text}); {NO_STORE}")

    def _close_quietly(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def rows(self, sweep: str, check: Callable[[str, dict], str | None] | None = None) -> dict[str, dict]:
        """Stored rows of a sweep, ``{case_key: row}`` in the order they were computed.

        Every row is validated on read: one that is not a JSON mapping, or that ``check(case_key,
        row)`` finds a problem with (a number edited to text, a bit-width to null), is moved to
        the store's ``set_aside`` table with the problem, out of the sweep, with a warning naming
        it; the sweep then computes that case again."""
        with self._lock:
            try:
                cur = self._conn.execute("SELECT case_key, kind, payload FROM rows WHERE sweep = ? ORDER BY seq", (sweep,))
                stored = cur.fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc, "read") from None
            out = {}
            for k, kind, p in stored:
                try:
                    row = _decode(p)
                    problem = None if isinstance(row, dict) else f"a JSON {type(row).__name__}, not a mapping"
                except (ValueError, TypeError, AttributeError) as exc:  # a damaged row
                    row, problem = None, f"unreadable JSON ({type(exc).__name__})"
                if problem is None and check is not None:
                    problem = check(k, row)
                if problem is not None:
                    self._set_aside(sweep, kind, k, p, problem)
                    continue
                out[k] = row
            return out

    def _set_aside(self, sweep: str, kind: str, case_key: str, payload: str, problem: str) -> None:
        """Move one stored row to the ``set_aside`` table (one transaction), with a warning."""
        import datetime

        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                # only the payload read (another process may have set it aside, or stored a sound row, meanwhile)
                cur = self._conn.execute("DELETE FROM rows WHERE sweep = ? AND case_key = ? AND payload = ?", (sweep, case_key, payload))
                if cur.rowcount:
                    self._conn.execute("INSERT INTO set_aside VALUES (?, ?, ?, ?, ?, ?)",
                                       (sweep, kind, case_key, payload, problem, datetime.datetime.now(datetime.timezone.utc).isoformat()))
        except sqlite3.Error as exc:
            raise self._error(exc, "write") from None
        warnings.warn(f"result store {self.path}: the stored {kind or 'sweep'} row of case {case_key!r} is unsound ({problem}); "
                      "it was moved to the store's set_aside table and is computed again", RuntimeWarning, stacklevel=4)

    def set_aside_rows(self, sweep: str | None = None) -> list[dict]:
        """The rows moved aside on read (sweep, kind, case_key, payload, problem, at)."""
        with self._lock:
            q, args = ("SELECT * FROM set_aside", ()) if sweep is None else ("SELECT * FROM set_aside WHERE sweep = ?", (sweep,))
            cols = ("sweep", "kind", "case_key", "payload", "problem", "at")
            return [dict(zip(cols, r)) for r in self._conn.execute(q, args).fetchall()]

    def put(self, sweep: str, kind: str, case_key: str, row: dict) -> bool:
        """Store one row atomically; returns False when the case was already stored."""
        with self._lock:
            try:
                with self._conn:
                    self._conn.execute("BEGIN IMMEDIATE")
                    seq = self._conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM rows WHERE sweep = ?", (sweep,)).fetchone()[0]
                    cur = self._conn.execute("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, ?)", (sweep, kind, case_key, seq, _encode(row)))
                    return cur.rowcount == 1
            except sqlite3.Error as exc:
                raise self._error(exc, "write") from None

    def count(self, sweep: str | None = None) -> int:
        with self._lock:
            if sweep is None:
                return self._conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
            return self._conn.execute("SELECT COUNT(*) FROM rows WHERE sweep = ?", (sweep,)).fetchone()[0]

    def integrity_ok(self) -> bool:
        with self._lock:
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        self._close_quietly()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def row_problem(row: dict, numbers=(), texts=(), optional_texts=(), bits=()) -> str | None:
    """The first field of a stored ``row`` that is missing or of the wrong type: ``numbers`` (an
    int or float, NaN allowed, never a boolean or text), ``texts`` (a string), ``optional_texts``
    (a string or null), ``bits`` (an integer bit-width or null); None when every field is sound."""

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for fields, ok, expected in ((numbers, number, "a number"), (texts, lambda v: isinstance(v, str), "text"),
                                 (optional_texts, lambda v: v is None or isinstance(v, str), "text or null"),
                                 (bits, lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "a bit-width or null")):
        for f in fields:
            if f not in row:
                return f"{f} is missing"
            if not ok(row[f]):
                return f"{f} is {row[f]!r}; expected {expected}"
    return None


def model_hash(model) -> str:
    """sha256 of a model's state: name, dtype, shape and bytes of every tensor (any dtype, any device).
    The one weights hash: sweep keys, baseline cache keys (starting weights), QAT teacher checks."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)};".encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sweep_fingerprint(kind: str, task, model, config: dict, version: str, **extra) -> str:
    """The key a sweep's rows are stored under: model weights, data, configuration and code versions."""
    from .. import __version__
    from .determinism import training_threads

    key = {"model": model_hash(model), "data": task.data.fingerprint(), "config": config, "task": task.name, "metric": task.metric.name,
           "workbench": __version__, kind: version, "torch": torch.__version__, "threads": training_threads(), **extra}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def resolve_store(store: "ResultStore | None | bool") -> "ResultStore | None":
    """A sweep's ``store=`` argument: a store, None for the default one, False for none."""
    return ResultStore() if store is None else (None if store is False else store)


class SweepRecorder:
    """The rows of one running sweep: stored rows are replayed as they were, each new row is
    stored at once (one transaction), and every row goes to ``on_row`` and the progress bar.
    ``check(case_key, row)``: why a stored row is unsound (None: it is sound); unsound rows are
    moved aside and computed again."""

    def __init__(self, store: ResultStore | None, sweep: str, kind: str, on_row: Callable[[dict], None] | None = None, bar=None,
                 check: Callable[[str, dict], str | None] | None = None):
        self.store, self.sweep, self.kind, self.on_row, self.bar = store, sweep, kind, on_row, bar
        self.done = store.rows(sweep, check) if store is not None else {}  # unsound rows moved aside (see ResultStore.rows)
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
