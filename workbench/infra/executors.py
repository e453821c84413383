"""Where a sweep's work runs: in this process (the default), a local process pool, or Ray.

A sweep is split into *units* (a layer's cases for sensitivity, a layer's levels for pruning).
Each unit is a pure function of the sweep's *payload* (task, model, configuration) and the unit,
so it gives the same rows wherever it runs. Rows come back to the calling process, which
streams them into the :class:`~workbench.infra.store.ResultStore` as each unit finishes and assembles
the DataFrame in the sweep's own order: the same sweep gives identical rows on every executor,
and a sweep stopped on one executor resumes on another.

A unit whose worker dies is run again (``retries`` times); its rows are stored only when it
returns, so none are lost or stored twice.

- ``"local"``: one unit after another, here;
- ``"process"`` or ``"process:N"``: N worker processes (spawned; default: the CPU count);
- ``"ray"`` starts a local Ray cluster; ``"ray:HOST:PORT"`` or ``"ray:auto"`` joins a running one
  (``pip install workbench[ray]``; the workers must be able to import ``workbench``).

Workers run with this process's torch thread count, so their floating-point results match.

Nothing listens beyond this machine unless asked: a local cluster (``"ray"``) is a new one on node
address 127.0.0.1, so its GCS, raylet, object manager, workers, agents and metrics ports bind the
loopback interface only, without a dashboard; it never joins a running cluster found through
``RAY_ADDRESS`` or ``ray start``'s address file. Joining a cluster, remote or not, is explicit
(``"ray:HOST:PORT"``, ``"ray:auto"``) and listens wherever that cluster's nodes were started to.

Nothing outlives this process: pool workers end with it (on Linux by the kernel's parent-death
signal, elsewhere within half a second by a watchdog on the parent's pid), quietly (a worker whose
parent is gone exits without printing the closed queue's ``EOFError``; the job reaches the workers
as a temporary file, so a parent killed mid-start leaves no half-read pickle either), and
multiprocessing's resource tracker then sees its pipe close, removes the pool's semaphores without
warning about them, and exits. Workers start with SIGINT blocked: a terminal's Ctrl-C stops the
sweep in this process, which kills its workers instead of waiting for their units. A local Ray cluster shares its fate through
Ray's own fate sharing (GCS, raylet and workers end within seconds), except Ray's two node agents,
which Ray lets outlive a killed driver by about a minute (listening on 127.0.0.1 only).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Hashable, Iterable, Iterator

from .errors import WorkbenchError, redact_uri

UnitFn = Callable[[Any, Hashable], Any]


class ExecutorError(WorkbenchError):
    """An executor cannot be set up (unknown name, unreachable Ray address), or a unit kept failing."""


class Executor:
    """Runs ``fn(payload, unit)`` for every unit; yields ``(unit, result)`` as units finish."""

    name = "executor"

    def run(self, fn: UnitFn, payload: Any, units: Iterable[Hashable]) -> Iterator[tuple[Hashable, Any]]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class LocalExecutor(Executor):
    """In this process, in order (the default)."""

    name = "local"

    def run(self, fn, payload, units):
        for unit in units:
            yield unit, fn(payload, unit)


# ------------------------------------------------------------------ worker side (pool and Ray)
_WORKER: dict[str, Any] = {}


def _die_with_parent(parent: int, pdeathsig: bool) -> None:
    """End this worker process when ``parent``, the process that started it, ends.

    On Linux the kernel sends SIGKILL when the *thread* that started this process exits
    (``prctl(PR_SET_PDEATHSIG)``), so ``pdeathsig`` is asked for only where that thread is the
    parent's main thread, whose end is the process's end. Everywhere, a watchdog thread ends this
    process within half a second of its parent pid changing (an orphan is re-parented)."""
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(ctypes.c_int(1), ctypes.c_ulong(int(signal.SIGKILL)), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0))  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl in this libc: the watchdog alone
            pass
    if os.getppid() != parent:  # the parent died before the signal was set
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="workbench-parent-watchdog", daemon=True).start()


def _worker_init(job: tuple[str, str], threads: int, parent: int | None = None, pdeathsig: bool = False) -> None:
    if parent is not None:
        _die_with_parent(parent, pdeathsig)
    try:
        import cloudpickle
        import torch

        torch.set_num_threads(threads)
        path, digest = job
        with open(path, "rb") as f:
            blob = f.read()
        if hashlib.sha256(blob).hexdigest() != digest:  # only the bytes this workbench process serialised for its own workers
            raise RuntimeError(f"the job file {path} is not the one the workbench wrote")
        _WORKER["job"] = cloudpickle.loads(blob)
    except BaseException:
        _quiet_exit_if_orphaned(parent)
        raise


def _quiet_exit_if_orphaned(parent: int | None) -> None:
    """End this worker at once, printing nothing, when the process that started it is gone: what
    failed then (a closed queue's ``EOFError``, a removed job file) is that death, not an error."""
    if parent is not None and os.getppid() != parent:
        os._exit(1)


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    """A spawned pool worker that ends quietly when its parent is killed: the pool's worker loop then
    fails reading the closed call queue (``EOFError``), which multiprocessing would print."""

    def run(self):
        try:
            super().run()
        except BaseException:
            _quiet_exit_if_orphaned(self._parent_pid)
            raise


class _WorkerContext(multiprocessing.context.SpawnContext):
    Process = _WorkerProcess


def _quiet_resource_tracker() -> None:
    """multiprocessing's resource tracker removes the pool's semaphores when this process is killed,
    and warns about them ("leaked semaphore objects"): expected then, so that warning is turned off
    in the tracker, which takes this process's warning options when it starts."""
    option = "ignore::UserWarning:multiprocessing.resource_tracker"
    if option not in sys.warnoptions:
        sys.warnoptions.append(option)


def _worker_call(unit):
    fn, payload = _WORKER["job"]
    return fn(payload, unit)


class ProcessExecutor(Executor):
    """A pool of spawned worker processes on this machine."""

    name = "process"

    def __init__(self, workers: int | None = None, retries: int = 2):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ExecutorError(f"process executor: expected a worker count >= 1; got {workers!r}")
        self.workers = workers or os.cpu_count() or 1
        self.retries = retries

    def describe(self) -> str:
        return f"process:{self.workers}"

    def run(self, fn, payload, units):
        import cloudpickle
        import torch

        from .children import temp_dir

        pending = list(dict.fromkeys(units))
        failures: Counter = Counter()
        context = _WorkerContext()
        _quiet_resource_tracker()
        # the job goes to the workers as a file, not through the spawn pipe: a parent killed while
        # writing megabytes into that pipe leaves a worker printing "pickle data was truncated"
        with temp_dir("wb-pool-") as tmp:
            blob = cloudpickle.dumps((fn, payload))
            job = (os.path.join(tmp, "job.pkl"), hashlib.sha256(blob).hexdigest())
            with open(job[0], "wb") as f:
                f.write(blob)
            while pending:
                yield from self._round(job, pending, failures, context, torch.get_num_threads())

    def _round(self, job, pending, failures, context, threads):
        """One pool over the pending units; units lost with a worker stay pending."""
        # workers are spawned by the thread that submits units (this one): the parent-death
        # signal is tied to that thread, so it is used only when that thread is the main one
        main = threading.current_thread() is threading.main_thread()
        pool = ProcessPoolExecutor(min(self.workers, len(pending)), mp_context=context, initializer=_worker_init,
                                   initargs=(job, threads, os.getpid(), main))
        broken = finished = False
        futures = {}
        try:
            # workers start with SIGINT blocked (the mask is inherited): a terminal's Ctrl-C reaches
            # this process, which stops them, instead of printing a KeyboardInterrupt in each
            masked = hasattr(signal, "pthread_sigmask")
            if masked:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                for unit in pending:
                    futures[pool.submit(_worker_call, unit)] = unit
            except BrokenProcessPool:  # a worker died while units were still being handed out
                broken = True
            finally:
                if masked:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = futures.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:  # a worker died: every unit not returned is run again
                        broken = True
                        continue
                    pending.remove(unit)
                    yield unit, result
            finished = True
        finally:
            # CPython 3.11 leaves the surviving workers of a broken pool waiting on the closed queue;
            # a sweep stopped (Ctrl-C, an error, the caller) does not wait for their units either
            if broken or not finished:
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.kill()
            pool.shutdown(wait=True, cancel_futures=True)
        if broken:
            for unit in pending:
                failures[unit] += 1
                if failures[unit] > self.retries:
                    raise ExecutorError(f"process executor: unit {unit!r} was lost with its worker {failures[unit]} times; giving up")


# ------------------------------------------------------------------------------------- Ray
def _ray_call(key: str, boxed: list, threads: int, unit):
    if _WORKER.get("key") != key:  # one deserialisation per worker process and sweep
        import torch

        import ray

        torch.set_num_threads(threads)
        _WORKER.update(key=key, job=ray.get(boxed[0]))
    fn, payload = _WORKER["job"]
    return fn(payload, unit)


def check_reachable(host: str, port: int, what: str, expected: str, error: type = None, timeout: float = 3.0) -> None:
    """Raise ``error`` (default :class:`ExecutorError`) unless a TCP connection to ``host:port``
    opens within ``timeout`` s; ``expected`` says what should be listening there."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise (error or ExecutorError)(f"{what} {redact_uri(f'{host}:{port}')} is unreachable ({exc.strerror or type(exc).__name__}); expected {expected}") from None


class RayExecutor(Executor):
    """Ray tasks: a local cluster (``address=None``), or a running one by ``"HOST:PORT"`` / ``"auto"``."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, retries: int = 2):
        self.address, self.workers, self.retries = address, workers, retries

    def describe(self) -> str:
        return f"ray:{redact_uri(self.address)}" if self.address else "ray"

    def connect(self):
        try:
            import ray
        except ImportError:
            raise ExecutorError("executor 'ray' needs Ray: pip install 'workbench[ray]'") from None
        if self.address not in (None, "auto"):
            host, _, port = self.address.rpartition(":")
            if not host or not port.isdigit():
                raise ExecutorError(f"ray address {redact_uri(self.address)!r}; expected HOST:PORT (the head's GCS port, 6379 by default) or 'auto'")
            check_reachable(host, int(port), "ray address", "a running Ray head there (or run the sweep locally: executor 'local')")
        if ray.is_initialized():
            return ray
        try:
            if self.address is None:
                _start_local_ray(ray, num_cpus=self.workers or os.cpu_count(), log_to_driver=False, configure_logging=False,
                                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_import_paths())}})
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        except ExecutorError:
            raise
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ...
            text = str(exc).splitlines()[0][:160] if str(exc).strip() else ""
            raise ExecutorError(f"ray: cannot connect to {redact_uri(self.address or 'a local cluster')}: {type(exc).__name__}: {redact_uri(text)}") from None
        finally:
            protect_token_file()  # the token a new local cluster wrote (at the umask's mode), the owner's only
        return ray

    def run(self, fn, payload, units):
        import torch

        ray = self.connect()
        remote = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=False)(_ray_call)
        boxed = [ray.put((fn, payload))]  # boxed: the worker fetches it once, not per task
        key = uuid.uuid4().hex
        futures = {remote.remote(key, boxed, torch.get_num_threads(), unit): unit for unit in dict.fromkeys(units)}
        while futures:
            done, _ = ray.wait(list(futures), num_returns=1)
            unit = futures.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # the unit's own error: raise it here as it was
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayError as exc:
                raise ExecutorError(f"ray: unit {unit!r} failed after {self.retries} retries: {type(exc).__name__}") from None
            yield unit, result


