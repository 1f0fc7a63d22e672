"""streams.delivery: the fetcher's delivery call without tasks when it does not block, and
exactly Faust's wait (a suspension interrupts it) when it does; the stream buffer that refills
from half."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from mode import Service
from mode.utils.locks import Event
from mode.utils.queues import FlowControlEvent

from streams.app import App
from streams.delivery import FastDelivery, RefillQueue, Resumed


async def _returns_now() -> str:
    return "now"


async def _waits_on(fut: asyncio.Future[str]) -> str:
    return "after " + await fut


async def _sleeps(n: int) -> int:
    for _ in range(n):
        await asyncio.sleep(0)
    return n


async def _raises_after_wait() -> None:
    await asyncio.sleep(0)
    raise ValueError("bad message")


async def _catches_inner_error() -> str:
    try:
        await _raises_after_wait()
    except ValueError as exc:
        await asyncio.sleep(0)
        return f"caught {exc}"
    return "not caught"


SHAPES: list[Callable[[], Coroutine[Any, Any, Any]]] = [
    lambda: _sleeps(1),
    lambda: _sleeps(5),
    _raises_after_wait,
    _catches_inner_error,
]


async def _outcome(awaitable: Any) -> tuple[str, Any]:
    try:
        return "value", await asyncio.ensure_future(awaitable)
    except Exception as exc:
        return "error", repr(exc)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_resumed_coroutine_ends_as_the_coroutine_itself_does(
    shape: Callable[[], Coroutine[Any, Any, Any]],
) -> None:
    async def main() -> None:
        direct = await _outcome(shape())
        coro = shape()
        resumed = await _outcome(Resumed(coro, coro.send(None)))
        assert resumed == direct

    asyncio.run(main())


def test_a_resumed_coroutine_gets_the_future_it_waited_on_and_its_cancellation() -> None:
    async def main() -> None:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        coro = _waits_on(fut)
        task = asyncio.ensure_future(Resumed(coro, coro.send(None)))
        await asyncio.sleep(0)
        fut.set_result("the put")
        assert await task == "after the put"

        cleaned: list[bool] = []

        async def blocked() -> None:
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                cleaned.append(True)

        coro2 = blocked()
        task2 = asyncio.ensure_future(Resumed(coro2, coro2.send(None)))
        await asyncio.sleep(0)
        task2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task2
        assert cleaned == [True]

    asyncio.run(main())


class _Fetcher(FastDelivery, Service):
    """The consumer's shape as far as its delivery call needs: a service with ``suspend_flow``."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


def _counting_tasks(loop: asyncio.AbstractEventLoop) -> list[int]:
    made = [0]

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made[0] += 1
        return asyncio.Task(coro, loop=loop, **kw)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    return made


def test_a_delivery_that_does_not_block_makes_no_task() -> None:
    async def main() -> None:
        fetcher = _Fetcher()
        made = _counting_tasks(asyncio.get_running_loop())
        got = await fetcher.wait_first(_returns_now(), fetcher.suspend_flow.wait())
        assert (got.done, got.results, got.stopped) == ([got.done[0]], ["now"], False)
        assert made == [0]

    asyncio.run(main())


def test_a_blocked_delivery_finishes_when_it_can() -> None:
    async def main() -> None:
        fetcher = _Fetcher()
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(
            fetcher.wait_first(_waits_on(fut), fetcher.suspend_flow.wait())
        )
        await asyncio.sleep(0.01)
        assert not waiting.done()
        fut.set_result("room")
        got = await asyncio.wait_for(waiting, 5)
        assert got.results == ["after room"] and not got.stopped

    asyncio.run(main())


def test_a_suspension_interrupts_a_blocked_delivery_as_in_faust() -> None:
    async def main() -> None:
        fetcher = _Fetcher()
        cleaned: list[bool] = []

        async def blocked_put() -> None:
            try:
                await asyncio.get_running_loop().create_future()  # a full queue
            finally:
                cleaned.append(True)

        waiting = asyncio.ensure_future(
            fetcher.wait_first(blocked_put(), fetcher.suspend_flow.wait())
        )
        await asyncio.sleep(0.01)
        fetcher.suspend_flow.set()  # a rebalance
        got = await asyncio.wait_for(waiting, 5)
        assert len(got.done) == 1 and got.done[0] is not None
        await asyncio.sleep(0.01)
        assert cleaned == [True]  # the blocked delivery was cancelled, as Faust's wait does

    asyncio.run(main())


