"""The Faust app factory: topics, tables and agents, all from one ``Settings``.

Flow: events.raw -> clean_events (normalize, dedupe, link identities) -> events.clean.

No module-level app: ``create_app`` builds one per call, so tests and ``eventpipe dev`` can make
their own, each with its own topic prefix.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, cast

import faust
from faust.types import ProducerT, TransportT
from faust.types.tables import TableManagerT
from mode import ServiceT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from eventpipe.codec import RAW_EVENT
from eventpipe.kafka_security import WorkerSecurity, worker_security
from eventpipe.publisher import Publisher
from eventpipe.registry import codec_for
from eventpipe.settings import Settings
from eventpipe.suppression import NONE as NO_SUPPRESSIONS
from eventpipe.suppression import Suppressions
from eventpipe.topics import TopicNames
from streams import delivery, fetchwait
from streams.agents import EventAgent
from streams.bulk_recovery import BulkTableManager
from streams.changelog import COMPACT, expiring, read_changelog
from streams.codec import RecordSchema, register_codecs
from streams.dedupe import Expiry
from streams.dedupe_table import DedupeTable
from streams.links_table import LinksTable
from streams.outbox import Outbox
from streams.recovery import ResumeKeepsBuffers

DEDUPE_TABLE = "dedupe"
IDENTITY_TABLE = "identity"


class App(faust.App):
    """``faust.App`` with its fixes and speed-ups, each explained in its module.

    * ``streams.recovery``: its flow control keeps the records already handed to the agents
      when table recovery completes (Faust's clears them: records lost until a restart). Faust
      builds ``flow_control`` lazily, when the first queue registers, so overriding the property
      puts every queue under the fixed event.
    * ``streams.fetchwait``: under the embedded broker profile its consumer waits at most
      ``fetch_wait_ms`` for an empty fetch, not 1.5 s.
    * ``streams.delivery``: its fetcher hands a message to the streams without making four
      tasks for it, and a stream's buffer (``FlowControlQueue``) refills from half, so a busy
      worker's deliveries do not each block; both under every broker profile.
    * ``streams.bulk_recovery``: table recovery reads the dedupe changelog in bulk first.
    * Faust's own ``Monitor`` sensor is off the per-record path. It keeps in-memory counters
      for Faust's web view, which is off (eventpipe's metrics are Prometheus), and it ran five
      times per record (in, stream in and out, out, each table lookup): about 4% of the
      worker's CPU. The consumer still reports end offsets and commits to ``app.monitor``.
    * ``streams.delivery.ebb_check_without_settings``: the producer-buffer check the conductor
      makes before every message reads no setting through Faust's registry.
    """

    fetch_wait_ms: int | None = None
    """Set by ``create_app`` from the broker profile, before the transport is built."""

    @cached_property
    def tables(self) -> TableManagerT:
        """Recovering tables in bulk first (``streams.bulk_recovery``)."""
        return BulkTableManager(app=self, beacon=self.beacon)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return ResumeKeepsBuffers(loop=self.loop)

    def FlowControlQueue(
        self, maxsize: int | None = None, *, clear_on_resume: bool = False
    ) -> ThrowableQueue[Any]:
        return delivery.RefillQueue(
            maxsize, flow_control=self.flow_control, clear_on_resume=clear_on_resume
        )

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        dependencies = super().on_init_dependencies()  # adds the monitor to the sensors
        self.sensors.remove(self.monitor)
        return dependencies

    def _new_producer(self) -> ProducerT:
        producer = super()._new_producer()
        delivery.ebb_check_without_settings(producer.buffer)
        return producer

    def _new_transport(self) -> TransportT:
        if self.fetch_wait_ms is None:
            return delivery.Transport(self.conf.broker_consumer, self)
        return fetchwait.Transport(self.conf.broker_consumer, self)


def app_id(settings: Settings) -> str:
    """The Faust app id, which names the consumer group and the changelog topics.

    The topic prefix is part of it, so pipelines sharing a cluster (or test runs) never share
    a group or a table."""
    return f"{settings.topic_prefix}{settings.worker_id}"


def faust_config(settings: Settings) -> dict[str, Any]:
    """The Faust settings of every eventpipe app (the benchmark's bare agent uses them too).

    Security comes from ``eventpipe.kafka_security.worker_security``, the same block the
    confluent-kafka clients get, as Faust's ``broker_credentials``.
    """
    if not settings.kafka_bootstrap:
        raise RuntimeError("the worker needs EVENTPIPE_KAFKA_BOOTSTRAP (or an embedded broker)")
    security = worker_security(settings)
    return {
        # One URL per bootstrap server: Faust reads "a:9092,b:9092" as one host.
        "broker": [f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",") if h],
        "broker_credentials": faust_credentials(security),
        **security.faust,
        "store": "memory://",
        "web_enabled": False,
        "autodiscover": False,
        # Per broker profile (eventpipe.broker): Tansu answers a join after half the session.
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "topic_partitions": settings.topic_partitions,
        # No standby copies: with the memory store Faust keeps no offset for a partition's
        # copy, so a standby promoted to active is recovered from its changelog's start anyway
        # (Recovery._add: persisted_offset is None). A copy bought nothing at failover and cost
        # each other worker about 100 us of CPU per changelog record it read along.
        "table_standby_replicas": 0,
        "topic_replication_factor": settings.topic_replication,
        # The changelogs are created (or checked) before Faust starts (streams.changelog); with
        # EVENTPIPE_CREATE_TOPICS=false Faust must not try either. No agent runs on_leader, so
        # no leader topic either: the topics a cluster needs are the six eventpipe names.
        "topic_allow_declare": settings.create_topics,
        "topic_disable_leader": True,
        # at_least_once keeps Faust's aiokafka producer non-idempotent: its InitProducerId
        # fails on Tansu; "exactly_once" would turn idempotence on and cannot start there.
        "processing_guarantee": "at_least_once",
        "key_serializer": "raw",
        "value_serializer": "raw",
    }


def faust_credentials(security: WorkerSecurity) -> Any:
    """Faust's ``broker_credentials`` for the security block (None: plaintext)."""
    if security.protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            ssl_context=security.ssl_context,  # None: SASL_PLAINTEXT, else SASL_SSL
            mechanism=security.sasl_mechanism,
        )
    if security.protocol == "SSL":
        return faust.SSLCredentials(security.ssl_context)
    return None


