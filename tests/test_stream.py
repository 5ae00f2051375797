"""The overlapped stage runner: order, overlap, errors from every stage, interrupts, bounded memory."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from nvsvideo.cli import sigterm_as_interrupt
from nvsvideo.errors import InputError, Terminated
from nvsvideo.pipelines.stream import (
    QUEUE_DEPTH,
    SEQUENTIAL_ENV,
    StageTimes,
    prefer_sequential,
    run_stages,
    sequential_requested,
)

#: Longest a failing pass may take to stop; a hang fails the test instead of blocking the suite.
DEADLINE = 10.0


def helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nvsvideo-")]


def run_with_deadline(fn: Callable[[], object]) -> BaseException | None:
    """Run `fn` on a thread; return what it raised (None if nothing), failing if it does not end in time."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            raised.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the pass hung"
    assert not helper_threads(), "a helper thread outlived the pass"
    return raised[0] if raised else None


@pytest.mark.parametrize("sequential", [False, True])
def test_every_item_goes_through_in_order(sequential: bool) -> None:
    out: list[int] = []
    times = run_stages(iter(range(50)), lambda x: x * x, out.append, sequential=sequential)
    assert out == [x * x for x in range(50)]
    assert set(times.busy) == {"decode", "model", "encode"} and times.sequential is sequential
    assert not helper_threads()


def test_stages_overlap_and_busy_time_excludes_waiting() -> None:
    # Sleeping stages release the GIL, like decode, torch and encode do in their heavy calls.
    step, n = 0.03, 12

    def source() -> Iterator[int]:
        for i in range(n):
            time.sleep(step)
            yield i

    def slow(x: int) -> int:
        time.sleep(step)
        return x

    def sink(_: int) -> None:
        time.sleep(step)

    sequential = run_stages(source(), slow, sink, sequential=True)
    overlapped = run_stages(source(), slow, sink, sequential=False)
    for times in (sequential, overlapped):
        assert all(n * step <= busy < 2 * n * step for busy in times.busy.values()), times.busy
    assert sequential.wall >= 3 * n * step
    # Perfect overlap is one stage's time plus filling the pipe (two steps); allow a loaded machine slack.
    assert overlapped.wall < 0.75 * sequential.wall, (overlapped.wall, sequential.wall)
    assert overlapped.overlap_ratio() is not None and overlapped.overlap_ratio() < 1.6


def test_stage_times_report() -> None:
    times = StageTimes(busy={"decode": 1.0, "model": 4.0, "encode": 2.0}, wall=4.4)
    assert times.slowest() == 4.0
    assert times.overlap_ratio() == pytest.approx(1.1)
    assert times.to_json() == {"decode": 1.0, "model": 4.0, "encode": 2.0, "wall": 4.4, "overlap_ratio": 1.1,
                               "mode": "overlapped"}
    assert StageTimes().overlap_ratio() is None


def failing_source() -> Iterator[int]:
    yield 1
    raise InputError("decode failed")


def failing_model(x: int) -> int:
    if x == 3:
        raise InputError("model failed")
    return x


def failing_sink(x: int) -> None:
    if x == 3:
        raise InputError("encode failed")


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize(("source", "model", "sink", "message"), [
    (failing_source, lambda x: x, lambda x: None, "decode failed"),
    (lambda: iter(range(100)), failing_model, lambda x: None, "model failed"),
    (lambda: iter(range(100)), lambda x: x, failing_sink, "encode failed"),
])
def test_an_error_in_any_stage_surfaces_without_hanging(source: Callable[[], Iterator[int]],
                                                        model: Callable[[int], int], sink: Callable[[int], None],
                                                        message: str, sequential: bool) -> None:
    err = run_with_deadline(lambda: run_stages(source(), model, sink, sequential=sequential))
    assert isinstance(err, InputError) and str(err) == message


def test_a_failure_closes_the_source_so_its_files_are_released() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.set()

    err = run_with_deadline(lambda: run_stages(source(), failing_model, lambda x: None))
    assert isinstance(err, InputError) and closed.is_set()


def test_a_sink_failure_stops_a_blocked_source_and_model() -> None:
    # The source never ends: only the sink's failure can stop the pass.
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    err = run_with_deadline(lambda: run_stages(endless(), lambda x: x, failing_sink))
    assert isinstance(err, InputError) and str(err) == "encode failed"


def test_memory_is_bounded_by_the_queues() -> None:
    produced = consumed = 0
    most_in_flight = 0

    def source() -> Iterator[int]:
        nonlocal produced
        for i in range(40):
            produced += 1
            yield i

    def slow_sink(_: int) -> None:
        nonlocal consumed, most_in_flight
        most_in_flight = max(most_in_flight, produced - consumed)
        time.sleep(0.01)
        consumed += 1

    run_stages(source(), lambda x: x, slow_sink)
    # Two queues of QUEUE_DEPTH plus one item held by each of the three stages.
    assert consumed == 40 and most_in_flight <= 2 * QUEUE_DEPTH + 3


@pytest.mark.parametrize(("signum", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_ctrl_c_and_sigterm_on_the_calling_thread_stop_the_helpers(signum: int, raised: type) -> None:
    def source() -> Iterator[int]:
        for i in range(1000):
            time.sleep(0.02)
            yield i

    timer = threading.Timer(0.2, os.kill, (os.getpid(), signum))
    started = time.perf_counter()
    # What every command runs under: SIGTERM raises `Terminated` on the calling thread.
    with sigterm_as_interrupt():
        timer.start()
        try:
            with pytest.raises(raised):
                run_stages(source(), lambda x: x, lambda x: None)
        finally:
            timer.cancel()
    assert time.perf_counter() - started < DEADLINE
    assert not helper_threads()


def test_sequential_from_the_environment_else_the_callers_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    def ran_sequentially(**kwargs: bool) -> bool:
        return run_stages(iter([1]), lambda x: x, lambda x: None, **kwargs).sequential

    monkeypatch.delenv(SEQUENTIAL_ENV, raising=False)
    assert sequential_requested() is None
    assert not ran_sequentially() and ran_sequentially(prefer=True)
    monkeypatch.setenv(SEQUENTIAL_ENV, "1")
    assert sequential_requested() is True
    assert ran_sequentially() and not ran_sequentially(sequential=False)
    monkeypatch.setenv(SEQUENTIAL_ENV, "0")
    assert sequential_requested() is False
    assert not ran_sequentially(prefer=True)


def test_only_a_pass_inverting_on_the_cpu_prefers_sequential() -> None:
    assert prefer_sequential("cpu", inverting=True)
    assert not prefer_sequential("cpu", inverting=False)
    assert not prefer_sequential("cuda", inverting=True)
