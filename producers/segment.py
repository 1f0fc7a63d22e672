"""HTTP endpoints of Segment's Tracking API, so Segment's SDKs send to eventpipe unchanged.

``POST /v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias``
(one message each) and ``/v1/batch``, ``/v1/import`` (``{"batch": [...]}``; import is the older
name some SDKs post to). Beside the v1 dialect's ``/v1/events`` and ``/v1/batch/events``: no
path is shared.

Answers as the SDKs expect them: 200 ``{"success": true}`` once Kafka acknowledged every
message; 400 only for a body that is not JSON (or not a message/batch object at all) or over
Segment's limits (32 KB a message, 500 KB a request); 401 for a missing or unknown write key;
429 and 503 with ``Retry-After``. Errors carry ``{"success": false, "code", "message"}``
(``code`` is what the Python SDK reads). The SDKs retry 5xx and 429 and give up on other 4xx.

A message the dialect refuses (no user, an unknown type, a bad timestamp, ...) cannot be
reported in a ``{"success": true}`` body, so it is published like any other: the worker, which
parses every raw record again, reports it in ``rejected_events`` with its field and reason. If
Kafka acknowledged only part of a batch the answer is a 503: the SDK sends the whole batch again,
and the acknowledged part is dropped as duplicates (``messageId`` is the external id).

Order of a request: auth from the header (when given) -> rate limit -> body (gzip decoded within
the limit) -> auth from ``writeKey`` in the body (when no header) -> rate limit -> publish ->
acks -> 200.

Auth: the write key is an API key, sent as the Basic-auth user name with an empty password (the
SDKs' way), as ``Bearer <key>``, or as ``writeKey`` in the body; a header wins over the body.
The key never reaches Kafka: the batch's ``writeKey`` is left out of the envelopes, and a message
carrying one is re-encoded without it.

Gzip is accepted here only (the Kotlin SDK always compresses): the body is decompressed at most
up to the request limit, so a small gzip bomb costs no more than an honest 500 KB body.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventpipe.dialects import segment
from eventpipe.errors import EventpipeError, InvalidEvent, Unauthorized
from eventpipe.event import ParsedEvent
from eventpipe.naming import EventName, NameFormat
from producers.auth import Principal
from producers.ingest import Ingest, body_external_id, json_response

log = structlog.get_logger(__name__)
T = TypeVar("T")

DIALECT = "segment"
SINGLE_CALLS = ("track", "identify", "page", "screen", "group", "alias")
BATCH_PATHS = ("/v1/batch", "/v1/import")
ENCODINGS = frozenset({"identity", "gzip", "x-gzip"})
_WRITE_KEY = b'"writeKey"'
_UNPARSED = EventName("segment", "unparsed", NameFormat.SEGMENT)


class _Batch(msgspec.Struct):
    """A batch body; other top-level fields are ignored (``writeKey`` is read, never kept).

    The shared fields are checked by the dialect, in each message's envelope: a bad one is each
    message's rejection (``rejected_events``), not a 400."""

    batch: list[msgspec.Raw]
    context: Any = None
    integrations: Any = None
    sentAt: Any = None
    writeKey: Any = None


def edge_parse(payload: bytes, received_at_ms: int) -> ParsedEvent:
    """The dialect's parse for the edge, which publishes what it refuses too (module docstring):
    such a message gets no external id, and a random Kafka key."""
    try:
        return segment.parse(payload, received_at_ms)
    except InvalidEvent:
        return ParsedEvent(_UNPARSED, received_at_ms)


def routes(ingest: Ingest, max_events: int) -> list[Route]:
    """The Segment routes, for ``producers.app``."""
    out = [
        Route(f"/v1/{call}", _answer(_single(ingest, call)), methods=["POST"])
        for call in SINGLE_CALLS
    ]
    batch = _answer(_batch(ingest, max_events))
    return [*out, *(Route(path, batch, methods=["POST"]) for path in BATCH_PATHS)]


Handler = Callable[[Request], Awaitable[Response]]


