"""What every ingestion endpoint does, whatever its dialect: authenticate, rate-limit, read the
body within its limit, publish raw records, and turn failures into one error response.

Order of a request: auth -> rate limit -> body -> parse -> publish -> (await acks) -> 2xx.
A 2xx is only ever built after the delivery report of every event it reports as accepted.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response

from eventpipe.codec import CLEAN_EVENT, AvroCodec
from eventpipe.dialects import Parser
from eventpipe.errors import (
    EventpipeError,
    InvalidEvent,
    PayloadTooLarge,
    Refused,
    Unavailable,
)
from eventpipe.event import ParsedEvent, clean_record
from eventpipe.identity import identity_key
from eventpipe.ids import event_id_for
from eventpipe.metrics import labelled
from eventpipe.publisher import Failure, Publisher
from producers.auth import KeyStore, Principal, RateLimiter

log = structlog.get_logger(__name__)

EVENTS = Counter("eventpipe_edge_events_total", "Events by outcome", ["dialect", "outcome"])

CLEAN_GROWTH = 18
CLEAN_SLACK = 2_000
"""A bound on the clean record an event becomes: at most ``CLEAN_GROWTH`` times its raw record
plus ``CLEAN_SLACK`` bytes. Its ``properties`` and ``traits`` are parts of the payload re-encoded
by orjson, each at most 8 times as long (strings, keys and integers never grow; only a float
does, from 3 characters such as ``1e9`` to at most 24); its ids are copied from the payload or
the raw record, its name parts are at most 64 characters, and a linked ``person_id`` at most
200 (the slack). Below the bound the edge skips measuring (``Ingest.check_clean_size``); a unit
test holds the bound against events that grow."""

FREE_FORM_FIELDS = {
    "v1": ("properties", "properties.traits", True),
    "v2": ("properties", "properties.traits", True),
    "named": ("data", "user", False),
}
"""Per dialect: the request fields that become a clean record's ``properties`` and ``traits``,
and whether the traits are also inside the properties (so stored twice)."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(exc: EventpipeError, headers: dict[str, str] | None = None) -> Response:
    h = dict(headers or {})
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        h["Retry-After"] = str(retry_after)
    return json_response(exc.body(), exc.status, h)


@dataclass(slots=True)
class Staged:
    """One event ready to publish: its id, Kafka key and encoded raw record."""

    event_id: str
    key: bytes
    value: bytes


