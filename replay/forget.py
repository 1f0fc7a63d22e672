"""``eventpipe forget``: delete a person's rows and suppress their events until lifted.

Order, and why (the race is a row already on its way when the forget starts):

1. find the anonymous ids linked to the person (``identity_links``), and add the ids of a
   suppression already in force for them (a second forget must not lose the first one's ids:
   their links are gone by then);
2. publish the suppression to the compacted suppressions topic (acknowledged by Kafka), and
   record it in ClickHouse. From here on, a worker drops the person's events as soon as its
   feed has read the record (``eventpipe.suppression_feed``: a read lag of a fetch wait);
3. delete the person's rows (``sinks.forget``);
4. wait until the pipeline has passed every record that may have been on its way: after
   :data:`FEED_LAG_S` (the feeds have the suppression), the worker's group must commit the
   ends of ``events.raw`` read then, and after that the sink's group the ends of the output
   topics read then. Whatever was in flight at step 2 is in ClickHouse now;
5. delete again (with the anonymous ids linked meanwhile, re-publishing the suppression if
   there are new ones), and report both passes' counts, summed.

After step 5, a row of the person can reach ClickHouse only from a raw record a worker read
before its feed had the suppression, more than :data:`FEED_LAG_S` after it was published; the
report's ``settled`` is False when step 4 ran out of time (the pipeline is stuck or far
behind), and then a later forget of the same person deletes what came in after.

Lifting publishes a tombstone for the person and records the lift: their new events land
again; what was deleted stays deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaError, Producer

from eventpipe.drain import Offsets, lag
from eventpipe.errors import Unavailable
from eventpipe.kafka import close_producer, producer_config
from eventpipe.kafka_security import librdkafka_security
from eventpipe.settings import Settings
from eventpipe.suppression import Suppression, digest, topic_key
from eventpipe.topics import TopicNames
from sinks.forget import PersonEraser

log = structlog.get_logger(__name__)

FEED_LAG_S = 1.0
"""How far behind the suppressions topic a worker's feed is assumed to read at most: one fetch
wait (100 ms on the embedded broker, librdkafka's 500 ms on Kafka) with room to spare."""
SETTLE_TIMEOUT_S = 60.0
POLL_S = 0.25
PUBLISH_TIMEOUT_S = 30.0
RETRY_AFTER_S = 30


class ForgetError(Unavailable):
    """The suppression (or its lift) could not be published: nothing was deleted (or lifted).
    Kafka is unreachable or refuses: a 503, to be tried again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=RETRY_AFTER_S)


class Forgetter:
    """Forgets and lifts, on one ClickHouse eraser and one Kafka producer."""

    def __init__(
        self,
        settings: Settings,
        eraser: PersonEraser,
        worker_group: str,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._settings = settings
        self._eraser = eraser
        self._worker_group = worker_group
        self._topics = TopicNames.from_settings(settings)
        self._producer = Producer(producer_config(settings))
        self._clock_ms = clock_ms

    def forget(
        self, product: str, person_id: str, settle_timeout_s: float = SETTLE_TIMEOUT_S
    ) -> dict[str, Any]:
        """Steps 1-5 of the module docstring; the report of what was deleted."""
        person = digest(product, person_id)
        known = self._eraser.suppression(product, person)
        anonymous = self._eraser.anonymous_ids(product, person_id)
        s = Suppression.of(product, person_id, anonymous, self._clock_ms())
        if known is not None:  # forgotten before: keep what that forget knew, and since when
            s = Suppression(product, person, s.ids | known.ids, known.suppressed_at_ms)
        self._publish(s)
        self._eraser.record(s)
        ids = [person_id, *anonymous]
        deleted = self._eraser.erase(product, ids)
        settled = self._settle(settle_timeout_s)
        later = [a for a in self._eraser.anonymous_ids(product, person_id) if a not in ids]
        if later:  # linked by events in flight: theirs too
            s = Suppression(
                product,
                person,
                s.ids | Suppression.of(product, person_id, later, 0).ids,
                s.suppressed_at_ms,
            )
            self._publish(s)
        again = self._eraser.erase(product, [*ids, *later])
        for table, n in again.items():
            deleted[table] = deleted.get(table, 0) + n
        self._eraser.record(s, deleted)
        log.info("person forgotten", product=product, settled=settled, **deleted)
        return {
            "product": product,
            "suppressed": True,
            "anonymous_ids": len(anonymous) + len(later),
            "deleted": deleted,
            "settled": settled,
        }

    def lift(self, product: str, person_id: str) -> dict[str, Any]:
        """Lift the person's suppression; ``lifted`` is False when none was in force."""
        person = digest(product, person_id)
        if self._eraser.suppression(product, person) is None:
            return {"product": product, "lifted": False}
        # Kafka first: if the tombstone cannot be published, the record still says suppressed,
        # as the workers still do.
        self._send(topic_key(product, person), None)
        self._eraser.lift(product, person_id, self._clock_ms())
        log.info("suppression lifted", product=product)
        return {"product": product, "lifted": True}

    def close(self) -> None:
        close_producer(self._producer, PUBLISH_TIMEOUT_S)

    def _publish(self, s: Suppression) -> None:
        self._send(topic_key(s.product, s.person), s.to_json())

    def _send(self, key: bytes, value: bytes | None) -> None:
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        self._producer.produce(self._topics.suppressions, value, key, on_delivery=delivered)
        if self._producer.flush(PUBLISH_TIMEOUT_S) or errors:
            why = errors[0].str() if errors else "no delivery report in time"
            raise ForgetError(
                f"the suppression was not published to {self._topics.suppressions}: {why}"
            )

    def _settle(self, timeout_s: float) -> bool:
        """Step 4: True once the worker and then the sink have passed what was in flight."""
        deadline = time.monotonic() + timeout_s
        time.sleep(FEED_LAG_S)
        s, names = self._settings, self._topics
        offsets = Offsets(s.bootstrap, librdkafka_security(s), s.workarounds.fetch_wait_ms)
        try:
            stages = (
                (self._worker_group, [names.raw]),
                (s.sink_group, [names.clean, names.rejected, names.identities]),
            )
            for group, topics in stages:
                ends, _ = offsets.ends(offsets.partitions(topics))
                while lag(ends, offsets.committed(group, ends)) > 0:
                    if time.monotonic() >= deadline:
                        log.warning(
                            "forget: the pipeline did not pass the suppression in time", group=group
                        )
                        return False
                    time.sleep(POLL_S)
            return True
        finally:
            offsets.close()