def _answer(handler: Handler) -> Handler:
    """Segment's error body, with the status ``eventpipe.errors`` gives each error."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except EventpipeError as exc:
            body: dict[str, Any] = {"success": False, "code": exc.code, "message": exc.message}
            if exc.field is not None:
                body["field"] = exc.field
            retry_after = getattr(exc, "retry_after", None)
            headers = None if retry_after is None else {"Retry-After": str(retry_after)}
            return json_response(body, exc.status, headers)
        except Exception:
            log.exception("unhandled error", path=request.url.path)
            body = {"success": False, "code": "internal_error", "message": "internal error"}
            return json_response(body, 500)

    return wrapped


SUCCESS = {"success": True}


def _single(ingest: Ingest, call: str) -> Handler:
    async def single(request: Request) -> Response:
        principal, body, received = await _admit(ingest, request, segment.MAX_MESSAGE_BYTES)
        message = _decode(body, dict)
        principal = principal or _from_body(ingest, message.get("writeKey"))
        payload = segment.envelope(_without_write_key(body), call=call)
        await ingest.one(principal, DIALECT, edge_parse, payload, received, body_external_id)
        return json_response(SUCCESS)

    return single


def _batch(ingest: Ingest, max_events: int) -> Handler:
    async def batch(request: Request) -> Response:
        principal, body, received = await _admit(ingest, request, segment.MAX_BATCH_BYTES)
        envelope = _decode(body, _Batch)
        principal = principal or _from_body(ingest, envelope.writeKey)
        if not envelope.batch:
            return json_response(SUCCESS)
        shared = segment.shared_bytes(envelope.context, envelope.integrations, envelope.sentAt)
        # The batch's context and integrations count against each message (they are merged into
        # it); its sentAt does not: a message the SDK sized at its limit still fits.
        merged = segment.shared_bytes(envelope.context, envelope.integrations, None)
        room = segment.MAX_MESSAGE_BYTES - len(merged) + 2  # "{}" is no context at all
        payloads = []
        for i, raw in enumerate(envelope.batch):
            message = bytes(raw)
            if len(message) > room:
                raise InvalidEvent(
                    f"message over {segment.MAX_MESSAGE_BYTES} bytes "
                    "(with the batch's context and integrations)",
                    field=f"batch[{i}]",
                )
            payloads.append(segment.envelope(_without_write_key(message), shared=shared))
        out = await ingest.many(
            principal, DIALECT, edge_parse, payloads, received, body_external_id, max_events
        )
        if out.retryable:  # some were not acknowledged: the SDK resends, duplicates dropped
            raise ingest.unavailable()
        return json_response(SUCCESS)

    return batch


async def _admit(
    ingest: Ingest, request: Request, limit: int
) -> tuple[Principal | None, bytes, int]:
    """Auth from the header (when there is one), rate limit, then the decoded body within
    ``limit``; returns (principal or None, body, received_at ms)."""
    header = request.headers.get("authorization")
    principal = None
    if header:
        principal = ingest.keys.authenticate(f"Bearer {write_key(header)}")
        ingest.limiter.check(principal)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ENCODINGS:
        raise InvalidEvent(
            f"unsupported Content-Encoding {encoding[:100]!r}: send gzip or identity",
            field="Content-Encoding",
        )
    limit = min(limit, ingest.max_body_bytes)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _oversize(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _oversize(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding != "identity":
        body = gunzip(body, limit)
    return principal, body, ingest.clock_ms()


def write_key(header: str) -> str:
    """The write key of an Authorization header: Basic (the key is the user name, the password
    empty) or Bearer. Raises ``Unauthorized``."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() != "basic":
        raise Unauthorized(
            "malformed Authorization header (expected Basic with the write key as user name)"
        )
    try:
        user = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    if not user:
        raise Unauthorized("the Basic credentials' user name (the write key) is empty")
    return user


def _from_body(ingest: Ingest, key: Any) -> Principal:
    if not isinstance(key, str) or not key:
        raise Unauthorized("missing write key (Basic auth user name, or 'writeKey' in the body)")
    principal = ingest.keys.authenticate(f"Bearer {key}")
    ingest.limiter.check(principal)
    return principal


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body's bytes (every member), refusing to inflate past ``limit`` (no gzip bomb)."""
    out: list[bytes] = []
    size = 0
    data = body
    while data:
        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = inflate.decompress(data, limit + 1 - size)
        except zlib.error as exc:
            raise InvalidEvent(f"body is not valid gzip: {exc}", field="Content-Encoding") from None
        size += len(chunk)
        if size > limit:
            raise _oversize(limit, "decompressed ")
        if not inflate.eof:
            raise InvalidEvent("gzip body is truncated", field="Content-Encoding")
        out.append(chunk)
        data = inflate.unused_data
    return b"".join(out)


def _oversize(limit: int, what: str = "") -> InvalidEvent:
    """Segment answers 400 for a body over its limits, and its SDKs drop it (a 413 too)."""
    return InvalidEvent(f"{what}body over {limit} bytes (Segment's limit)", field="body")


def _decode(body: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError) as e:
        what = "a batch" if type_ is _Batch else "a message"
        raise InvalidEvent(f"not {what}: {e}") from None


def _without_write_key(message: bytes) -> bytes:
    """The message without its ``writeKey`` (a secret), when it has one."""
    if _WRITE_KEY not in message:
        return message
    tree = msgspec.json.decode(message)  # a part of a body that decoded: it decodes
    if isinstance(tree, dict) and tree.pop("writeKey", None) is not None:
        return msgspec.json.encode(tree)
    return message
