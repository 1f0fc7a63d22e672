"""Errors that carry their context, and the one place they map to HTTP statuses.

EventpipeError
├── InvalidEvent        400  one event broke a rule (field + reason)
│   ├── PayloadTooLarge 413  body, or an event as a Kafka record, over the configured limit
│   └── Refused         422  Kafka refused the event for good (a retry would fail the same way)
├── InvalidRequest      400  a malformed request that is not an event (admin bodies: field)
├── QueryRefused        400  admin SQL that is not one plain SELECT, or uses a refused function
├── QueryFailed         400  admin SQL that ClickHouse refused or stopped (syntax, a limit hit)
├── Unauthorized        401  missing, malformed or unknown API key or admin token
├── NotFound            404  no such resource in the caller's workspace (never 403)
├── Conflict            409  the resource exists, or the request contradicts configuration
├── RateLimited         429  workspace over its per-minute budget (Retry-After)
├── NotSupported        501  this process cannot serve the route (no ClickHouse client)
└── Unavailable         503  Kafka did not acknowledge in time (Retry-After)

StartError (no HTTP status: the process stops at start, the CLI prints it and exits 2)
├── eventpipe.kafka_security.KafkaConfigError   a security block that cannot work
├── eventpipe.kafka.KafkaStartError             refused login/TLS, missing or short topics
└── sinks.clickhouse.ClickHouseStartError       missing database, read-only user, unreachable
"""

from __future__ import annotations


class EventpipeError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def with_field(self, field: str) -> EventpipeError:
        """The same error, reported against the request field that carried the value."""
        self.field = field
        return self

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class InvalidEvent(EventpipeError):
    status = 400
    code = "validation_error"


class PayloadTooLarge(InvalidEvent):
    status = 413
    code = "payload_too_large"


class Refused(InvalidEvent):
    status = 422
    code = "refused"


class InvalidRequest(EventpipeError):
    status = 400
    code = "invalid_request"


class QueryRefused(EventpipeError):
    status = 400
    code = "query_refused"


class QueryFailed(EventpipeError):
    status = 400
    code = "query_failed"


class Unauthorized(EventpipeError):
    status = 401
    code = "unauthorized"


class NotFound(EventpipeError):
    status = 404
    code = "not_found"


class Conflict(EventpipeError):
    status = 409
    code = "conflict"


class RateLimited(EventpipeError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotSupported(EventpipeError):
    status = 501
    code = "not_supported"


class Unavailable(EventpipeError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StartError(RuntimeError):
    """A configuration that cannot work, found at start. Its message names the setting to
    change and never carries a secret."""
