"""Output folders that never destroy what the workbench did not write.

Every command that writes a result folder (``demo``, ``quantize``, ``apply``, ``qat``,
``sensitivity``, ``search``, ``prune``) goes through :class:`RunDir`:

- the folder is checked before any work: a symlink, a file, a protected folder (``.``, ``~``,
  ``/``, an ancestor of the working directory, a repository root), or an existing folder holding
  files the workbench did not write are one-line :class:`~workbench.errors.OutputPathError`;
- an existing folder the workbench wrote (it holds the marker ``.workbench-run.json``, the run's
  manifest with each file's sha256, and nothing the manifest does not list nor any listed file
  edited since) is replaced only when ``overwrite`` is given,
  or when the same resumable run continues (``workbench qat`` on its own checkpoints);
- the run writes into a fresh temporary folder beside it (``.NAME.wbtmp-*``) and moves it into
  place at the end: the previous result is renamed aside, the new one renamed in, then the old
  one deleted, so there is always one complete result;
- two runs on one folder: the second fails at once, naming the first one's process;
- leftovers of killed runs (temporary folders, a previous result renamed aside) are cleaned up,
  or put back, by the next run on the same folder;
- files are written 0644 and folders 0755, less the umask.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable

from . import __version__, children, interrupts
from .errors import OutputPathError

MARKER = ".workbench-run.json"
TMP_TAG = ".wbtmp-"
OLD_TAG = ".wbold-"
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


def _protected(path: Path) -> str | None:
    """Why ``path`` (resolved) may never be an output folder, or None."""
    cwd = Path.cwd().resolve()
    if path == Path(path.anchor):
        return "the file-system root"
    if path == Path.home().resolve():
        return "your home folder"
    if path == cwd:
        return "the working directory"
    if path in cwd.parents:
        return "an ancestor of the working directory"
    if (path / ".git").exists():
        return "a repository root"
    return None


def read_manifest(path: Path) -> dict | None:
    """The marker of a folder the workbench wrote, or None."""
    marker = path / MARKER
    if not marker.is_file() or marker.is_symlink():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None


def _listed(path: Path) -> set[str]:
    """Every file and folder under ``path``, as relative POSIX paths."""
    found = set()
    for root, dirs, files in os.walk(path):
        rel = Path(root).relative_to(path)
        for name in dirs + files:
            found.add((rel / name).as_posix())
    return found


def _manifest_covers(path: Path, manifest: dict) -> list[str]:
    """Entries of ``path`` that the manifest does not list (files the workbench did not write)."""
    listed = {MARKER} | set(manifest["files"])
    kept = set(manifest.get("kept", []))
    strangers = []
    for entry in sorted(_listed(path)):
        top = entry.split("/", 1)[0]
        if entry in listed or top in kept:
            continue
        if any(f.startswith(entry + "/") for f in listed):  # a folder holding listed files
            continue
        strangers.append(entry)
    hashes = manifest.get("sha256") or {}
    for name, digest in sorted(hashes.items()):  # a file the workbench wrote and someone edited since is theirs now
        f = path / name
        if f.is_file() and not f.is_symlink() and _sha256(f) != digest:
            strangers.append(f"{name}, changed since it was written")
    return strangers


def _sha256(path: Path) -> str:
    from .fileio import sha256_file

    return sha256_file(path)


class RunDir:
    """``with RunDir(out, overwrite=...) as work:`` write into ``work``; on success it becomes ``out``.

    The checks run in the constructor, so build it before the work starts. ``keep`` names
    sub-folders of an existing result that carry over (QAT checkpoints); ``resume`` is a key
    (e.g. the recipe's sha256) that lets a run continue a folder its own earlier, unfinished or
    finished run wrote without ``overwrite``.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, keep: Iterable[str] = (), resume: str | None = None,
                 command: str = ""):
        raw = Path(path).expanduser()
        if str(path).strip() == "":
            raise OutputPathError("output folder ''; expected a folder path")
        self.path = raw
        self.overwrite, self.keep, self.resume, self.command = overwrite, tuple(keep), resume, command
        self._lock_fd: int | None = None
        self._work: Path | None = None
        self._made: list[Path] = []
        self._check()

    # ---------------------------------------------------------------- checks before the work
    def _check(self) -> None:
        raw = self.path
        if raw.is_symlink():
            raise OutputPathError(f"output folder {str(raw)!r} is a symlink; expected a real folder path (the workbench does not write through links)")
        resolved = raw.resolve()
        why = _protected(resolved)
        if why:
            raise OutputPathError(f"output folder {str(raw)!r} is {why}; expected a new folder for this run, e.g. runs/NAME")
        if raw.exists() and not raw.is_dir():
            raise OutputPathError(f"output folder {str(raw)!r} is a file; expected a folder path that is new, empty or written by the workbench")
        parent = resolved.parent
        if parent.exists() and not parent.is_dir():
            raise OutputPathError(f"output folder {str(raw)!r}: {str(parent)!r} is a file; expected a folder")
        self._probe_writable(resolved)
        self._restore_aside()
        if raw.is_dir():
            self._check_existing()

    @staticmethod
    def _probe_writable(resolved: Path) -> None:
        """A read-only or forbidden place fails now, not after the work: a folder is made and
        removed again in the nearest existing ancestor."""
        base = next(p for p in [resolved.parent, *resolved.parent.parents] if p.exists())
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".wbprobe-", dir=base))
        except OSError as exc:
            raise disk_error(exc, base) from None

    def _check_existing(self) -> None:
        raw = self.path
        entries = list(raw.iterdir())
        if not entries:
            return
        manifest = read_manifest(raw)
        if manifest is None:
            raise OutputPathError(f"{str(raw)!r} exists and holds files the workbench did not write; expected a new or empty folder "
                                  f"(the workbench never deletes your files)")
        strangers = _manifest_covers(raw, manifest)
        if strangers:
            shown = ", ".join(strangers[:3]) + (f" and {len(strangers) - 3} more" if len(strangers) > 3 else "")
            raise OutputPathError(f"{str(raw)!r} holds files the workbench did not write ({shown}); move them out or choose another folder")
        if self.resume is not None and manifest.get("resume") == self.resume:
            return
        if not self.overwrite:
            raise OutputPathError(f"{str(raw)!r} holds an earlier workbench run ({manifest.get('command') or 'run'}); "
                                  f"pass --overwrite (overwrite=True) to replace it, or choose another folder")

    def _siblings(self, tag: str) -> list[Path]:
        parent = self.path.parent
        if not parent.is_dir():
            return []
        prefix = f".{self.path.name}{tag}"
        return sorted(p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink())

    def _restore_aside(self) -> None:
        """A run killed between 'old aside' and 'new in' left the previous result aside: put it back."""
        if self.path.exists():
            return
        old = [p for p in self._siblings(OLD_TAG) if read_manifest(p) is not None]
        if old:
            try:
                os.rename(old[-1], self.path)
            except OSError:
                pass

    # ------------------------------------------------------------------------- the transaction
    def __enter__(self) -> Path:
        parent = self.path.parent
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._made = missing  # removed again (when empty) if the run fails
            lock_fd = os.open(parent, os.O_RDONLY)
        except OSError as exc:
            raise disk_error(exc, parent) from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # held for milliseconds: scan, claim, release
            self._reap_stale()
            work = Path(tempfile.mkdtemp(prefix=f".{self.path.name}{TMP_TAG}{os.getpid()}-", dir=parent))
            children.guard_folder(work)  # removed at once if this process is killed (SIGKILL included)
            fd = os.open(work, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for the whole run: marks it alive
            os.chmod(work, dir_mode())
        except OSError as exc:
            raise disk_error(exc, parent) from None
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
        self._lock_fd, self._work = fd, work
        return work

    def _reap_stale(self) -> None:
        """Temporary folders of killed runs are removed; a live one means another run is writing here."""
        for tmp in self._siblings(TMP_TAG):
            try:
                fd = os.open(tmp, os.O_RDONLY)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pid = tmp.name[len(f".{self.path.name}{TMP_TAG}"):].split("-", 1)[0]
                    raise OutputPathError(f"{str(self.path)!r} is being written by another workbench run (process {pid}); "
                                          f"wait for it to finish or choose another folder") from None
                shutil.rmtree(tmp, ignore_errors=True)
            finally:
                os.close(fd)
        if self.path.exists():
            for old in self._siblings(OLD_TAG):
                shutil.rmtree(old, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        work, fd = self._work, self._lock_fd
        try:
            if exc_type is None:
                interrupts.check()  # a Ctrl-C that a library swallowed: the result is not made final
                self._commit(work)
        except OSError as err:
            raise disk_error(err, self.path) from None
        finally:
            if work is not None and work.exists():
                shutil.rmtree(work, ignore_errors=True)
            if work is not None:
                children.release_folder(work)
            if fd is not None:
                os.close(fd)
            self._work = self._lock_fd = None
            if exc_type is not None or not self.path.exists():
                for made in self._made:  # deepest first; a folder someone else filled meanwhile stays
                    try:
                        os.rmdir(made)
                    except OSError:
                        break
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            raise disk_error(exc, self.path) from None

    def write_manifest(self, work: Path, complete: bool) -> None:
        """The marker listing every file in ``work``: what a later run may replace."""
        from .fileio import atomic_write_json

        files = sorted(e for e in _listed(work) if e != MARKER and e.split("/", 1)[0] not in self.keep)
        hashes = {f: _sha256(work / f) for f in files if (work / f).is_file()}
        atomic_write_json(work / MARKER, {"workbench_version": __version__, "command": self.command, "complete": complete,
                                          "resume": self.resume, "kept": list(self.keep), "files": files, "sha256": hashes,
                                          "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def claim(self) -> Path:
        """Make ``self.path`` exist now, marked as the workbench's (unfinished) run, for files that
        must outlive a crash before the end (QAT checkpoints); returns it."""
        from .fileio import atomic_write_json

        if self.path.is_dir() and read_manifest(self.path) is not None:
            return self.path
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path, dir_mode())
            atomic_write_json(self.path / MARKER, {"workbench_version": __version__, "command": self.command, "complete": False,
                                                   "resume": self.resume, "kept": list(self.keep), "files": []})
        except OSError as exc:
            raise disk_error(exc, self.path) from None
        return self.path

    def _commit(self, work: Path) -> None:
        parent = self.path.parent
        lock_fd = os.open(parent, os.O_RDONLY)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
                raise OutputPathError(f"output folder {str(self.path)!r} became a file or symlink during the run; the result was not moved in")
            if self.path.is_dir() and any(self.path.iterdir()):
                self._check_existing()  # again: another run or the user may have written there meanwhile
                for name in self.keep:
                    if (self.path / name).exists() and not (work / name).exists():
                        shutil.move(str(self.path / name), str(work / name))
            self.write_manifest(work, complete=True)
            if self.path.exists():
                aside = parent / f".{self.path.name}{OLD_TAG}{os.getpid()}-{time.time_ns()}"
                os.rename(self.path, aside)  # the previous result stays whole until the new one is in
                os.rename(work, self.path)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.rename(work, self.path)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
