"""Output folders that never destroy what the workbench did not write.

Every command that writes a result folder (``demo``, ``quantize``, ``apply``, ``qat``,
``sensitivity``, ``search``, ``prune``) goes through :class:`RunDir`:

- the folder is checked before any work: a symlink, a file, a protected folder (``.``, ``~``,
  ``/``, an ancestor of the working directory, a repository root), or an existing folder holding
  files the workbench did not write are one-line :class:`~workbench.infra.errors.OutputPathError`;
- so is a folder inside the workbench's cache (``$WORKBENCH_CACHE``: baselines, the result
  store) or one holding it, and a path too long for the file system (checked with room for the
  temporary names below, so it fails before the work, not after);
- an existing folder the workbench wrote (it holds the marker ``.workbench-run.json``, the run's
  manifest with each file's sha256, and nothing the manifest does not list nor any listed file
  edited since) is replaced only when ``overwrite`` is given,
  or when the same resumable run continues (``workbench qat`` on its own checkpoints);
- kept sub-folders (QAT checkpoints, a width study) are no exception: a file in one is the
  workbench's only if the marker's ``kept_files`` patterns (or the sub-folder's own marker) name it;
- the run writes into a fresh temporary folder beside it (``.NAME.wbtmp-*``) and moves it into
  place at the end: the previous result is renamed aside, the new one renamed in, then the files
  the old marker lists are deleted one by one, and its folders only once empty. Nothing is ever
  deleted as a whole tree, so a file someone writes into the folder at any moment (even during the
  final check and the swap) survives: it is moved back into the folder, at its own path, with a
  :class:`ForeignFileWarning` (and the next run refuses the folder until it is moved out);
- two runs on one folder: the second fails at once, naming the first one's process;
- leftovers of killed runs (temporary folders, a previous result renamed aside) are cleaned up,
  or put back, by the next run on the same folder (or the run itself, on any error or Ctrl-C);
- files are written 0644 and folders 0755, less the umask.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Mapping

from .. import __version__
from . import children, interrupts
from .errors import OutputPathError
from .fileio import DISK_ERRNOS, dir_mode, disk_error, file_mode, umask  # noqa: F401 (the disk-error helpers live in fileio)

MARKER = ".workbench-run.json"
TMP_TAG = ".wbtmp-"
OLD_TAG = ".wbold-"
NAME_ROOM = 40  # '.NAME.wbold-<pid>-<ns>' beside the folder
PATH_ROOM = 200  # the deepest file the workbench writes inside (widths/study/<fp>.journal.lock<uuid>.rename, temporaries)
CHANGED = ", changed since it was written"
OWN_TEMPS = (f".{MARKER}.*.tmp",)  # a marker write a kill cut short (fileio.atomic_target's name)


class ForeignFileWarning(UserWarning):
    """A file the workbench did not write appeared in an output folder while a run replaced it; it
    was moved back into the folder at its own path (never deleted)."""


def cache_dir() -> Path:
    """The workbench's cache (baselines, the result store): ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``.
    An empty ``WORKBENCH_CACHE`` is an :class:`~workbench.infra.errors.OutputPathError` (it would put
    the cache in the working folder)."""
    value = os.environ.get("WORKBENCH_CACHE")
    if value is None:
        return Path.home() / ".cache" / "workbench"
    if value.strip() == "":
        raise OutputPathError("WORKBENCH_CACHE is empty; expected a folder path for the workbench's cache, or leave it unset for ~/.cache/workbench")
    return Path(value).expanduser()


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
    cache = cache_dir().resolve()
    if path == cache or cache in path.parents:
        return f"inside the workbench's cache {str(cache)!r} (its baselines and result store)"
    if path in cache.parents:
        return f"a folder holding the workbench's cache {str(cache)!r}"
    return None


def _shown(text: str) -> str:
    return text if len(text) <= 80 else text[:60] + "..." + text[-17:]


def _too_long(raw: Path) -> str | None:
    """Why ``raw`` cannot be an output folder on this file system (a name past NAME_MAX or a path
    past PATH_MAX once the workbench's temporary names and inner files are added), or None.
    Checked on the text alone, before any system call on the path could fail with ENAMETOOLONG."""
    absolute = os.path.abspath(raw)
    try:
        name_max, path_max = os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):  # pragma: no cover - not POSIX
        name_max, path_max = 255, 4096
    parts = Path(absolute).parts[1:]
    for i, part in enumerate(parts):
        room = NAME_ROOM if i == len(parts) - 1 else 0
        size = len(os.fsencode(part))
        if size + room > name_max:
            return (f"output folder {_shown(str(raw))!r}: the name {_shown(part)!r} is {size} bytes; expected at most {name_max - room} "
                    f"(the file system allows {name_max}{', less room for the workbench temporary names beside it' if room else ''})")
    size = len(os.fsencode(absolute))
    if size + PATH_ROOM > path_max:
        return (f"output folder {_shown(str(raw))!r} is {size} bytes long; expected at most {path_max - PATH_ROOM} "
                f"(the file system allows {path_max}, less room for the files the workbench writes inside)")
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


def _entries(path: Path) -> list[tuple[str, str]]:
    """(relative POSIX path, 'dir' | 'file' | 'link' | 'other') of everything under ``path``."""
    out = []
    for root, dirs, files in os.walk(path):
        rel = Path(root).relative_to(path)
        for name in dirs + files:
            full = Path(root) / name
            kind = "link" if full.is_symlink() else "dir" if full.is_dir() else "file" if full.is_file() else "other"
            out.append(((rel / name).as_posix(), kind))
    return out


def _matches(entry: str, patterns: Iterable[str]) -> bool:
    """``entry`` matches a pattern of the same depth (a ``*`` never crosses a folder)."""
    return any(entry.count("/") == p.count("/") and fnmatch.fnmatchcase(entry, p) for p in patterns)


def _str_list(value) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def survey(path: Path, manifest: dict, fallback: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """``(owned, strangers)`` of a folder the workbench wrote: the files its marker accounts for
    (listed files unchanged since written, the marker itself, files in a kept sub-folder that the
    marker's ``kept_files`` patterns name, or that the sub-folder's own marker accounts for), and
    everything else: files the workbench did not write, edited ones, links, folders holding none
    of the owned files. ``fallback`` patterns stand for ``kept_files`` in a marker without them."""
    listed = set(_str_list(manifest.get("files")))
    hashes = manifest.get("sha256") if isinstance(manifest.get("sha256"), dict) else {}
    kept = set(_str_list(manifest.get("kept")))
    patterns = _str_list(manifest["kept_files"]) if "kept_files" in manifest else list(fallback)
    owned, strangers, delegated = [], [], set()
    for name in sorted(kept):
        sub = path / name
        inner = read_manifest(sub) if sub.is_dir() and not sub.is_symlink() else None
        if inner is not None:  # a kept folder with its own marker (a width study): it accounts for itself
            o, s = survey(sub, inner)
            owned += [f"{name}/{x}" for x in o]
            strangers += [f"{name}/{x}" for x in s]
            delegated.add(name)
    folders = []
    for entry, kind in sorted(_entries(path)):
        top = entry.split("/", 1)[0]
        if top in delegated:
            continue
        if kind == "dir":
            folders.append(entry)
        elif kind != "file":
            strangers.append(entry)
        elif entry == MARKER or _matches(entry, OWN_TEMPS):
            owned.append(entry)
        elif entry in listed:
            if entry in hashes and _sha256(path / entry) != hashes[entry]:  # edited since: the user's now
                strangers.append(f"{entry}{CHANGED}")
            else:
                owned.append(entry)
        elif top in kept and "/" in entry and _matches(entry, patterns):
            owned.append(entry)
        else:
            strangers.append(entry)
    needed = kept | listed  # the kept folders, folders the run wrote (listed), and those holding owned files
    for f in owned:
        parts = f.split("/")[:-1]
        needed.update("/".join(parts[:i + 1]) for i in range(len(parts)))
    strangers += [d for d in folders if d not in needed]
    return owned, strangers


def _sha256(path: Path) -> str:
    from .fileio import sha256_file

    return sha256_file(path)


def _link_no_replace(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` unless something is there already (FileExistsError): never overwrites."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        if os.path.lexists(dst):  # a file system without hard links: a checked rename
            raise FileExistsError(errno.EEXIST, "exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _rmdirs(root: Path, keep_root: bool = False) -> None:
    """Remove the empty folders under ``root`` (and ``root`` itself unless ``keep_root``), deepest
    first; a folder holding anything stays."""
    for here, dirs, _files in os.walk(root, topdown=False):
        for d in dirs:
            try:
                os.rmdir(Path(here) / d)
            except OSError:
                pass
    if not keep_root:
        try:
            os.rmdir(root)
        except OSError:
            pass


def dispose(old: Path, into: Path | None) -> list[str]:
    """Delete a replaced result folder ``old``: the files its marker accounts for, one by one (the
    marker last), then its folders once empty. Whatever else is there (a file someone wrote while
    it was being replaced) is moved back into ``into`` at its own path, never over a file; returns
    where each such file now is. Nothing is deleted as a tree."""
    manifest = read_manifest(old)
    owned, strangers = survey(old, manifest) if manifest is not None else ([], [e for e, _ in _entries(old)])
    for rel in sorted(owned, key=lambda r: (r.rsplit("/", 1)[-1] == MARKER, -r.count("/"), r)):
        try:
            os.unlink(old / rel)
        except FileNotFoundError:
            pass
    foreign = {s.split(CHANGED, 1)[0] for s in strangers}
    for here, dirs, _files in os.walk(old, topdown=False):  # the workbench's folders, once empty; someone's empty folder stays
        for d in dirs:
            if (Path(here) / d).relative_to(old).as_posix() not in foreign:
                try:
                    os.rmdir(Path(here) / d)
                except OSError:
                    pass
    try:
        os.rmdir(old)
        return []
    except OSError:
        return _put_back(old, into)


def _put_back(old: Path, into: Path | None) -> list[str]:
    where = []
    if into is not None and (into.is_symlink() or not into.is_dir()):
        into = None  # no folder to put things back into: they stay where they are
    for root, dirs, files in os.walk(old):
        rel = Path(root).relative_to(old)
        for d in dirs:
            if into is not None and not (Path(root) / d).is_symlink():
                try:
                    (into / rel / d).mkdir(parents=True, exist_ok=True)
                except OSError:
                    pass
        for name in sorted(files + [d for d in dirs if (Path(root) / d).is_symlink()]):
            src, dst = Path(root) / name, (into / rel / name) if into is not None else None
            try:
                if dst is None:
                    raise FileNotFoundError(errno.ENOENT, "no folder to put it back into")
                (into / rel).mkdir(parents=True, exist_ok=True)
                _link_no_replace(src, dst)
                where.append(str(dst))
            except OSError:
                where.append(str(src))  # left where it is, never deleted
    _rmdirs(old)
    return where


class RunDir:
    """``with RunDir(out, overwrite=...) as work:`` write into ``work``; on success it becomes ``out``.

    The checks run in the constructor, so build it before the work starts. ``keep`` names
    sub-folders of an existing result that carry over (QAT checkpoints, a width study): a mapping
    ``{folder: file-name patterns}`` of the files the workbench writes there, or a folder name
    alone for a sub-folder with its own marker (a nested ``RunDir``); ``resume`` is a key (e.g. the
    recipe's sha256) that lets a run continue a folder its own earlier, unfinished or finished run
    wrote without ``overwrite``.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, keep: Iterable[str] | Mapping[str, Iterable[str]] = (),
                 resume: str | None = None, command: str = ""):
        raw = Path(path).expanduser()
        if str(path).strip() == "":
            raise OutputPathError("output folder ''; expected a folder path")
        self.path = raw
        patterns = keep if isinstance(keep, Mapping) else {name: () for name in keep}
        self.overwrite, self.keep, self.resume, self.command = overwrite, tuple(patterns), resume, command
        self.kept_files = [f"{name}/{p}" for name, pats in patterns.items() for p in pats]
        self._lock_fd: int | None = None
        self._work: Path | None = None
        self._made: list[Path] = []
        self._check()

    # ---------------------------------------------------------------- checks before the work
    def _check(self) -> None:
        raw = self.path
        why = _too_long(raw)
        if why:
            raise OutputPathError(why)
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
        if raw.parent.is_dir():
            with self._parent_lock():
                self._restore_aside()
                self._reap_old()
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

    def _strangers_error(self, strangers: list[str]) -> OutputPathError:
        shown = ", ".join(strangers[:3]) + (f" and {len(strangers) - 3} more" if len(strangers) > 3 else "")
        return OutputPathError(f"{str(self.path)!r} holds files the workbench did not write ({shown}); move them out or choose another folder")

    def _check_existing(self) -> dict | None:
        """The folder's marker when the run may write there (None when it is empty); else a one-line error."""
        raw = self.path
        if not any(raw.iterdir()):
            return None
        manifest = read_manifest(raw)
        if manifest is None:
            raise OutputPathError(f"{str(raw)!r} exists and holds files the workbench did not write; expected a new or empty folder "
                                  f"(the workbench never deletes your files)")
        same = self.resume is not None and manifest.get("resume") == self.resume
        strangers = survey(raw, manifest, fallback=self.kept_files if same else ())[1]
        if strangers:
            raise self._strangers_error(strangers)
        if same:
            return manifest
        if not self.overwrite:
            raise OutputPathError(f"{str(raw)!r} holds an earlier workbench run ({manifest.get('command') or 'run'}); "
                                  f"pass --overwrite (overwrite=True) to replace it, or choose another folder")
        return manifest

    def _siblings(self, tag: str) -> list[Path]:
        parent = self.path.parent
        if not parent.is_dir():
            return []
        prefix = f".{self.path.name}{tag}"
        return sorted(p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink())

    def _parent_lock(self):
        """The folder's parent, locked (flock) for the few milliseconds of a scan, claim or swap."""
        import contextlib

        @contextlib.contextmanager
        def held():
            try:
                fd = os.open(self.path.parent, os.O_RDONLY)
            except OSError as exc:
                raise disk_error(exc, self.path.parent) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

        return held()

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

    def _reap_old(self) -> None:
        """Previous results a killed run left aside go, file by file; anything else in them is put
        back into the folder (where the check that follows names it)."""
        if not self.path.is_dir():
            return
        for old in self._siblings(OLD_TAG):
            try:
                back = dispose(old, self.path)
            except OSError:  # it cannot be removed (yet): it stays, whole, for a later run
                continue
            if back:
                warnings.warn(f"{len(back)} file(s) the workbench did not write were left in {old.name} by a killed run; "
                              f"put back: {', '.join(back[:3])}", ForeignFileWarning, stacklevel=4)

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
        """Temporary folders of killed runs are removed (the workbench's own scratch folders, which
        only a run writes into); a live one means another run is writing here."""
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
        self._reap_old()

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

    def _marker(self, complete: bool, files: list[str], hashes: dict) -> dict:
        return {"workbench_version": __version__, "command": self.command, "complete": complete, "resume": self.resume,
                "kept": list(self.keep), "kept_files": list(self.kept_files), "files": files, "sha256": hashes,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def write_manifest(self, work: Path, complete: bool) -> None:
        """The marker listing every file in ``work``: what a later run may replace."""
        from .fileio import atomic_write_json

        files = sorted(e for e in _listed(work) if e != MARKER and e.split("/", 1)[0] not in self.keep)
        hashes = {f: _sha256(work / f) for f in files if (work / f).is_file() and not (work / f).is_symlink()}
        atomic_write_json(work / MARKER, self._marker(complete, files, hashes))

    def claim(self) -> Path:
        """Make ``self.path`` exist now, marked as the workbench's (unfinished) run, for files that
        must outlive a crash before the end (QAT checkpoints); returns it. A folder an earlier run
        of another ``resume`` key wrote is taken over (``overwrite`` only): the files it kept for
        its own resumption go now, its result files at the end, when the new result replaces them."""
        from .fileio import atomic_write_json

        try:
            with self._parent_lock() if self.path.parent.is_dir() else _nothing():
                manifest = self._check_existing() if self.path.is_dir() else None
                if manifest is not None and manifest.get("resume") == self.resume:
                    if "kept_files" not in manifest:  # written by an older workbench: name what this run keeps
                        atomic_write_json(self.path / MARKER, {**manifest, "kept": list(self.keep), "kept_files": list(self.kept_files)})
                    return self.path
                if manifest is not None:
                    self._drop_kept(manifest)
                self.path.mkdir(parents=True, exist_ok=True)
                os.chmod(self.path, dir_mode())
                old = manifest or {}
                atomic_write_json(self.path / MARKER, {**self._marker(False, _str_list(old.get("files")), old.get("sha256") or {}),
                                                       "replaces": old.get("command")} if manifest else self._marker(False, [], {}))
        except OSError as exc:
            raise disk_error(exc, self.path) from None
        return self.path

    def _drop_kept(self, manifest: dict) -> None:
        """The files another run kept for its own resumption (checkpoints of another recipe, another
        search's study), owned ones only; a kept folder with its own marker that this run keeps too
        is left to that folder's own run."""
        owned, _ = survey(self.path, manifest)
        kept = _str_list(manifest.get("kept"))
        nested = {k for k in kept if k in self.keep and read_manifest(self.path / k) is not None}
        for rel in sorted(owned, key=lambda r: (r.rsplit("/", 1)[-1] == MARKER, -r.count("/"), r)):
            top = rel.split("/", 1)[0]
            if "/" in rel and top in kept and top not in nested:
                try:
                    os.unlink(self.path / rel)
                except FileNotFoundError:
                    pass
        for name in kept:
            folder = self.path / name
            if name not in nested and folder.is_dir() and not folder.is_symlink():
                _rmdirs(folder, keep_root=name in self.keep)

    def _carry(self, manifest: dict | None, work: Path, folders: list[str]) -> list[str]:
        """The kept sub-``folders``' files move from the folder into the new result, one by one (what
        else is there stays, and is put back after the swap)."""
        if manifest is None:
            return []
        owned, _ = survey(self.path, manifest, fallback=self.kept_files)
        moved = []
        for rel in owned:
            if "/" not in rel or rel.split("/", 1)[0] not in folders:
                continue
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.path / rel, work / rel)
            moved.append(rel)
        return moved

    def _uncarry(self, work: Path, moved: list[str]) -> None:
        """The swap undone: the kept files go back where they were (a resumable run keeps its checkpoints)."""
        for rel in moved:
            try:
                (self.path / rel).parent.mkdir(parents=True, exist_ok=True)
                _link_no_replace(work / rel, self.path / rel)
            except OSError:
                pass

    def _clashes(self, aside: Path) -> list[str]:
        """Files in the replaced result ``aside`` that the workbench did not write (or that were
        edited) and whose path the new result in ``self.path`` uses too."""
        manifest = read_manifest(aside)
        strangers = survey(aside, manifest)[1] if manifest is not None else [e for e, _ in _entries(aside)]
        paths = [s.split(CHANGED, 1)[0] for s in strangers]
        return [p for p in paths if os.path.lexists(self.path / p) and ((aside / p).is_symlink() or not (aside / p).is_dir())]

    def _commit(self, work: Path) -> None:
        parent = self.path.parent
        with self._parent_lock():
            if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
                raise OutputPathError(f"output folder {str(self.path)!r} became a file or symlink during the run; the result was not moved in")
            moved: list[str] = []
            if self.path.is_dir():
                manifest = self._check_existing()  # again: another run or the user may have written there meanwhile
                carried = [name for name in self.keep if not (work / name).exists()]
                moved = self._carry(manifest, work, carried)
                for name in carried:
                    if (work / name).is_dir():
                        os.chmod(work / name, dir_mode())
            self.write_manifest(work, complete=True)
            if not self.path.exists():
                os.rename(work, self.path)
                return
            aside = parent / f".{self.path.name}{OLD_TAG}{os.getpid()}-{time.time_ns()}"
            os.rename(self.path, aside)  # the previous result stays whole until the new one is in
            try:
                os.rename(work, self.path)
            except OSError:
                if not self.path.exists():
                    os.rename(aside, self.path)
                    self._uncarry(work, moved)
                    raise
                raise OutputPathError(f"{str(self.path)!r} was made again by another process while the result was moved in; "
                                      f"the new result was not moved in (the previous one is in {aside.name})") from None
            clash = self._clashes(aside)
            if clash:  # a file of someone's at a path the new result uses: everything back as it was, nothing replaced
                os.rename(self.path, work)
                os.rename(aside, self.path)
                self._uncarry(work, moved)
                raise OutputPathError(f"{str(self.path)!r}: {', '.join(clash[:3])} appeared or changed while the result was moved in; "
                                      f"left as it was and the new result not moved in: move it out and run again")
            try:
                back = dispose(aside, self.path)
            except OSError as exc:  # the new result is in place: the old one stays aside for the next run to remove
                back = [f"{aside.name} (not removed: {exc.strerror or type(exc).__name__})"]
        if back:
            warnings.warn(f"{len(back)} file(s) the workbench did not write appeared in {str(self.path)!r} while it was replaced; "
                          f"kept: {', '.join(back[:3])}{' ...' if len(back) > 3 else ''}", ForeignFileWarning, stacklevel=3)


def _nothing():
    import contextlib

    return contextlib.nullcontext()
