"""Faust's consumer with a short fetch wait: on Tansu, a record can wait out the whole fetch wait.

Faust (faust-streaming 0.15.3) creates its aiokafka consumer with ``fetch_max_wait_ms=1500``,
hard-coded. A broker holds an empty fetch up to that long and should answer as soon as data
arrives; Tansu does not wake a waiting fetch (measured: a record produced into an idle topic
reached a consumer after 0.35 s at the median and 1.3 s at worst with a 1,500 ms wait, after
1-4 ms with 50-500 ms). With two Faust hops per event, that was most of the pipeline's latency.
:data:`FETCH_MAX_WAIT_MS` bounds it; on a real Kafka cluster a shorter wait only means more
empty fetches while idle.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from eventpipe.kafka import FETCH_MAX_WAIT_MS


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:  # an aiokafka consumer
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when start() builds its fetcher, which has not happened yet.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """The ``kafka://`` transport with :class:`_Consumer`; chosen by ``streams.app.App``."""

    Consumer = _Consumer
