"""The suppressions topic read as a table: every process that applies the worker's rules to
live traffic (the worker) keeps a :class:`~eventpipe.suppression.Suppressions` current from it.

The feed assigns itself every partition of the topic from the beginning (no group, nothing
committed: each process needs every suppression, not a share of them), applies each record
(a suppression, or a tombstone that lifts one) and keeps reading. It is *ready* once it has
reached the end of every partition once: a worker waits for that before it takes traffic, so a
restarted worker never lets a forgotten person's event through while it catches up. The topic is
compacted and keyed by person, so it stays as small as the number of people forgotten (on the
embedded broker, which never compacts, it grows by one record per forget and lift).

Reaching the end is librdkafka's end-of-partition event, which comes after the last record
read, so Tansu's short high watermark (``eventpipe.drain``) does not cut the read short.
"""

from __future__ import annotations

import threading

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from eventpipe import retry
from eventpipe.kafka import client_config
from eventpipe.settings import Settings
from eventpipe.suppression import Suppression, Suppressions, parse_key

log = structlog.get_logger(__name__)

FEED_GROUP = "eventpipe-suppressions-feed"
"""librdkafka wants a group id even to assign(); the feed never joins it nor commits."""
POLL_S = 0.1
READY_TIMEOUT_S = 60.0


class SuppressionFeed:
    """A thread keeping :attr:`suppressions` equal to the topic's latest state."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.suppressions = Suppressions()
        self.ready = threading.Event()
        self._topic = topic
        conf = {
            **client_config(settings),
            "group.id": FEED_GROUP,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
        if settings.workarounds.fetch_wait_ms is not None:
            conf["fetch.wait.max.ms"] = settings.workarounds.fetch_wait_ms
        self._consumer = Consumer(conf)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="suppression-feed", daemon=True)

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> SuppressionFeed:
        """Start reading, and return once every partition was read to its end."""
        meta = self._consumer.list_topics(self._topic, timeout=10).topics[self._topic]
        if meta.error is not None:
            raise RuntimeError(f"cannot read the suppressions topic {self._topic}: {meta.error}")
        partitions = sorted(meta.partitions)
        self._pending = set(partitions)
        self._consumer.assign(
            [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        self._thread.start()
        if not self.ready.wait(ready_timeout_s):
            raise RuntimeError(
                f"the suppressions topic {self._topic} was not read within "
                f"{ready_timeout_s:.0f}s: the worker will not run without it"
            )
        log.info("suppressions loaded", people=len(self.suppressions))
        return self

    def _run(self) -> None:
        waits = retry.delays()
        while not self._stop.is_set():
            try:
                self._read()
            except Exception as exc:  # the feed must outlive a broker hiccup, and say so
                wait = next(waits)
                log.error("suppressions feed failed; reading on", error=repr(exc), retry_in_s=wait)
                self._stop.wait(wait)

    def _read(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, POLL_S):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._pending.discard(msg.partition())
                        if not self._pending:
                            self.ready.set()
                        continue
                    log.warning("suppressions feed error", error=str(err))
                    continue
                self._apply(msg.key(), msg.value())

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            product, person = parse_key(key or b"")
            self.suppressions.apply(
                product, person, Suppression.from_json(value) if value is not None else None
            )
        except (ValueError, KeyError, TypeError) as exc:
            # Not ours to drop silently, and not a reason to stop suppressing the others.
            log.error("suppressions record unreadable, skipped", key=key, error=repr(exc))
            return
        log.info("suppression applied", product=product, lifted=value is None)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._consumer.close()