def create_app(
    settings: Settings, publisher: Publisher, suppressions: Suppressions = NO_SUPPRESSIONS
) -> faust.App:
    """A Faust app wired for eventpipe; start it with ``streams.worker.run_worker``.

    ``suppressions``: the people forgotten, which the agent drops (``streams.worker`` keeps them
    current from the suppressions topic).

    The agent publishes its outputs and its tables' changelog records through ``publisher``
    (``streams.outbox``), not Faust's producer.
    """
    codec = codec_for(settings)
    register_codecs(codec)
    app = App(app_id(settings), **faust_config(settings))
    app.fetch_wait_ms = settings.workarounds.fetch_wait_ms
    names = TopicNames.from_settings(settings)

    # Both tables are written through the agent's outbox (streams.outbox: the changelog record
    # with the batch, the store after the acks), never through Faust's table[key] = value.
    window_ms = settings.dedupe_window_seconds * 1000
    seen = DedupeTable(  # forgets keys past the window: streams.dedupe_table
        app,
        name=DEDUPE_TABLE,
        beacon=app.tables.beacon,
        partitions=settings.topic_partitions,
        key_type=bytes,  # (product, source, external_id), serialized "raw"
        value_type=int,  # the first received_at (ms), serialized "json"
        expiry=Expiry(window_ms),
    )
    app.tables.add(seen)
    manager = cast(BulkTableManager, app.tables)
    manager.read_changelog = functools.partial(read_changelog, settings)
    links = LinksTable(  # kept for good: streams.links_table
        app,
        name=IDENTITY_TABLE,
        beacon=app.tables.beacon,
        partitions=settings.topic_partitions,
        key_type=bytes,  # (product, anonymous id), serialized "raw"
        value_type=str,  # the linked user id, serialized "json"
    )
    app.tables.add(links)
    EventAgent(
        outbox=Outbox(publisher, codec, names.rejected),
        clean_to=names.clean,
        identities_to=names.identities,
        seen=seen,
        links=links,
        window_ms=window_ms,
        suppressions=suppressions,
    ).attach(app, app.topic(names.raw, schema=RecordSchema(RAW_EVENT, codec)))
    return app


def changelog_topics(app: faust.App) -> dict[str, dict[str, str]]:
    """The changelog topic of every table of ``app``, named as Faust names it, with the config
    it is created with (``streams.changelog``)."""
    return {
        t.changelog_topic.get_topic_name(): (
            expiring(t.expiry.window_ms) if isinstance(t, DedupeTable) else COMPACT
        )
        for t in app.tables.values()
    }
