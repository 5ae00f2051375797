"""Overlapped stages: prepare -> model -> finish, joined by bounded queues.

A pipeline pass is three stages: a source that decodes and prepares work items (its own thread), the
model (on the calling thread, so the device and Ctrl-C stay where they are), and a sink that composes,
encodes or stores the results (its own thread). PyAV, numpy and torch release the GIL in their heavy
calls, so the three overlap; the bounded queues keep at most `depth` items waiting between two stages,
so memory stays flat in the video's length.

Any stage's exception stops the other two promptly and is raised on the calling thread; the helper
threads are always joined before `run_stages` returns or raises, so an output's owner (an atomic
writer in an enclosing `with`) is closed only after the sink stopped using it.

`sequential=True` runs the same stages one after another on the calling thread: the reference for
identical outputs and for the overlap's benefit. `NVSVIDEO_SEQUENTIAL=1` forces it for a whole command,
`NVSVIDEO_SEQUENTIAL=0` forces overlap; otherwise the caller's preference decides (`prefer_sequential`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")

#: Items waiting between two stages; two keep a stage busy while its neighbour finishes an item.
QUEUE_DEPTH = 2
#: How often a thread blocked on a queue looks whether the run was stopped (seconds).
POLL_SECONDS = 0.05
#: Environment variable that makes every pass sequential (diagnostics, the benchmark's reference).
SEQUENTIAL_ENV = "NVSVIDEO_SEQUENTIAL"


@dataclass
class StageTimes:
    """Seconds each stage spent working (not waiting on a queue) and the pass's wall time."""

    busy: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    sequential: bool = False

    def slowest(self) -> float:
        return max(self.busy.values(), default=0.0)

    def overlap_ratio(self) -> float | None:
        """Wall time / the slowest stage's busy time: 1.0 is perfect overlap; a sequential pass gives
        about sum / max."""
        slowest = self.slowest()
        return self.wall / slowest if slowest > 0 else None

    def to_json(self) -> dict[str, Any]:
        ratio = self.overlap_ratio()
        return {**{name: round(seconds, 3) for name, seconds in self.busy.items()}, "wall": round(self.wall, 3),
                "overlap_ratio": None if ratio is None else round(ratio, 3),
                "mode": "sequential" if self.sequential else "overlapped"}


def sequential_requested() -> bool | None:
    """What `NVSVIDEO_SEQUENTIAL` asks for: sequential passes (1, true, yes), overlapped ones (0, false, no),
    or nothing (None: unset or anything else)."""
    value = os.environ.get(SEQUENTIAL_ENV, "").strip().lower()
    return True if value in ("1", "true", "yes") else False if value in ("0", "false", "no") else None


def prefer_sequential(device_type: str, *, inverting: bool) -> bool:
    """Whether a pass whose model stage runs on `device_type` ("cpu", "cuda", ...) is better run sequentially.

    Inverting on the CPU, the encoders keep every core busy on their own: decode and encode threads beside
    them only take cores from them (measured: a first run 16.1 s overlapped vs 13.2 s sequential on 2 cores),
    and there is no idle time for the overlap to fill, so such a pass runs its stages one after another.
    Rendering only, the model leaves gaps that decode and encode fill (1.17x faster overlapped on 2 cores);
    on a GPU the model stage takes no CPU cores from the others.
    """
    return device_type == "cpu" and inverting


class _End:
    """Marks the end of a stream in a queue."""


class _Failure:
    """Carries a source's exception to the calling thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = _End()


@dataclass
class _Clock:
    """Accumulates one stage's busy seconds."""

    times: StageTimes
    name: str

    def __post_init__(self) -> None:
        self.times.busy[self.name] = 0.0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.times.busy[self.name] += time.perf_counter() - started


