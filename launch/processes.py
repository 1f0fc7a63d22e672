"""One constructor per process. The CLI (``launch.cli``), ``eventpipe dev`` (``launch.dev``) and
the benchmark build every process here, so each is wired once: which clients it gets, which
codec, which workarounds of the broker profile.

The worker's constructor is ``streams.worker.run_worker``: it runs in a process of its own
(``python -m launch worker``), whoever starts it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from eventpipe import dialects
from eventpipe.catalog import Catalog
from eventpipe.codec import AvroCodec
from eventpipe.dashboard import Dashboard
from eventpipe.publisher import KafkaPublisher, publisher_for
from eventpipe.registry import codec_for
from eventpipe.settings import Settings
from producers.app import create_app
from producers.auth import KeyStore
from sinks.clickhouse import connect, migrate
from sinks.metrics import SinkMetrics
from sinks.sink import Sink
from sinks.store import EventStore


@dataclass
class Edge:
    app: Starlette
    publisher: KafkaPublisher
    keys: KeyStore
    """The workspace keys it accepts; the admin routes mint and revoke keys here."""

    def close(self) -> None:
        """Flush the producer: every 2xx already waited for its ack, so this only bounds exit."""
        self.publisher.close()


def build_edge(
    settings: Settings,
    *,
    codec: AvroCodec | None = None,
    admin: Sequence[BaseRoute] | Callable[[KeyStore], Sequence[BaseRoute]] = (),
    catalog: Catalog | None = None,
    store: EventStore | None = None,
    dashboard: Dashboard | None = None,
) -> Edge:
    """The HTTP edge with its own publisher and the keys of ``EVENTPIPE_API_KEYS``.

    ``admin``: routes served on the same app (``eventpipe dev``), or a function of the key store
    that makes them; ``eventpipe edge`` serves its admin routes on a listener of their own.
    """
    dialects.prepare()
    publisher = publisher_for(settings)
    keys = KeyStore(settings.api_keys, settings.rate_limit_per_minute)
    routes = admin(keys) if callable(admin) else admin
    app = create_app(
        settings,
        publisher,
        keys,
        codec=codec,
        admin=routes,
        catalog=catalog,
        store=store,
        dashboard=dashboard,
    )
    return Edge(app, publisher, keys)


def build_sink(
    settings: Settings,
    client: Client | None = None,
    *,
    metrics: SinkMetrics | None = None,
    consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
) -> Sink:
    """The sink over a migrated ClickHouse.

    ``client``: an already migrated one (``eventpipe dev`` owns the chDB directory and shares
    it); without, the sink connects to ``settings.clickhouse_dsn`` and runs the migrations.
    """
    if client is None:
        client = connect(settings.clickhouse_dsn, ca=settings.clickhouse_ca)
        migrate(client)
    codec = codec_for(settings)
    return Sink(settings, client, codec, metrics=metrics, consumer_factory=consumer_factory)
