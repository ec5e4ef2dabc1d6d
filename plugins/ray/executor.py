"""``RayExecutor``: the jobs of :meth:`RLM.batch` as Ray tasks.

Each job is one Ray task running :func:`polyrlm.batch.run_job` in a Ray
worker process: a whole completion with its own environment, broker and
ledger (its sub-calls and child runs stay there), sharing nothing with the
other runs but the :class:`~polyrlm.result.Result` it sends back.

Which Ray: the one already initialised in this process (used as it is, left
running); else the cluster at ``address`` (or ``$RAY_ADDRESS``), joined and
left again in :meth:`RayExecutor.close` (it keeps running); else a small local
instance that this executor starts (a few seconds: ``num_cpus`` =
``max_workers`` or this machine's cores, no dashboard, a small object store,
its files in a fresh folder under ``$TMPDIR``, usage stats off unless
``RAY_USAGE_STATS_ENABLED`` says otherwise) and shuts down in ``close``, its
folder removed.

Trajectories: ``logs="worker"`` writes each run's file from the worker as it
happens (the folder must be visible there: a local instance, or shared
storage); ``logs="driver"`` writes it here from the result's events once the
run has ended (any cluster). The default is ``"worker"`` on an instance this
executor started, ``"driver"`` otherwise.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import faulthandler
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from polyrlm.batch import Job, Runner, run_job
from polyrlm.errors import BackendUnavailable, ConfigError
from polyrlm.result import Result
from polyrlm.trajectory import TrajectoryWriter

__all__ = [
    "ADDRESS_PROBE_TIMEOUT_S",
    "CPUS_PER_JOB",
    "LOCAL_OBJECT_STORE_BYTES",
    "LOG_MODES",
    "RayExecutor",
]

#: Object store of a local instance this executor starts (contexts bigger
#: than ~100 KB travel through it; pass ``object_store_memory`` for more).
LOCAL_OBJECT_STORE_BYTES = 200 * 1024 * 1024
#: Ray CPUs one job holds (runs mostly wait on models: a fraction packs more per CPU).
CPUS_PER_JOB = 1.0
#: Seconds to wait for a TCP connection to a cluster's address before giving up
#: (``ray.init`` itself retries a dead address for minutes).
ADDRESS_PROBE_TIMEOUT_S = 5.0
#: Where trajectories are written: in the worker as the run goes, or here after it.
LOG_MODES = ("worker", "driver")
#: Prefix of the folder a local instance keeps its session files in.
TEMP_PREFIX = "polyrlm-ray-"
#: Addresses ``ray.init`` resolves itself (``auto``: ``$RAY_ADDRESS`` or the
#: cluster started on this machine with ``ray start``; ``local``: a new instance).
NAMED_ADDRESSES = ("auto", "local")


@contextlib.contextmanager
def _faulthandler_kept() -> Iterator[None]:
    """Keep this process's SIGSEGV handling as it was across ``ray.init``:
    Ray's C++ core would install its crash reporter and ray.init turns
    faulthandler on, and wasmtime then refuses every later WASM sandbox here."""
    from ray._private import ray_constants

    # Read when the core worker starts (also when ray was imported before us).
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    was_on = faulthandler.is_enabled()
    try:
        yield
    finally:
        if not was_on and faulthandler.is_enabled():
            faulthandler.disable()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(
            "executor 'ray' needs ray, which is not installed: "
            f'pip install "polyrlm[ray]" ({exc})'
        ) from exc
    return ray


def probe_address(address: str, timeout_s: float = ADDRESS_PROBE_TIMEOUT_S) -> None:
    """Fail fast, with :class:`ConfigError`, on a ``host:port`` that is malformed
    or where nothing listens (``ray://`` and the named addresses are left to Ray)."""
    if address in NAMED_ADDRESSES or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"bad Ray address {address!r}: give HOST:PORT of the cluster's head "
            f"(GCS, usually port 6379), ray://HOST:PORT, or one of {', '.join(NAMED_ADDRESSES)}"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster reachable at {address!r} "
            f"(tried for {timeout_s:g} s: {exc.strerror or exc})"
        ) from exc


def _run(rlm: Runner, job: Job, context: Any) -> Result:
    """The task's body: ``run_job`` with the context sent on its own (Ray
    passes it through the object store once, however many jobs share it)."""
    return run_job(rlm, dataclasses.replace(job, context=context))


def _absolute(context: Any) -> Any:
    return context.resolve() if isinstance(context, Path) else context


