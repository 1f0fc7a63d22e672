"""The agents' batches, with the next batch filling while the last one's outputs are in flight.

Faust (faust-streaming 0.15.3) ``Stream.take_events`` stops filling its buffer while the agent
holds a batch: the stream's drainer waits on a future until the agent asks for the next one. The
agent spends the end of every batch awaiting Kafka's acknowledgement of its outputs
(``Outbox.flush``), so during that wait the worker did nothing at all (the event loop sat in
``select``: a fifth of its busy time in a py-spy profile of ``bench/``'s agents stage), and after
it every event of the next batch went through Faust's per-event machinery (decode, event,
processors) before the agent could start.

:func:`overlapped_batches` lets the drainer keep filling a second buffer, at most ``max_``
events, while the agent works on the first. What stays as in Faust's:

- acks: the events of a batch are acked only when the agent asks for the next batch, so after
  its outputs were acknowledged; the events already buffered for the next batch are not acked,
  and a consumer commits only contiguous acked offsets. One difference: a batch the agent still
  holds when the generator is closed (the worker stopping or crashing mid-batch) is not acked,
  where Faust's acks it; it is read again after the restart;
- order: one agent takes the buffers in the order the drainer filled them, so each partition's
  records are handled in order;
- the bounds: at most ``max_`` events a batch, a partial batch after ``within`` seconds, and
  at most ``2 * max_`` events held.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

from faust import EventT, Stream, StreamT

FIXES_FAUST_VERSION = "0.15.3"
"""The faust-streaming release whose ``take_events`` this mirrors (processor, passive drainer,
manual acks, the stream's set of buffering generators); a test fails when the installed one
differs."""


def overlapped_batches(
    stream: StreamT[Any], max_: int, within: float
) -> AsyncGenerator[Sequence[EventT[Any]], None]:
    """``stream.take_events(max_, within)``, the next batch filling while the agent holds one."""
    s = cast("Stream[Any]", stream)
    agen = _batches(s, max_, within)
    s._active_agens.add(agen)  # Stream.on_stop closes it, as it does take_events'
    return agen


async def _batches(
    stream: Stream[Any], max_: int, within: float
) -> AsyncGenerator[Sequence[EventT[Any]], None]:
    events: list[EventT[Any]] = []
    full = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def add_to_buffer(value: Any) -> Any:
        try:
            event = stream.current_event
            if event is None:
                raise RuntimeError("a buffered value without its event")
            if len(events) >= max_:  # both buffers full: wait until the agent takes one
                room.clear()
                await stream.wait(room)  # type: ignore[arg-type]  # any awaitable .wait()
                if stream.should_stop:
                    return value  # not acked: read again after the restart
            events.append(event)
            if len(events) >= max_:
                full.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as take_events does: the stream crashes, not silently
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    acks_were = stream.enable_acks
    stream.enable_acks = False  # acked below, once the agent is done with a batch
    stream.add_processor(add_to_buffer)
    stream._enable_passive(cast(Any, aiter(stream.channel)))
    try:
        while not stream.should_stop:
            if len(events) < max_:
                await stream.wait_for_stopped(full, timeout=within)  # type: ignore[arg-type]
            if not events:
                continue
            taken = events[:]
            events.clear()
            full.clear()
            room.set()  # the drainer fills the next batch while the agent holds this one
            yield taken
            # Only when the agent asks for the next batch. Faust's take_events acks in a
            # ``finally``, so also when the generator is closed while the agent holds the
            # batch (a stop or a crash mid-flush): its outputs may never have reached Kafka.
            for event in taken:
                await stream.ack(event)
    finally:
        stream.enable_acks = acks_were
        stream._processors.remove(add_to_buffer)
