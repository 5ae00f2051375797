"""Where the jobs of a batch run: in this process, in a pool of processes, or on Ray actors.

All three share one shape. A *slot* is a long-lived worker holding a `WorkerContext` (device, model
cache): the driver itself, a one-process `ProcessPoolExecutor` pinned to a device, or a Ray actor. The
driver gives each idle slot the next job and collects outcomes as they complete, through
`concurrent.futures` futures in every case (Ray's object refs convert to them). One job per slot at a
time means that when a worker dies, the job it was running is known exactly: it is resubmitted up to
`retries` times (a restarted worker reloads its models), then recorded as failed. A job that raises is
not retried: an `NvsError` says the input is bad, and running it again would fail the same way.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import math
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from nvsvideo.batch.jobs import JobSpec, ProcessFn, WorkerContext
from nvsvideo.errors import NvsError, Terminated, UsageError
from nvsvideo.files import output_error

RAY_INSTALL_HINT = "pip install 'nvsvideo[ray]'"


@dataclass
class JobOutcome:
    """Result of one job as the worker saw it."""

    summary: dict[str, Any] | None = None
    """The job function's summary; None when it failed."""
    error: str = ""
    """One sentence saying why it failed; empty on success."""
    exit_code: int = 0
    """Exit code of the error (`NvsError.exit_code`, 1 for a bug, 0 on success)."""
    seconds: float = 0.0
    """Wall time spent in the job function."""
    worker: str = ""
    """Name of the worker that ran it."""
    attempts: int = 1
    """Times it was started (above 1 after a worker died)."""
    traceback: str = ""
    """Traceback of an unexpected exception (a bug), for the report."""

    @property
    def ok(self) -> bool:
        return self.summary is not None


def run_job(fn: ProcessFn, spec: JobSpec, ctx: WorkerContext) -> JobOutcome:
    """Run one job in the current worker, turning any exception into a failed outcome.

    Ctrl-C (KeyboardInterrupt) is not caught: it stops the batch.
    """
    start = time.perf_counter()
    try:
        summary = dict(fn(spec, ctx))
    except Exception as err:  # noqa: BLE001 - one video's problem must not stop the batch; it is reported
        return failed_outcome(err, seconds=time.perf_counter() - start, worker=ctx.worker)
    return JobOutcome(summary=summary, seconds=time.perf_counter() - start, worker=ctx.worker)


def failed_outcome(err: Exception, *, seconds: float = 0.0, worker: str = "") -> JobOutcome:
    """Outcome for an exception: an `NvsError` keeps its sentence and exit code; anything else is a
    bug (exit code 1), reported with its traceback. Call it while handling `err`."""
    if isinstance(err, OSError):
        err = output_error(err) or err  # a full disk or an unwritable folder is this video's user error
    if isinstance(err, NvsError):
        return JobOutcome(error=str(err), exit_code=err.exit_code, seconds=seconds, worker=worker)
    return JobOutcome(
        error=f"internal error: {type(err).__name__}: {err}",
        exit_code=1,
        seconds=seconds,
        worker=worker,
        traceback=traceback.format_exc(),
    )