def ray_token_paths() -> list[str]:
    """The files Ray reads its cluster token from: ``$RAY_AUTH_TOKEN_PATH`` and ``~/.ray/auth_token``."""
    return list(dict.fromkeys(p for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), os.path.join(os.path.expanduser("~"), ".ray", "auth_token")) if p))


def protect_token_file(path: str | None = None) -> None:
    """Make a token file readable by its owner only (0600): Ray writes ``~/.ray/auth_token`` with the
    umask's mode (0644), so any local user could read the token of the cluster. Only a regular
    file of this user's, never through a symlink; nothing else about it changes."""
    import stat

    for p in [path] if path else ray_token_paths():
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except OSError:
            pass
        finally:
            os.close(fd)


_LOOPBACK = "127.0.0.1"
_RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _start_local_ray(ray, **kwargs) -> None:
    """``ray.init`` a new single-machine cluster whose processes listen on 127.0.0.1 only.

    Ray binds every listener to the node address (all interfaces unless that address is a loopback
    one), and ``ray.init`` replaces a loopback ``_node_ip_address`` by the machine's routable
    address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off, a setting Ray reads when it is
    imported: it is turned off here for the start (the driver's imported copy included) and the
    processes it starts, then restored. ``address="local"`` starts a new cluster whatever
    ``RAY_ADDRESS`` or a running ``ray start`` head says."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_RAY_CLUSTER_ENV), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_RAY_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address=_LOOPBACK, include_dashboard=False, dashboard_host=_LOOPBACK, **kwargs)
    finally:
        if saved_env is None:
            os.environ.pop(_RAY_CLUSTER_ENV, None)
        else:
            os.environ[_RAY_CLUSTER_ENV] = saved_env
        if saved_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag
    node = ray.util.get_node_ip_address()
    if node != _LOOPBACK:  # a Ray that no longer honours the loopback node address: refuse to stay up open
        ray.shutdown()
        raise ExecutorError(f"ray: the local cluster came up on node address {node}, not {_LOOPBACK} only; refusing it "
                            "(join a cluster explicitly with executor 'ray:HOST:PORT', or use 'process')")


def _import_paths() -> list[str]:
    """Where this process imports workbench from, so a local cluster's workers find it too."""
    import workbench

    root = os.path.dirname(os.path.dirname(os.path.abspath(workbench.__file__)))
    return [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def make_executor(spec: "str | Executor | None" = None) -> Executor:
    """An executor from its name: ``local``, ``process[:N]``, ``ray``, ``ray:HOST:PORT``, ``ray:auto``."""
    if spec is None or spec == "local":
        return LocalExecutor()
    if isinstance(spec, Executor):
        return spec
    if not isinstance(spec, str):
        raise ExecutorError(f"executor {spec!r}; expected 'local', 'process[:N]', 'ray', 'ray:HOST:PORT' or 'ray:auto'")
    kind, _, rest = spec.partition(":")
    if kind == "process":
        if rest and not rest.isdigit():
            raise ExecutorError(f"executor {spec!r}; expected process:N with N a worker count")
        return ProcessExecutor(int(rest) if rest else None)
    if kind == "ray":
        return RayExecutor(rest or None)
    raise ExecutorError(f"executor {spec!r}; expected 'local', 'process[:N]', 'ray', 'ray:HOST:PORT' or 'ray:auto'")