class RayExecutor:
    """Runs each job as a Ray task (``RLM.batch(executor="ray")``).

    ``max_workers``: jobs in flight (default: the cluster's CPUs divided by
    ``cpus_per_job``). ``address``: a cluster (``HOST:PORT``, ``ray://...``,
    ``auto``). ``logs``: ``"worker"`` or ``"driver"`` (see the module). Other
    keywords go to ``ray.init`` when this executor starts or joins Ray
    (``num_cpus``, ``object_store_memory``, ``runtime_env``, ...).
    """

    name: ClassVar[str] = "ray"

    def __init__(
        self,
        max_workers: int | None = None,
        address: str | None = None,
        *,
        cpus_per_job: float = CPUS_PER_JOB,
        logs: str | None = None,
        **ray_init_options: Any,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ConfigError("max_workers must be at least 1")
        if not cpus_per_job > 0:
            raise ConfigError("cpus_per_job must be more than 0")
        if logs is not None and logs not in LOG_MODES:
            raise ConfigError(f"logs must be one of {', '.join(LOG_MODES)}, not {logs!r}")
        ray = _import_ray()
        self._ray = ray
        self._owned = False  # this executor started the instance
        self._connected = False  # this executor called ray.init (started or joined)
        self._temp_dir: str | None = None
        self._closed = False
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None:
            probe_address(address)
        if ray.is_initialized():
            if address is not None or ray_init_options:
                raise ConfigError(
                    "Ray is already initialised in this process: the ray executor uses that "
                    "instance as it is; give no address or ray.init options, or call "
                    "ray.shutdown() first"
                )
        elif address is not None and address != "local":
            self._join(address, ray_init_options)
        else:
            self._start(max_workers, ray_init_options)
        self.logs = logs or ("worker" if self._owned else "driver")
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        self.slots = max_workers or max(1, int(cpus // cpus_per_job))
        self._task = ray.remote(num_cpus=cpus_per_job, max_retries=0)(_run)
        self._refs: dict[int, tuple[Any, Any]] = {}  # id -> (object, its ObjectRef)
        self._pending: set[Any] = set()
        self._lock = threading.Lock()  # _pending changes in Ray's callback thread too

    def _join(self, address: str, options: dict[str, Any]) -> None:
        options = {"log_to_driver": False, "logging_level": "WARNING", **options}
        try:
            with _faulthandler_kept():
                self._ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError, TypeError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
        self._connected = True

    def _start(self, max_workers: int | None, options: dict[str, Any]) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent
        self._temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
        settings = {
            "address": "local",
            "num_cpus": max_workers or os.cpu_count() or 1,
            "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "WARNING",
            "_temp_dir": self._temp_dir,
            **options,
        }
        try:
            with _faulthandler_kept():
                self._ray.init(**settings)
        except (ConnectionError, ValueError, RuntimeError, TypeError) as exc:
            self._ray.shutdown()  # whatever it started before failing
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            raise ConfigError(f"cannot start a local Ray instance: {exc}") from exc
        self._owned = self._connected = True

    @property
    def owns_instance(self) -> bool:
        """True when this executor started the Ray instance (and shuts it down)."""
        return self._owned

    @property
    def temp_dir(self) -> Path | None:
        """The folder of the local instance this executor started (removed on close)."""
        return Path(self._temp_dir) if self._temp_dir is not None else None

    def _put(self, value: Any) -> Any:
        """``value`` in the object store, once per object (shared contexts, the RLM)."""
        key = id(value)
        if key not in self._refs:
            self._refs[key] = (value, self._ray.put(value))
        return self._refs[key][1]

    def submit(self, rlm: Runner, job: Job) -> concurrent.futures.Future[Result]:
        if self._closed:
            raise RuntimeError("the ray executor is closed")
        outer: concurrent.futures.Future[Result] = concurrent.futures.Future()
        log = job.log.resolve() if job.log is not None else None
        sent = dataclasses.replace(job, context=None, log=log if self.logs == "worker" else None)
        try:
            ref = self._task.remote(self._put(rlm), sent, self._put(_absolute(job.context)))
        except Exception as exc:  # e.g. a context Ray cannot serialise: this job fails
            outer.set_exception(exc)
            return outer
        with self._lock:
            self._pending.add(ref)
        inner: concurrent.futures.Future[Result] = ref.future()
        driver_log = log if self.logs == "driver" else None

        def done(future: concurrent.futures.Future[Result]) -> None:
            with self._lock:
                self._pending.discard(ref)
            try:
                result = future.result()
                if driver_log is not None and result.trajectory:
                    _write_trajectory(driver_log, result)
            except BaseException as exc:  # the worker died, or the log cannot be written
                outer.set_exception(exc)
                return
            outer.set_result(result)

        inner.add_done_callback(done)
        return outer

    def close(self) -> None:
        """Cancel the tasks still running; shut down the instance this
        executor started (its folder removed), or leave the cluster it joined
        (which keeps running). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            pending, self._pending = list(self._pending), set()
        for ref in pending:
            self._ray.cancel(ref)
        self._refs.clear()
        if self._connected:
            self._ray.shutdown()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


def _write_trajectory(path: Path, result: Result) -> None:
    writer = TrajectoryWriter(path)
    try:
        for event in result.trajectory:
            writer.on_event(event)
    finally:
        writer.close()
