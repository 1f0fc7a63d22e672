"""Confluent Schema Registry: where a codec's schema ids come from when one is configured.

Subjects follow the topic-name strategy (confluent-kafka's ``topic_subject_name_strategy``):
a record's schema is registered under ``<topic>-value`` of the one topic that carries it, so
the registry's subjects are our topic names (prefix included) and any registry-aware reader
(confluent-kafka's ``AvroDeserializer``, kcat ``-s value=avro``, Kafka Connect) finds them.
One subject holds one record's versions: a further record on a topic whose subject is taken
goes under ``<topic>-<record full name>`` (the topic-record strategy; readers find a schema by
its id, whatever its subject). Every record the codec writes must have a subject here, or a
process with a registry refuses to start (no record is ever written in the other framing).

When a process starts, its codec registers the newest shipped schema of every record, in the
order of :data:`RECORDS` (every process the same). A schema already under its subject only gets
its id back. A schema that is new to its subject is an evolution: before it is registered it must
be BACKWARD compatible with the subject's latest version (``eventpipe.avro_compat``: a consumer
with the new schema reads every record of the old one), else the process refuses to start and
says which field is wrong. The registry then applies its own configured check on top.

``mock://`` URLs give confluent-kafka's in-memory registry, which lives in one client object:
two processes (or two clients) never share it. Its ids count up from 1 in registration order,
so processes that register the same schemas in the same order get the same ids; that is what
makes ``mock://`` usable across a pipeline's processes at all, and only for tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import structlog
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from tenacity import Retrying, retry_if_exception, stop_after_delay

from eventpipe.avro_compat import backward_problems
from eventpipe.codec import (
    CLEAN_EVENT,
    DEDUPE_NOTICE,
    IDENTITY_LINK,
    RAW_EVENT,
    REDRIVE_OUTCOME,
    REJECTED_EVENT,
    AvroCodec,
    CodecError,
)
from eventpipe.retry import backoff, registry_retryable
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames

log = structlog.get_logger(__name__)

RECORDS = (RAW_EVENT, CLEAN_EVENT, IDENTITY_LINK, REJECTED_EVENT, DEDUPE_NOTICE, REDRIVE_OUTCOME)
"""The order every process registers in (see the module docstring on ``mock://``)."""
START_TIMEOUT_S = 30.0
"""How long a starting process retries an unreachable registry before it gives up."""
LOOKUP_TIMEOUT_S = 10.0
"""How long a decode retries fetching an unknown schema id before the record is rejected."""


class IncompatibleSchema(RuntimeError):
    """A shipped schema that would break the readers of its subject: nothing is registered."""


def subject(topic: str) -> str:
    """The topic-name strategy's subject of a topic's values."""
    return f"{topic}-value"


def subjects(topics: TopicNames) -> dict[str, str]:
    """Each record's subject, in :data:`RECORDS` order."""
    by_record = {
        RAW_EVENT: topics.raw,
        CLEAN_EVENT: topics.clean,
        IDENTITY_LINK: topics.identities,
        REJECTED_EVENT: topics.rejected,
    }
    sharing = {DEDUPE_NOTICE: topics.rejected, REDRIVE_OUTCOME: topics.rejected}
    """Records on a topic whose ``-value`` subject is another record's (name -> topic): the
    notices and redrive outcomes travel with the rejections."""
    out = {record: subject(by_record[record]) for record in RECORDS if record in by_record}
    return out | {record: f"{topic}-{record}" for record, topic in sharing.items()}


class Registry:
    """One registry client and the subjects of one pipeline's topics (``AvroCodec``'s
    ``SchemaRegistry``)."""

    def __init__(self, client: SchemaRegistryClient, subjects: Mapping[str, str]) -> None:
        self.client = client
        self.subjects = dict(subjects)

    @classmethod
    def connect(cls, url: str, topics: TopicNames) -> Registry:
        client = SchemaRegistryClient.new_client({"url": url})  # mock:// gives the in-memory one
        return cls(client, subjects(topics))

    def register(self, schemas: dict[str, str]) -> dict[str, int]:
        """The id of each record's schema under its subject, registered if new (retried while
        the registry is unreachable, at most ``START_TIMEOUT_S``)."""
        missing = sorted(schemas.keys() - self.subjects.keys())
        if missing:
            raise RuntimeError(f"no registry subject for {missing}: see eventpipe.registry")
        ids: dict[str, int] = {}
        for record, subj in self.subjects.items():
            if record not in schemas:
                continue
            for attempt in _retrying(START_TIMEOUT_S):
                with attempt:
                    ids[record] = self._register(subj, schemas[record])
        return ids

    def _register(self, subj: str, text: str) -> int:
        schema = Schema(text, "AVRO")
        try:
            found = self.client.lookup_schema(subj, schema).schema_id
            if found is not None:
                return found
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise
        try:
            latest = self.client.get_latest_version(subj)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise
            latest = None
        if latest is not None:
            problems = backward_problems(
                json.loads(text), json.loads(latest.schema.schema_str or "")
            )
            if problems:
                raise IncompatibleSchema(
                    f"the shipped schema for {subj} is not BACKWARD compatible with its version "
                    f"{latest.version} in the registry: {'; '.join(problems)}"
                )
        schema_id = int(self.client.register_schema(subj, schema))
        log.info(
            "schema registered",
            subject=subj,
            schema_id=schema_id,
            evolves=latest.version if latest is not None else None,
        )
        return schema_id

    def writer_schema(self, schema_id: int) -> str:
        """The schema text of ``schema_id``. An id the registry does not have, or a registry
        unreachable for ``LOOKUP_TIMEOUT_S``, is a ``CodecError``: the record is rejected (with
        its bytes), never dropped."""
        try:
            for attempt in _retrying(LOOKUP_TIMEOUT_S):
                with attempt:
                    found = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            raise CodecError(f"schema id {schema_id}: {exc}") from exc
        except Exception as exc:  # the registry unreachable after the retries
            log.error("schema registry unreachable", schema_id=schema_id, error=str(exc))
            raise CodecError(f"schema id {schema_id}: registry unreachable: {exc}") from exc
        if found.schema_type not in (None, "AVRO"):
            raise CodecError(f"schema id {schema_id} is a {found.schema_type} schema, not Avro")
        return str(found.schema_str)


def _retrying(timeout_s: float) -> Retrying:
    return Retrying(
        retry=retry_if_exception(registry_retryable),
        wait=backoff(max_s=2.0),
        stop=stop_after_delay(timeout_s),
        reraise=True,
    )


def codec_for(settings: Settings) -> AvroCodec:
    """The codec every process uses: Confluent framing with ``EVENTPIPE_SCHEMA_REGISTRY_URL``,
    single-object encoding without."""
    url = settings.schema_registry_url
    if not url:
        return AvroCodec()
    return AvroCodec(Registry.connect(url, TopicNames.from_settings(settings)))
