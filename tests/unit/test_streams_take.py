"""streams.take: batches of at most ``max_`` in order, the next one filling while the agent
holds the last, and a batch acked only when the agent asks for the next one.

A real Faust stream over an in-memory channel (no broker: a channel's events are acked in
memory, which is what ``message.acked`` shows)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from streams.take import overlapped_batches

WITHIN_S = 0.05
DEADLINE_S = 5.0


async def _until(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.002)


def _current(stream: faust.StreamT[Any]) -> Any:
    event = stream.current_event
    return None if event is None else event.value


def _run(body: Callable[[faust.ChannelT[Any], faust.StreamT[Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        app = faust.App("take-test", broker="kafka://127.0.0.1:1", store="memory://")
        app.flow_control.resume()  # as after an assignment; no broker is involved
        channel = app.channel(maxsize=100)
        await asyncio.wait_for(body(channel, channel.stream()), DEADLINE_S * 2)

    asyncio.run(main())


def test_batches_hold_at_most_max_in_order_and_a_partial_one_comes_after_within() -> None:
    async def body(channel: faust.ChannelT[Any], stream: faust.StreamT[Any]) -> None:
        for i in range(7):
            await channel.send(value=i)
        got: list[list[int]] = []
        async for batch in overlapped_batches(stream, 3, WITHIN_S):
            got.append([e.value for e in batch])
            if sum(map(len, got)) == 7:
                break
        assert got == [[0, 1, 2], [3, 4, 5], [6]]

    _run(body)


def test_the_next_batch_fills_while_the_agent_holds_one_and_is_acked_only_after() -> None:
    async def body(channel: faust.ChannelT[Any], stream: faust.StreamT[Any]) -> None:
        for i in range(3):
            await channel.send(value=i)
        batches = overlapped_batches(stream, 3, WITHIN_S)
        first = await anext(batches)
        assert [e.value for e in first] == [0, 1, 2]
        for i in range(3, 8):
            await channel.send(value=i)
        # While the agent holds the first batch (here: awaits, as Outbox.flush does), the
        # drainer buffers the next max_ events and waits holding the one after them (the
        # stream's current event). Faust's take_events would wait holding the first of them.
        await _until(lambda: _current(stream) == 6, "the next batch buffered")
        assert not any(e.message.acked for e in first)
        second = await anext(batches)
        assert [e.value for e in second] == [3, 4, 5]  # never more than max_
        assert all(e.message.acked for e in first)
        assert not any(e.message.acked for e in second)
        third = await anext(batches)
        assert [e.value for e in third] == [6, 7]
        assert all(e.message.acked for e in second)
        await batches.aclose()

    _run(body)


def test_a_batch_held_when_the_batches_are_closed_is_not_acked() -> None:
    """A worker stopping or crashing while the agent flushes: the batch is read again after the
    restart (Faust's take_events acks it in a ``finally``)."""

    async def body(channel: faust.ChannelT[Any], stream: faust.StreamT[Any]) -> None:
        for i in range(3):
            await channel.send(value=i)
        batches = overlapped_batches(stream, 3, WITHIN_S)
        held = await anext(batches)
        await batches.aclose()
        assert [e.value for e in held] == [0, 1, 2]
        assert not any(e.message.acked for e in held)

    _run(body)