@dataclass
class Ingest:
    keys: KeyStore
    limiter: RateLimiter
    publisher: Publisher
    codec: AvroCodec
    raw_topic: str
    clock_ms: Callable[[], int]
    max_body_bytes: int
    max_event_bytes: int
    retry_after_seconds: int

    async def admit(self, request: Request) -> tuple[Principal, bytes, int]:
        """Auth, rate limit and body read; returns (principal, body, received_at ms)."""
        principal = self.keys.authenticate(request.headers.get("authorization"))
        self.limiter.check(principal)
        ctype = request.headers.get("content-type", "application/json")
        media, *params = ctype.lower().split(";")
        charsets = {p.partition("=")[2].strip(' "') for p in params if "charset" in p}
        if media.strip() != "application/json" or not charsets <= {"utf-8", "utf8"}:
            raise InvalidEvent(
                f"unsupported Content-Type {ctype[:100]!r}: send application/json (UTF-8)",
                field="Content-Type",
            )
        # No decompression at all, so no gzip bomb: compressed bodies are refused.
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise InvalidEvent(
                f"unsupported Content-Encoding {encoding[:100]!r}: send the body uncompressed",
                field="Content-Encoding",
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(f"body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return principal, b"".join(chunks), self.clock_ms()

    def encoder(self, principal: Principal, dialect: str, received_at_ms: int) -> Encoder:
        """Encode one request's events: ``encoder(payload, parsed, external_id)``, each keyed
        by its identity key (``eventpipe.identity``)."""
        product, source = principal.product, principal.source
        encode = self.codec.raw_encoder(dialect, product, source, received_at_ms)

        def stage(payload: bytes, parsed: ParsedEvent, external_id: str | None) -> Staged:
            event_id = event_id_for(product, source, external_id)
            key = identity_key(product, parsed.anonymous_id, parsed.actor_id, event_id)
            value = encode(event_id, external_id, payload)
            size = len(key) + len(value)
            if size > self.max_event_bytes:
                # Kafka would refuse it on every retry: a 503 here would never end.
                raise PayloadTooLarge(
                    f"the event is {size} bytes as a Kafka record: "
                    f"at most {self.max_event_bytes} per event"
                )
            if size * CLEAN_GROWTH + CLEAN_SLACK > self.max_event_bytes:
                raw = {
                    "event_id": event_id,
                    "product": product,
                    "source": source,
                    "dialect": dialect,
                    "external_id": external_id,
                    "received_at": received_at_ms,
                }
                self.check_clean_size(raw, parsed)
            return Staged(event_id, key, value)

        return stage

    def check_clean_size(self, raw: dict[str, Any], parsed: ParsedEvent) -> None:
        """Refuse (413, naming the field) an event whose clean record would be over
        ``max_event_bytes``: the worker could never publish it.

        Why here and not by storing traits once: a client learns at once, from the status of
        its own request, that an event cannot be stored, instead of a 202 for an event that ends
        as a ``rejected_events`` row; and the stored rows keep their shape (``properties`` as
        sent, ``traits`` feeding ``user_traits``), so no query or view changes meaning. One
        rule, not two: the size is that of the record the worker builds, by the worker's own
        ``clean_record`` and codec (only its ``person_id`` may differ, by at most 800 bytes of
        a linked user id, well inside the gap between ``max_event_bytes`` and the producers'
        ``message.max.bytes``). The hot path stays cheap: an event under ``CLEAN_GROWTH``'s
        bound (about 50 KB by default) is never measured, and a measured one is big anyway.
        """
        record = clean_record(raw, parsed, person_id=parsed.actor_id)
        size = len(raw["event_id"]) + len(self.codec.encode(CLEAN_EVENT, record))
        if size <= self.max_event_bytes:
            return
        props_field, traits_field, nested = FREE_FORM_FIELDS.get(
            raw["dialect"], ("properties", "traits", False)
        )
        props, traits = len(record["properties"]), len(record["traits"])
        rest = props - traits if nested else props
        field = traits_field if traits >= rest else props_field
        twice = f" ({traits_field} is stored twice: in properties and as user traits)"
        raise PayloadTooLarge(
            f"the event is {size} bytes as a normalized Kafka record"
            f"{twice if nested and field == traits_field else ''}: "
            f"at most {self.max_event_bytes} per event",
            field=field,
        )

    async def publish(self, dialect: str, staged: list[Staged]) -> list[Failure | None]:
        """Publish and wait for every acknowledgement; per event, None or the failure."""
        results = await self.publisher.publish(self.raw_topic, [(s.key, s.value) for s in staged])
        failures = [r for r in results if r is not None]
        if failures:
            retryable = sum(f.retryable for f in failures)
            log.warning(
                "publish failed",
                topic=self.raw_topic,
                failed=len(failures),
                retryable=retryable,
                total=len(staged),
                reason=failures[0].reason,
            )
            if retryable:
                labelled(EVENTS, dialect, "unavailable").inc(retryable)
            if len(failures) > retryable:
                labelled(EVENTS, dialect, "refused").inc(len(failures) - retryable)
        return results

    def unavailable(self) -> Unavailable:
        return Unavailable(
            "event stream unavailable, retry later", retry_after=self.retry_after_seconds
        )

    def failed(self, failure: Failure) -> EventpipeError:
        """The error for an event Kafka did not store: 503 when a retry may store it, else a
        non-retryable 413 (too large) or 422 (refused for another reason)."""
        if failure.retryable:
            return self.unavailable()
        message = f"the event stream refused the event for good ({failure.reason}): do not retry"
        return PayloadTooLarge(message) if failure.too_large else Refused(message)

    async def one(
        self,
        principal: Principal,
        dialect: str,
        parser: Parser,
        body: bytes,
        received_at_ms: int,
        external_id: ExternalId,
    ) -> Accepted:
        """Parse, publish and await the ack of a single event (raises on any failure)."""
        parsed = parser(body, received_at_ms)
        stage = self.encoder(principal, dialect, received_at_ms)
        staged = stage(body, parsed, external_id(None, parsed))
        failure = (await self.publish(dialect, [staged]))[0]
        if failure is not None:
            raise self.failed(failure)
        labelled(EVENTS, dialect, "accepted").inc()
        return Accepted(0, parsed, staged.event_id)

    async def many(
        self,
        principal: Principal,
        dialect: str,
        parser: Parser,
        payloads: list[bytes],
        received_at_ms: int,
        external_id: ExternalId,
        max_events: int,
    ) -> BatchOutcome:
        """A batch: valid events are published even when others are rejected.

        Raises when the batch itself is unusable (empty, over the limit) or when Kafka
        acknowledged none of its valid events; otherwise reports per event.
        """
        if not payloads:
            raise InvalidEvent("'events' is empty", field="events")
        if len(payloads) > max_events:
            raise InvalidEvent(
                f"{len(payloads)} events: at most {max_events} per batch", field="events"
            )
        out = BatchOutcome([], [])
        staged: list[tuple[int, ParsedEvent, Staged]] = []
        # An external id repeated within the request is the same event: it gets the first
        # one's id and outcome, and is not published again. The agents could not tell such a
        # copy from a redelivery of the first (both carry the request's received_at).
        first_of: dict[str, int] = {}
        copies: list[tuple[int, ParsedEvent, int]] = []
        stage = self.encoder(principal, dialect, received_at_ms)
        for i, payload in enumerate(payloads):
            try:
                parsed = parser(payload, received_at_ms)
                ext = external_id(i, parsed)
                if ext is not None and ext in first_of:
                    copies.append((i, parsed, first_of[ext]))
                    continue
                one = stage(payload, parsed, ext)
            except InvalidEvent as exc:  # PayloadTooLarge too: that event, not the batch
                out.errors.append({"index": i, "field": exc.field, "reason": exc.message})
                continue
            if ext is not None:
                first_of[ext] = len(staged)
            staged.append((i, parsed, one))
        labelled(EVENTS, dialect, "invalid").inc(len(out.errors))
        results = await self.publish(dialect, [s for _, _, s in staged]) if staged else []
        staged += [(i, parsed, staged[first][2]) for i, parsed, first in copies]
        results += [results[first] for _, _, first in copies]
        for (i, parsed, st), failure in zip(staged, results, strict=True):
            if failure is None:
                out.accepted.append(Accepted(i, parsed, st.event_id))
            elif failure.retryable:
                out.errors.append(
                    {"index": i, "field": None, "reason": "unavailable", "retryable": True}
                )
            else:
                reason = self.failed(failure).message
                out.errors.append({"index": i, "field": None, "reason": reason, "retryable": False})
        if staged and not out.accepted and out.retryable:
            raise self.unavailable()  # else every event was refused for good: a 400 batch
        labelled(EVENTS, dialect, "accepted").inc(len(out.accepted))
        if copies or out.errors:  # else every event is in order already
            out.accepted.sort(key=_INDEX)
            out.errors.sort(key=lambda e: int(e["index"]))
        return out


Encoder = Callable[[bytes, ParsedEvent, str | None], Staged]

_INDEX = operator.attrgetter("index")

ExternalId = Callable[[int | None, ParsedEvent], str | None]
"""Which external id an event gets (index None for a single event): the dedupe key's last part."""


def body_external_id(_index: int | None, parsed: ParsedEvent) -> str | None:
    return parsed.external_id


@dataclass(slots=True)
class Accepted:
    index: int
    parsed: ParsedEvent
    event_id: str


@dataclass(slots=True)
class BatchOutcome:
    accepted: list[Accepted]
    errors: list[dict[str, Any]]

    @property
    def retryable(self) -> bool:
        return any(e.get("retryable") for e in self.errors)
