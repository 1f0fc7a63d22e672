"""Fakes shared by the unit tests: a publisher whose sends succeed or fail as scripted, and
the part of a Faust table the outbox uses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from eventpipe.publisher import Failure
from streams.dedupe import Expiry

TIMED_OUT = Failure("_MSG_TIMED_OUT: Local: Message timed out", retryable=True)
TOO_LARGE = Failure(
    "not enqueued: MSG_SIZE_TOO_LARGE: Broker: Message size too large",
    retryable=False,
    too_large=True,
)


class ScriptedPublisher:
    """Fails the first ``failures`` items it is handed as a retryable timeout, and for good
    (``refusal``: by default ``TOO_LARGE``, as librdkafka does) every item over ``max_bytes``
    or sent to a topic of ``refuse_topics``; records what it acknowledged."""

    def __init__(
        self,
        failures: int = 0,
        hang: bool = False,
        max_bytes: int | None = None,
        refuse_topics: frozenset[str] = frozenset(),
        refusal: Failure = TOO_LARGE,
    ) -> None:
        self.failures, self.hang = failures, hang
        self.max_bytes, self.refuse_topics, self.refusal = max_bytes, refuse_topics, refusal
        self.refused: list[tuple[str, bytes]] = []
        self.acked: list[tuple[str, bytes]] = []
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.on_publish: Callable[[], None] = lambda: None

    async def publish(
        self,
        topic: str,
        items: Sequence[tuple[bytes, bytes]],
        partitions: Sequence[int] | None = None,
    ) -> list[Failure | None]:
        self.on_publish()
        if self.hang:
            await asyncio.sleep(3600)
        out: list[Failure | None] = []
        for i, (key, value) in enumerate(items):
            too_large = self.max_bytes is not None and len(key) + len(value) > self.max_bytes
            if too_large or topic in self.refuse_topics:
                self.refused.append((topic, key))
                out.append(self.refusal)
            elif self.failures:
                self.failures -= 1
                out.append(TIMED_OUT)
            else:
                self.acked.append((topic, key))
                self.sent.append((topic, key, value, -1 if partitions is None else partitions[i]))
                out.append(None)
        return out

    def close(self) -> None: ...


class FakeTable(dict[bytes, Any]):
    """What the outbox and the agent use of a Faust table: changelog topic, serializers,
    raw_update, the store (``data``) and, for the dedupe table, its ``expiry``."""

    key_serializer = "raw"
    value_serializer = "json"

    def __init__(self, changelog: str = "app-dedupe-changelog", window_ms: int = 3_600_000) -> None:
        super().__init__()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: changelog)
        self.expiry = Expiry(window_ms)

    @property
    def data(self) -> dict[bytes, Any]:
        return self

    def raw_update(self, entries: dict[bytes, Any]) -> None:
        self.update(entries)
