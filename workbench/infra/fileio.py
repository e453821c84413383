"""Atomic file writes, hashing and output-directory confinement."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import OutputPathError

DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def umask() -> int:
    """The process umask, read without changing it (Linux), else by the set-and-restore dance."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:  # pragma: no cover - not Linux
        pass
    old = os.umask(0o022)  # pragma: no cover
    os.umask(old)  # pragma: no cover
    return old  # pragma: no cover


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def disk_error(exc: OSError, where: str | os.PathLike) -> OutputPathError:
    """A full, read-only or forbidden disk as a one-line error naming where."""
    return OutputPathError(f"cannot write {str(where)!r}: {exc.strerror or type(exc).__name__}; expected a writable folder with free space")


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; it replaces ``path`` (mode 0644 less the umask)
    only if the block succeeds, so ``path`` is never half-written. A full, read-only or forbidden
    disk is a one-line :class:`OutputPathError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise disk_error(exc, path) from None
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise disk_error(exc, path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``: never half-written."""
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def inside(out_dir: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """Resolve ``relative`` under ``out_dir``, refusing any path that escapes it."""
    base = Path(out_dir).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise OutputPathError(f"output path {str(relative)!r} escapes the output directory {str(base)!r}")
    return target


class CorruptFileWarning(UserWarning):
    """A file the workbench wrote (a cached baseline, a QAT checkpoint, the result store) could not
    be read; it was moved aside as ``<name>.corrupt-<YYYYmmdd-HHMMSS>`` and the work it held is redone."""


def move_aside(path: str | os.PathLike, why: str, then: str, companions: tuple[str, ...] = ()) -> Path | None:
    """Rename a damaged workbench-owned file (and its ``companions``, suffixes such as ``-wal``) to
    ``<name>.corrupt-<YYYYmmdd-HHMMSS>`` (never deleted, so it can be inspected) and warn, naming
    the file, ``why`` and what happens ``then``. Returns the new path, or None when another
    process moved it first."""
    import time
    import warnings

    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:  # another process got there first
        return None
    for suffix in companions:
        try:
            os.replace(f"{path}{suffix}", f"{target}{suffix}")
        except FileNotFoundError:
            pass
    warnings.warn(f"{path} is damaged ({why}); moved it aside to {target.name}; {then}", CorruptFileWarning, stacklevel=3)
    return target