def run_stages(source: Iterable[A], model: Callable[[A], B], sink: Callable[[B], None], *,
               names: tuple[str, str, str] = ("decode", "model", "encode"), sequential: bool | None = None,
               prefer: bool = False, depth: int = QUEUE_DEPTH) -> StageTimes:
    """Feed every item of `source` through `model` (calling thread) into `sink`, in order.

    Args:
        source: produces the work items; iterated on a helper thread (a generator is closed there when
            the pass stops early, so its `with` blocks unwind).
        model: item -> result, on the calling thread.
        sink: consumes each result, in order, on a second helper thread.
        names: the stages' names in `StageTimes.busy`.
        sequential: run all three on the calling thread, one item at a time; None: `sequential_requested()`,
            else `prefer`.
        prefer: the caller's choice when neither `sequential` nor the environment decides (`prefer_sequential`).
        depth: items at most waiting in each queue.

    Returns:
        the busy seconds per stage and the wall time.

    Raises:
        whatever a stage raised first (KeyboardInterrupt and the CLI's SIGTERM exception arrive on the
        calling thread and stop the helpers the same way).
    """
    if sequential is None:
        requested = sequential_requested()
        sequential = prefer if requested is None else requested
    times = StageTimes(sequential=sequential)
    produce, compute, finish = (_Clock(times, name) for name in names)
    started = time.perf_counter()
    try:
        if sequential:
            _run_sequential(source, model, sink, produce, compute, finish)
        else:
            _run_overlapped(source, model, sink, produce, compute, finish, depth)
    finally:
        times.wall = time.perf_counter() - started
    return times


def _run_sequential(source: Iterable[A], model: Callable[[A], B], sink: Callable[[B], None],
                    produce: _Clock, compute: _Clock, finish: _Clock) -> None:
    items = iter(source)
    try:
        while (item := produce.call(next, items, _END)) is not _END:
            finish.call(sink, compute.call(model, item))
    finally:
        _close(items)


def _run_overlapped(source: Iterable[A], model: Callable[[A], B], sink: Callable[[B], None],
                    produce: _Clock, compute: _Clock, finish: _Clock, depth: int) -> None:
    stop = threading.Event()
    inbox: queue.Queue[Any] = queue.Queue(depth)
    outbox: queue.Queue[Any] = queue.Queue(depth)
    sink_errors: list[BaseException] = []

    def feed() -> None:
        items = iter(source)
        try:
            while True:
                item = produce.call(next, items, _END)
                if not _put(inbox, item, stop) or item is _END:
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread, which raises it
            _put(inbox, _Failure(err), stop)
        finally:
            _close(items)

    def drain() -> None:
        while (result := _get(outbox, stop)) is not _END:
            try:
                finish.call(sink, result)
            except BaseException as err:  # noqa: BLE001 - handed to the calling thread, which raises it
                sink_errors.append(err)
                stop.set()
                return

    threads = [threading.Thread(target=feed, name="nvsvideo-source", daemon=True),
               threading.Thread(target=drain, name="nvsvideo-sink", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = _get(inbox, stop)
            if isinstance(item, _Failure):
                raise item.error
            if item is _END:
                break
            result = compute.call(model, item)
            if not _put(outbox, result, stop):
                break
        if not stop.is_set():
            _put(outbox, _END, stop)
        _join(threads[1])
        if sink_errors:
            raise sink_errors[0]
    finally:
        stop.set()
        for thread in threads:
            _join(thread)


def _put(box: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item` unless the pass stops first; returns whether it was put."""
    while not stop.is_set():
        try:
            box.put(item, timeout=POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _get(box: queue.Queue[Any], stop: threading.Event) -> Any:
    """The next item, or the end marker once the pass stops."""
    while not stop.is_set():
        try:
            return box.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
    return _END


def _join(thread: threading.Thread) -> None:
    # Short waits, so that a signal handler (Ctrl-C, SIGTERM) still runs on the calling thread meanwhile.
    while thread.is_alive():
        thread.join(POLL_SECONDS)


def _close(items: Iterator[Any]) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()