def test_a_delivery_error_raises_from_the_call() -> None:
    async def fails_at_once() -> None:
        raise ValueError("undecodable")

    async def main() -> None:
        fetcher = _Fetcher()
        with pytest.raises(ValueError, match="undecodable"):
            await fetcher.wait_first(fails_at_once(), fetcher.suspend_flow.wait())
        with pytest.raises(ValueError, match="bad message"):
            await fetcher.wait_first(_raises_after_wait(), fetcher.suspend_flow.wait())

    asyncio.run(main())


def test_other_calls_and_a_suspended_flow_take_fausts_own_wait() -> None:
    async def main() -> None:
        fetcher = _Fetcher()
        made = _counting_tasks(asyncio.get_running_loop())
        got = await fetcher.wait_first(_returns_now())
        assert got.results == ["now"] and made[0] > 0
        fetcher.suspend_flow.set()
        made[0] = 0
        got = await fetcher.wait_first(_returns_now(), fetcher.suspend_flow.wait())
        assert made[0] > 0  # Faust's wait_first: four tasks

    asyncio.run(main())


def _filled(n: int, flow: FlowControlEvent | None = None) -> RefillQueue:
    if flow is None:
        flow = FlowControlEvent()
        flow.resume()  # as Faust does once the worker has its partitions
    queue = RefillQueue(n, flow_control=flow, clear_on_resume=True)
    for i in range(n):
        queue.put_nowait(i)
    return queue


def test_a_full_buffer_takes_nothing_until_the_stream_took_it_down_to_half() -> None:
    async def main() -> None:
        queue = _filled(8)
        put = asyncio.ensure_future(queue.put(8))
        taken = []
        for _ in range(3):
            taken.append(await queue.get())
            await asyncio.sleep(0)
            assert queue.full() and not put.done()  # Faust's queue takes one per one taken
        taken.append(await queue.get())  # down to half: 4 left
        assert not queue.full()
        await asyncio.wait_for(put, 5)
        for i in range(9, 12):  # the next half goes in without a wait
            queue.put_nowait(i)
        taken += [queue.get_nowait() for _ in range(queue.qsize())]
        assert taken == list(range(12))  # and in order

    asyncio.run(main())


def test_a_flow_control_resume_empties_the_buffer_and_lets_a_waiting_put_in() -> None:
    async def main() -> None:
        flow = FlowControlEvent()
        queue = _filled(4, flow)
        put = asyncio.ensure_future(queue.put("after the rebalance"))
        await asyncio.sleep(0)
        flow.suspend()
        flow.resume()  # clears every queue it manages, as after a rebalance
        await asyncio.wait_for(put, 5)
        assert queue.get_nowait() == "after the rebalance" and queue.empty()

    asyncio.run(main())


def test_a_cancelled_put_leaves_nothing_behind() -> None:
    async def main() -> None:
        queue = _filled(4)
        put = asyncio.ensure_future(queue.put("cancelled"))
        await asyncio.sleep(0)
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        assert [queue.get_nowait() for _ in range(4)] == [0, 1, 2, 3] and queue.empty()
        await asyncio.wait_for(queue.put("next"), 5)
        assert queue.get_nowait() == "next"

    asyncio.run(main())


def test_an_error_thrown_into_the_buffer_still_raises_in_the_streams_get() -> None:
    async def main() -> None:
        queue = _filled(2)
        await queue.throw(ValueError("crashed"))
        with pytest.raises(ValueError, match="crashed"):
            await queue.get()

    asyncio.run(main())


def test_every_stream_of_the_app_gets_this_buffer() -> None:
    async def main() -> None:
        app = App("delivery-test", broker="kafka://127.0.0.1:1", store="memory://")
        channel = app.channel(maxsize=16)
        assert isinstance(channel.queue, RefillQueue) and channel.queue.maxsize == 16
        assert channel.queue._flow_control is app.flow_control

    asyncio.run(main())


def test_the_producer_buffer_check_reads_no_setting_and_still_holds_over_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The conductor awaits this check before every message it delivers. Under the limit it
    returns without reading a setting (Faust's read ``producer_threaded`` through its registry
    each time); over the limit it still goes to Faust's own wait, the flush, as before."""

    async def main() -> None:
        app = App("ebb-test", broker="kafka://127.0.0.1:1", store="memory://")
        buffer = app.producer.buffer

        def no_setting_read(_conf: Any) -> bool:
            raise AssertionError("the check read a setting")

        with monkeypatch.context() as m:
            m.setattr(type(app.conf), "producer_threaded", property(no_setting_read))
            await buffer.wait_until_ebb()  # empty: returns at once
        buffer.pending._queue.extend([object()] * (buffer.max_messages + 1))  # type: ignore[attr-defined]
        # Faust's own wait runs: it flushes, and a producer not started cannot.
        with pytest.raises(RuntimeError, match="Cannot flush: Producer not Running"):
            await buffer.wait_until_ebb()

    asyncio.run(main())