class Executor(Protocol):
    """Runs job functions on specs; a context manager that owns its workers."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, fn: ProcessFn, specs: Sequence[JobSpec]) -> Iterator[tuple[JobSpec, JobOutcome]]:
        """Yield `(spec, outcome)` for every spec, in completion order."""
        ...


class _Slot(Protocol):
    """One worker that runs one job at a time."""

    def submit(self, fn: ProcessFn, spec: JobSpec) -> cf.Future[JobOutcome]: ...

    def restart(self) -> None:
        """Bring the worker back after it died (a no-op where the backend restarts it itself)."""
        ...

    def close(self) -> None: ...


def _dispatch(
    slots: Sequence[_Slot],
    fn: ProcessFn,
    specs: Sequence[JobSpec],
    *,
    retries: int,
    death: tuple[type[BaseException], ...],
) -> Iterator[tuple[JobSpec, JobOutcome]]:
    """Keep every slot busy with one job until all specs are done; resubmit jobs whose worker died."""
    pending = collections.deque(range(len(specs)))
    attempts = [0] * len(specs)
    idle = list(reversed(slots))
    running: dict[cf.Future[JobOutcome], tuple[_Slot, int]] = {}
    try:
        while pending or running:
            while idle and pending:
                slot, index = idle.pop(), pending.popleft()
                attempts[index] += 1
                running[slot.submit(fn, specs[index])] = (slot, index)
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                slot, index = running.pop(future)
                idle.append(slot)
                tries = attempts[index]
                try:
                    outcome = future.result()
                except death as err:
                    slot.restart()
                    if tries <= retries:
                        pending.appendleft(index)
                        continue
                    outcome = JobOutcome(
                        error=f"the worker died while processing it ({tries} attempt(s)): {_first_line(err)}",
                        exit_code=1,
                    )
                except Exception as err:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                    outcome = JobOutcome(
                        error=f"internal error: {type(err).__name__}: {_first_line(err)}", exit_code=1
                    )
                yield specs[index], replace(outcome, attempts=tries)
    finally:
        for future in running:
            future.cancel()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@dataclass
class SequentialExecutor:
    """Jobs one after another in this process, on one device (the default)."""

    device: str = "cpu"
    """Device spec the jobs run on."""
    context: WorkerContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = WorkerContext(device=self.device, worker="main")

    def __enter__(self) -> SequentialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.context.models.clear()

    def run(self, fn: ProcessFn, specs: Sequence[JobSpec]) -> Iterator[tuple[JobSpec, JobOutcome]]:
        for spec in specs:
            yield spec, run_job(fn, spec, self.context)


# Pool processes keep their context here between jobs: a module global is the only state a
# `ProcessPoolExecutor` worker has. It is set once per process by the pool's initializer and never
# touched in the driver.
_process_context: WorkerContext | None = None


def _init_process(device: str, name: str, cpu_threads: int | None) -> None:
    global _process_context
    if cpu_threads is not None:
        # N CPU workers each using every core would oversubscribe the machine and run slower than one.
        import torch

        torch.set_num_threads(cpu_threads)
    _process_context = WorkerContext(device=device, worker=name)


def _run_in_process(fn: ProcessFn, spec: JobSpec) -> JobOutcome:
    assert _process_context is not None, "pool process started without _init_process"
    # SIGTERM (from the driver, or `timeout` signalling the whole process group) unwinds the job like
    # Ctrl-C, so its temporary outputs and cache locks are cleaned up; between jobs it ends the idle worker.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return run_job(fn, spec, _process_context)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean-up at a time; the driver waits for it
    raise Terminated()


class _ProcessSlot:
    """A one-process `ProcessPoolExecutor` pinned to one device."""

    def __init__(self, device: str, name: str, cpu_threads: int | None) -> None:
        self.device, self.name, self.cpu_threads = device, name, cpu_threads
        self._pool = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        # spawn: CUDA cannot be used in forked children, and spawn behaves the same on every OS.
        return cf.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(self.device, self.name, self.cpu_threads),
        )

    def submit(self, fn: ProcessFn, spec: JobSpec) -> cf.Future[JobOutcome]:
        return self._pool.submit(_run_in_process, fn, spec)

    def restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class ProcessExecutor:
    """`workers` processes, worker i pinned to `devices[i % len(devices)]` (`cuda:0..N-1`, or cpu)."""

    workers: int = 2
    """Number of worker processes."""
    devices: Sequence[str] = ("cpu",)
    """Device specs handed out to the workers in turn."""
    retries: int = 1
    """Times a job is resubmitted after its worker process died."""
    _slots: list[_ProcessSlot] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if not self.devices:
            raise UsageError("no devices given for the worker processes")

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        for slot in self._slots:
            slot.close()
        self._slots.clear()

    def run(self, fn: ProcessFn, specs: Sequence[JobSpec]) -> Iterator[tuple[JobSpec, JobOutcome]]:
        # Workers start on first need, so a batch of one video starts one process.
        while len(self._slots) < min(self.workers, len(specs)):
            i = len(self._slots)
            device = self.devices[i % len(self.devices)]
            threads = max(1, (os.cpu_count() or 1) // self.workers) if device == "cpu" else None
            self._slots.append(_ProcessSlot(device, f"proc-{i}", threads))
        yield from _dispatch(self._slots, fn, specs, retries=self.retries, death=(BrokenProcessPool,))


class _RayWorker:
    """Body of a Ray actor: its context (and model cache) lives as long as the actor process."""

    def __init__(self, device: str, name: str) -> None:
        self.context = WorkerContext(device=device, worker=name)

    def run(self, fn: ProcessFn, spec: JobSpec) -> JobOutcome:
        return run_job(fn, spec, self.context)

    def ready(self) -> bool:
        return True


#: How long a retry waits for Ray to bring a dead actor back.
_RESTART_TIMEOUT_S = 60.0


class _RaySlot:
    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def submit(self, fn: ProcessFn, spec: JobSpec) -> cf.Future[JobOutcome]:
        return self.actor.run.remote(fn, spec).future()

    def restart(self) -> None:
        """Wait until Ray has restarted the dead actor (`max_restarts=-1`).

        A task sent while the actor is still restarting is refused, which would count as a second death.
        """
        import ray
        from ray import exceptions as rex

        deadline = time.monotonic() + _RESTART_TIMEOUT_S
        while True:
            try:
                ray.get(self.actor.ready.remote(), timeout=_RESTART_TIMEOUT_S)
                return
            except (rex.RayActorError, rex.GetTimeoutError):  # still restarting (or gone: the task will say)
                if time.monotonic() > deadline:
                    return  # the next task reports the failure
                time.sleep(0.2)

    def close(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)


@dataclass
class RayExecutor:
    """Jobs as tasks on a pool of Ray actors; the actors keep loaded models between tasks.

    Without `address` a local Ray instance with `num_cpus` CPUs is started (and stopped at the end);
    with one (`auto`, `ray://host:10001`) the batch joins that cluster. A Ray session that is already
    initialised in this process is used as it is and left running.
    """

    address: str | None = None
    """Cluster to join; None starts a local instance."""
    num_cpus: int | None = None
    """CPUs of a local instance (default: all of this machine's)."""
    cpus_per_task: float = 1.0
    """CPUs each actor reserves."""
    gpus_per_task: float = 0.0
    """GPUs each actor reserves (fractions share a GPU); above 0 the actor's device is `cuda`."""
    workers: int | None = None
    """Number of actors; default: as many as the cluster's resources fit."""
    retries: int = 1
    """Times a task is resubmitted after its actor died (the restarted actor reloads its models)."""
    log_to_driver: bool = False
    """Forward the workers' stdout/stderr to this process (noisy; for debugging)."""
    startup_seconds: float = field(default=0.0, init=False)
    """Time `ray.init` took (0 when a session was already running)."""
    _owns_ray: bool = field(default=False, init=False)
    _slots: list[_RaySlot] = field(default_factory=list, init=False)

    def __enter__(self) -> RayExecutor:
        ray = import_ray()
        if not ray.is_initialized():
            start = time.perf_counter()
            try:
                with _keeping_sigterm_handler():
                    self._init(ray)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = (
                    f"join the Ray cluster at {self.address}"
                    if self.address
                    else "start a local Ray instance"
                )
                raise UsageError(f"could not {where}: {_first_line(err)}") from None
            self.startup_seconds = time.perf_counter() - start
            self._owns_ray = True
        return self

    def _init(self, ray: Any) -> None:
        if self.address:
            ray.init(address=self.address, log_to_driver=self.log_to_driver)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=self.log_to_driver)

    def __exit__(self, *exc: object) -> None:
        import ray

        for slot in self._slots:
            slot.close()
        self._slots.clear()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def capacity(self) -> int:
        """Actors to start: `workers`, else as many as the cluster's resources hold at once.

        Raises:
            UsageError: the cluster cannot hold a single actor (e.g. GPUs requested, none present),
                which would otherwise wait forever. An explicit `workers` skips this check, for
                clusters that add nodes on demand.
        """
        import ray

        if self.workers is not None:
            return self.workers
        resources = ray.cluster_resources()
        fits = _fits(resources, cpus=self.cpus_per_task, gpus=self.gpus_per_task)
        if fits < 1:
            raise UsageError(
                f"the Ray cluster ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs) cannot run a "
                f"task needing {self.cpus_per_task:g} CPUs and {self.gpus_per_task:g} GPUs; lower the requests"
            )
        return fits

    def run(self, fn: ProcessFn, specs: Sequence[JobSpec]) -> Iterator[tuple[JobSpec, JobOutcome]]:
        import ray
        from ray import exceptions as rex

        wanted = min(self.capacity(), len(specs))
        if len(self._slots) < wanted:
            actor_class = ray.remote(_RayWorker).options(
                num_cpus=self.cpus_per_task,
                num_gpus=self.gpus_per_task,
                max_restarts=-1,  # always come back; how often a *job* is retried is bounded by `retries`
                max_task_retries=0,  # the driver resubmits, so it knows the attempts
            )
            device = "cuda" if self.gpus_per_task > 0 else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES per actor
            while len(self._slots) < wanted:
                name = f"ray-{len(self._slots)}"
                self._slots.append(_RaySlot(actor_class.remote(device, name)))
        death = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError)
        yield from _dispatch(self._slots, fn, specs, retries=self.retries, death=death)


@contextlib.contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """Keep this process's SIGTERM handler across `ray.init`.

    Ray replaces it in the driver (a Python handler that exits with status 15, and a C++ one that dumps a
    stack), so the batch's own handler (stop the actors, remove their temporary outputs, keep the report,
    exit 143) would never run.
    """
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(ValueError):  # not the main thread: signals belong to the embedding program
                signal.signal(signal.SIGTERM, previous)


def _fits(resources: Mapping[str, float], *, cpus: float, gpus: float) -> int:
    """How many actors with these requests fit in a cluster's total resources."""
    counts = []
    if cpus > 0:
        counts.append(math.floor(resources.get("CPU", 0.0) / cpus))
    if gpus > 0:
        counts.append(math.floor(resources.get("GPU", 0.0) / gpus))
    return min(counts) if counts else math.floor(resources.get("CPU", 1.0))


def import_ray() -> Any:
    """Import Ray, or say how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs the Ray package, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray
