"""The broker profile: what the embedded Tansu broker needs that a real Kafka cluster does not.

Every workaround for the embedded broker is switched here and nowhere else. Code that has one
asks :func:`workarounds` (through ``Settings.workarounds``) and does the plain thing when it is
off. The profile is ``embedded`` when ``eventpipe dev`` (or the benchmark) starts Tansu, and
``kafka`` for any bootstrap the user gives, unless ``EVENTPIPE_BROKER_PROFILE`` says otherwise
(e.g. to point the suite at an external Tansu).

The workarounds, with what was measured on Tansu 0.6.0 (docs/architecture.md, "Broker profile"):

``changelog_sentinels``
    Tansu reports a partition's end offset as the first offset of its last batch + 1, so Faust's
    table recovery stops early and drops the last batch's keys (1,996 of 20,000 in a forced case).
    Before a worker starts, one sentinel record per changelog partition, as its own batch, makes
    that lost batch a record whose loss costs nothing (``streams.changelog``). A real Kafka
    reports the true end: not needed there.
``fetch_wait_ms``
    Tansu does not answer a waiting fetch when data arrives, so a record waits out the whole
    fetch wait at each consumer (Faust hard-codes 1.5 s: p50/p99 end to end 3.09/4.17 s before,
    0.49/0.85 s with 100 ms). A real Kafka answers as soon as data arrives: its clients keep
    their own waits (fewer empty fetches while idle).
``replace_fenced_producer``
    After a delivery timeout librdkafka bumps the idempotent producer's epoch and Tansu answers
    PRODUCER_FENCED without flagging it fatal, so every later send fails the same way: the
    publisher replaces its producer on those codes. A producer whose error *is* flagged fatal is
    replaced on every broker (that is librdkafka's contract, not a Tansu quirk).
``read_end_offsets``
    The same end-offset bug makes a lag computed from the watermark short by up to a batch per
    partition. With it on, the processes' consumer-lag gauges (``eventpipe.lag``) read each
    partition's real end as the drain does (``eventpipe.drain.Offsets.ends``); a real Kafka's
    watermark is the end, so there they ask for it.
``session_timeout_s`` / ``heartbeat_interval_s``
    Tansu answers a consumer-group join only after half the session timeout (a Faust worker got
    its partitions after ~32 s with the defaults, ~2.4 s with a 2 s session), and numbers a
    group's first generation 0, so the first member never leaves cleanly. A real Kafka refuses
    sessions under 6 s by default: 10 s with a 3 s heartbeat there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BrokerProfile(StrEnum):
    EMBEDDED = "embedded"
    KAFKA = "kafka"


@dataclass(frozen=True)
class Workarounds:
    changelog_sentinels: bool
    fetch_wait_ms: int | None
    """The consumers' longest fetch wait; None keeps each client's own default."""
    replace_fenced_producer: bool
    read_end_offsets: bool
    session_timeout_s: float
    heartbeat_interval_s: float


_BY_PROFILE = {
    BrokerProfile.EMBEDDED: Workarounds(
        changelog_sentinels=True,
        fetch_wait_ms=100,
        replace_fenced_producer=True,
        read_end_offsets=True,
        session_timeout_s=2.0,
        heartbeat_interval_s=0.5,
    ),
    BrokerProfile.KAFKA: Workarounds(
        changelog_sentinels=False,
        fetch_wait_ms=None,
        replace_fenced_producer=False,
        read_end_offsets=False,
        session_timeout_s=10.0,
        heartbeat_interval_s=3.0,
    ),
}


def workarounds(profile: BrokerProfile) -> Workarounds:
    return _BY_PROFILE[profile]
