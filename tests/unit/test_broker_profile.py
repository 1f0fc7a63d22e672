"""The broker profile switch: each embedded-broker workaround is on under ``embedded`` and off
under ``kafka`` (eventpipe.broker), and the Faust patches are pinned to the release they fix."""

from __future__ import annotations

import asyncio
import importlib.metadata
import uuid
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from eventpipe.broker import BrokerProfile
from eventpipe.embedded import TansuBroker
from eventpipe.kafka import consumer_config, producer_config
from eventpipe.publisher import KafkaPublisher, publisher_for
from eventpipe.settings import Settings
from streams import bulk_recovery, delivery, fetchwait, recovery, take
from streams.app import create_app
from streams.changelog import prepare_changelogs

EMBEDDED = BrokerProfile.EMBEDDED
KAFKA = BrokerProfile.KAFKA


def _settings(profile: BrokerProfile | None, **extra: Any) -> Settings:
    return Settings(**{"kafka_bootstrap": "127.0.0.1:9", "broker_profile": profile, **extra})


def test_the_profile_defaults_to_embedded_only_without_a_bootstrap() -> None:
    assert Settings(kafka_bootstrap=None).profile is EMBEDDED
    assert Settings(kafka_bootstrap="kafka:9092").profile is KAFKA
    assert Settings(kafka_bootstrap="kafka:9092", broker_profile="embedded").profile is EMBEDDED


@pytest.mark.parametrize(
    ("profile", "session", "heartbeat"), [(EMBEDDED, 2.0, 0.5), (KAFKA, 10, 3)]
)
def test_session_timeout_follows_the_profile(
    profile: BrokerProfile, session: float, heartbeat: float
) -> None:
    conf = consumer_config(_settings(profile), "g")
    assert conf["session.timeout.ms"] == session * 1000
    assert conf["heartbeat.interval.ms"] == heartbeat * 1000


def test_an_explicit_session_timeout_wins_over_the_profile() -> None:
    s = _settings(KAFKA, kafka_session_timeout_s=30, kafka_heartbeat_interval_s=5)
    assert (s.session_timeout_s, s.heartbeat_interval_s) == (30, 5)


def test_the_short_fetch_wait_is_for_the_embedded_broker_only() -> None:
    assert consumer_config(_settings(EMBEDDED), "g")["fetch.wait.max.ms"] == 100
    assert "fetch.wait.max.ms" not in consumer_config(_settings(KAFKA), "g")


@pytest.fixture
def apps() -> Iterator[dict[BrokerProfile, faust.App]]:
    """Apps that are never started: their publisher points at a port nobody serves."""
    made: dict[BrokerProfile, faust.App] = {}
    publishers = []
    for profile in (EMBEDDED, KAFKA):
        s = _settings(profile, topic_prefix=f"unit.{profile}.")
        publisher = KafkaPublisher(producer_config(s, log_level=0))
        publishers.append(publisher)
        made[profile] = create_app(s, publisher)
    yield made
    for publisher in publishers:
        publisher.close(timeout_s=0)


def _worker_consumer_wait(app: faust.App) -> Any:
    async def build() -> Any:
        thread = app.consumer._thread  # type: ignore[attr-defined]
        return thread._create_worker_consumer(app.transport)._fetch_max_wait_ms

    return asyncio.run(build())


def test_the_faust_consumer_waits_briefly_only_on_the_embedded_broker(
    apps: dict[BrokerProfile, faust.App],
) -> None:
    assert isinstance(apps[EMBEDDED].transport, fetchwait.Transport)
    assert _worker_consumer_wait(apps[EMBEDDED]) == 100
    assert not isinstance(apps[KAFKA].transport, fetchwait.Transport)
    assert isinstance(apps[KAFKA].transport, delivery.Transport)  # the fast delivery: both
    assert _worker_consumer_wait(apps[KAFKA]) == 1500  # Faust's own


def test_faust_monitor_is_off_the_per_record_path(apps: dict[BrokerProfile, faust.App]) -> None:
    """Faust's Monitor ran on every record for a web view that is off; the consumer still
    reports to ``app.monitor`` directly, so the object stays."""
    for app in apps.values():
        list(app.on_init_dependencies())
        assert app.monitor not in set(app.sensors)
        assert app.monitor is not None


@pytest.mark.parametrize("patch", [recovery, fetchwait, delivery, take, bulk_recovery])
def test_faust_patches_match_the_installed_faust(patch: Any) -> None:
    """Upgrading faust-streaming fails this: re-check the patch against the new release (is the
    bug still there? does the patched method still exist?), then move the version."""
    assert importlib.metadata.version("faust-streaming") == patch.FIXES_FAUST_VERSION


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuBroker]:
    broker = TansuBroker()
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.parametrize(("profile", "written"), [(EMBEDDED, 1), (KAFKA, 0)])
def test_changelog_sentinels_are_written_on_the_embedded_broker_only(
    tansu: TansuBroker, profile: BrokerProfile, written: int
) -> None:
    s = _settings(profile, kafka_bootstrap=tansu.bootstrap, topic_partitions=2)
    topic = f"changelog-{profile}-{uuid.uuid4().hex[:8]}"
    prepare_changelogs(s, {topic: {}})
    consumer = Consumer({"bootstrap.servers": tansu.bootstrap, "group.id": "unit"})
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in (0, 1)]
    finally:
        consumer.close()
    assert ends == [written, written]


@pytest.mark.parametrize(("profile", "replaced"), [(EMBEDDED, True), (KAFKA, False)])
def test_a_fenced_producer_is_replaced_on_the_embedded_broker_only(
    profile: BrokerProfile, replaced: bool
) -> None:
    publisher = publisher_for(_settings(profile), log_level=0)
    try:
        publisher._on_error(KafkaError(KafkaError.PRODUCER_FENCED))
        assert publisher._fatal.is_set() is replaced
        publisher._fatal.clear()
        # A fatal error leaves the producer unusable on every broker: librdkafka's contract.
        publisher._on_error(KafkaError(KafkaError._FATAL, fatal=True))
        assert publisher._fatal.is_set()
    finally:
        publisher.close(timeout_s=0)
