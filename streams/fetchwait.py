"""Faust's consumer with a short fetch wait: on Tansu, a record can wait out the whole fetch wait.

Faust (faust-streaming 0.15.3) creates its aiokafka consumer with ``fetch_max_wait_ms=1500``,
hard-coded. A broker holds an empty fetch up to that long and should answer as soon as data
arrives; Tansu does not wake a waiting fetch (measured: a record produced into an idle topic
reached a consumer after 0.35 s at the median and 1.3 s at worst with a 1,500 ms wait, after
1-4 ms with 50-500 ms). With two Faust hops per event, that was most of the pipeline's latency.
The embedded broker profile's ``fetch_wait_ms`` bounds it (``eventpipe.broker``); under the
``kafka`` profile this transport is not used and Faust keeps its own wait.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams import delivery

FIXES_FAUST_VERSION = "0.15.3"
"""The faust-streaming release this patch was written against and verified on: a test fails when
the installed one differs, so the patch is re-checked (dropped if fixed upstream) on upgrade."""


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:  # an aiokafka consumer
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_wait_ms", None)  # streams.app.App's, from the profile
        if wait is not None:
            # aiokafka reads this when start() builds its fetcher, which has not happened yet.
            consumer._fetch_max_wait_ms = wait
        return consumer


class _Consumer(delivery.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(delivery.Transport):
    """``streams.delivery``'s transport with :class:`_Consumer`; chosen by ``streams.app.App``
    when the broker profile sets a fetch wait."""

    Consumer = _Consumer
