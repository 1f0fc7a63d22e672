"""Every Kafka topic the pipeline uses, named once.

Keys: ``events.raw`` is keyed by the identity key (``eventpipe.identity.identity_key``: one
anonymous id always meets one partition, and so one worker), ``events.clean`` by event id. The
edge produces with the murmur2 partitioner so its keys land where Faust (aiokafka) and Java
clients expect them.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventpipe.settings import Settings

RAW = "events.raw"
CLEAN = "events.clean"
IDENTITIES = "identities"
REJECTED = "events.rejected"
SUPPRESSIONS = "suppressions"
"""Forgotten people (``eventpipe.suppression``), keyed by person: compacted and kept forever,
not subject to the pipeline topics' retention (``eventpipe.kafka.ensure_topics``)."""

ALL = (RAW, CLEAN, IDENTITIES, REJECTED)


@dataclass(frozen=True)
class TopicNames:
    """Topic names with the configured prefix applied; build one from settings and pass it on."""

    raw: str
    clean: str
    identities: str
    rejected: str
    suppressions: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        p = settings.topic_prefix
        return cls(
            raw=p + RAW,
            clean=p + CLEAN,
            identities=p + IDENTITIES,
            rejected=p + REJECTED,
            suppressions=p + SUPPRESSIONS,
        )

    def all(self) -> tuple[str, ...]:
        """The pipeline's data topics (the suppressions topic, a compacted control topic, apart)."""
        return (self.raw, self.clean, self.identities, self.rejected)
