"""Faust's fetcher hands a message to the streams without four tasks per message.

Faust (faust-streaming 0.15.3) delivers every fetched message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: the delivery may block
(flow control during a rebalance, a full stream buffer), and a rebalance must be able to
interrupt it. ``Service.wait_first`` makes that interruptible by wrapping the delivery, the
suspension event, the service's stop and its crash in four tasks and an ``asyncio.wait``, then
cancelling three of them. That was about a fifth of the worker's busy time in a py-spy profile
(``bench/``'s agents stage), more than decoding and processing the event together.

Almost always nothing blocks: the delivery decodes the message and puts it on a stream queue
with room. So :class:`FastDelivery` runs the delivery's first step in place. If it finishes
there, that is the answer, with no task made. If it stops to wait, the coroutine goes on from
where it stopped (:class:`Resumed`) under Faust's own ``wait_first``, so a suspension, a stop or
a crash interrupts it exactly as before. A delivery that raises raises the same error. Only the
first step differs: it runs in the fetcher's task instead of a new one, and nothing in the
delivery looks at the current task.

A delivery does block when the stream's buffer is full, which is the steady state of a busy
worker: the fetcher is ahead of the agent. Faust's buffer then takes one record each time the
stream takes one, so every delivery blocked: a sixth of them in ``bench/``'s agents stage, each
paying the four tasks above and the conductor's own task and ``asyncio.wait``.
:class:`RefillQueue`, the buffer of every stream here, has a low-water mark instead: once full,
it takes no record until the stream has taken it down to half, and then takes the next half
without a wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, cast

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types.transports import ProducerBufferT
from mode.services import WaitResults
from mode.utils.queues import ThrowableQueue

from streams.recovery import SeekKeepsDelivered

FIXES_FAUST_VERSION = "0.15.3"
"""The faust-streaming release this was written against and verified on: a test fails when the
installed one differs, so the delivery call (``Consumer._drain_messages``) is re-checked."""


class Resumed:
    """An awaitable that continues ``coro`` after its first step, which yielded ``signal``.

    It passes every value and error the awaiting task sends on to ``coro``, so the task waits
    on what ``coro`` waits on and a cancellation reaches ``coro`` as it would have."""

    def __init__(self, coro: Coroutine[Any, Any, Any], signal: Any) -> None:
        self._coro = coro
        self._signal = signal

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, signal = self._coro, self._signal
        while True:
            try:
                sent = yield signal
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation or a failed future: coro's to handle
                try:
                    signal = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    signal = coro.send(sent)
                except StopIteration as done:
                    return done.value


class FastDelivery:
    """Mixin for Faust's consumer: ``wait_first`` for the fetcher's delivery call, with a fast
    path when the delivery does not block (module docstring). Every other call is Faust's."""

    suspend_flow: Any

    # Service.wait_first's own signature, timeout included.
    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109
        base: Any = super()
        if (
            timeout is not None
            or len(coros) != 2
            or not isinstance(coros[0], Coroutine)
            or self.suspend_flow.is_set()
            or not _is_wait_of(coros[1], self.suspend_flow)
        ):
            results: WaitResults = await base.wait_first(*coros, timeout=timeout)
            return results
        delivery, suspended = coros
        try:
            signal = delivery.send(None)
        except StopIteration as done:
            suspended.close()
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            suspended.close()
            raise
        results = await base.wait_first(Resumed(delivery, signal), suspended)
        return results


def _is_wait_of(coro: Any, event: Any) -> bool:
    """``coro`` is ``event.wait()``, not yet started."""
    frame = getattr(coro, "cr_frame", None)
    return (
        frame is not None
        and getattr(coro, "cr_code", None) is type(event).wait.__code__
        and frame.f_locals.get("self") is event
    )


class Consumer(FastDelivery, SeekKeepsDelivered, faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with :class:`FastDelivery` and the seek of ``streams.recovery``."""


class Transport(faust_aiokafka.Transport):
    """The ``kafka://`` transport with :class:`Consumer`; ``streams.app.App`` builds it."""

    Consumer = Consumer


def ebb_check_without_settings(producer_buffer: ProducerBufferT) -> None:
    """Faust's conductor awaits ``producer.buffer.wait_until_ebb()`` before every message it
    delivers, to hold the streams while Faust's producer buffer (``table[key] = value`` writes)
    is over its limit. Its size reads ``app.conf.producer_threaded`` through Faust's settings
    registry at each call: 3.4 us a message against 0.3 us for the same test on the same
    queue, read here once. The worker's tables are written through the outbox, so the buffer
    stays empty, but the check is kept as it was: over the limit, Faust's own wait runs.
    A threaded producer keeps Faust's check (its queue comes later)."""
    buffer = cast(ProducerBuffer, producer_buffer)
    app = buffer.app
    if app is None or app.conf.producer_threaded:
        return
    faust_wait = buffer.wait_until_ebb
    pending = buffer.pending._queue  # type: ignore[attr-defined]  # the deque size() counts
    limit = buffer.max_messages

    async def wait_until_ebb() -> None:
        if len(pending) > limit:
            await faust_wait()

    buffer.wait_until_ebb = wait_until_ebb  # type: ignore[method-assign]


class RefillQueue(ThrowableQueue[Any]):
    """Faust's stream buffer (``ThrowableQueue``) with a low-water mark: once it is full it
    counts as full until the stream has taken it down to half (module docstring).

    What stays as in Faust's: a put waits for flow control first, then for room, and a
    cancelled put leaves nothing behind; the conductor's non-blocking put
    (``put_nowait_enhanced``) and its pressure callbacks are untouched; a flow-control resume
    (``clear``) empties it and opens it again; ``throw`` still raises in the stream's get.
    """

    def __init__(self, maxsize: int | None = 0, **kwargs: Any) -> None:
        super().__init__(maxsize or 0, **kwargs)
        self._refill_at = self.maxsize // 2
        self._room = asyncio.Event()
        """Clear while the buffer is held full, from full until the stream took it to half."""
        self._room.set()

    def full(self) -> bool:
        return not self._room.is_set()

    def _put(self, item: Any) -> None:
        super()._put(item)
        if 0 < self.maxsize <= self.qsize():
            self._room.clear()

    async def put(self, value: Any) -> None:
        await self._flow_control.acquire()
        while self.full():
            await self._room.wait()
        self.put_nowait(value)

    def _get(self) -> Any:
        item = super()._get()
        if self.qsize() <= self._refill_at:
            self._room.set()
        return item

    def clear(self) -> None:
        super().clear()
        self._room.set()
