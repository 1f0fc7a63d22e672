"""The one retry policy: which failures are worth retrying, and how long to wait between tries.

Every stage that retries (the worker's outbox, the sink's insert, topic creation, dev's worker
supervisor, schema registry requests) takes its backoff from :func:`backoff` and asks
:func:`kafka_retryable`, :func:`clickhouse_retryable` or :func:`registry_retryable` whether a
failure may pass on a later try.

The split matters more than the waiting. A *retryable* failure (broker unreachable, a timeout,
ClickHouse down) clears by itself, so the stage waits and tries again; the record is never
dropped. A *permanent* failure (a record too large for the topic, a value that cannot be
encoded, a row ClickHouse refuses for its content) fails the same way on every try, so retrying
it would stop the stage for good behind one bad record: it becomes a ``rejected_events`` row with
its stage and reason, and the stage moves on.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

from clickhouse_connect.driver import exceptions as ch_errors
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryError
from tenacity import RetryCallState, wait_exponential_jitter
from tenacity.wait import wait_base

try:  # the HTTP library confluent-kafka's registry client uses: httpx2 where installed
    import httpx2 as registry_http
except ImportError:  # pragma: no cover
    import httpx as registry_http  # type: ignore[no-redef]

FIRST_WAIT_S = 0.2
MAX_WAIT_S = 5.0


def backoff(first_s: float = FIRST_WAIT_S, max_s: float = MAX_WAIT_S) -> wait_base:
    """Capped exponential backoff with jitter, so replicas that failed together do not retry
    together."""
    return wait_exponential_jitter(initial=first_s, max=max_s, jitter=first_s)


def delays(first_s: float = FIRST_WAIT_S, max_s: float = MAX_WAIT_S) -> Iterator[float]:
    """The waits of :func:`backoff`, one per failed try, for a loop that must wait on something
    of its own (a stop event) rather than sleep inside tenacity."""
    wait = backoff(first_s, max_s)
    for attempt in itertools.count(1):
        yield wait(cast(RetryCallState, SimpleNamespace(attempt_number=attempt)))


KAFKA_PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError._INVALID_ARG,
        KafkaError._KEY_SERIALIZATION,
        KafkaError._VALUE_SERIALIZATION,
        KafkaError.INVALID_REQUIRED_ACKS,
    }
)
"""Produce errors that the same record gets on every try: it can never be stored in that topic."""


KAFKA_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
"""The permanent errors that say the record is too big (the edge answers them 413)."""


def kafka_retryable(err: KafkaError) -> bool:
    """Whether a failed produce of this record may succeed on a later try."""
    return err.code() not in KAFKA_PERMANENT


def produce_exception_retryable(exc: BaseException) -> bool:
    """Whether a record that ``Producer.produce`` refused to enqueue may be enqueued later.

    ``BufferError`` is a full local queue: it drains. A ``KafkaException`` carries the
    ``KafkaError`` (librdkafka checks ``message.max.bytes`` here, before any broker sees the
    record); anything else is a value the producer cannot take, which no retry changes.
    """
    if isinstance(exc, BufferError):
        return True
    if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
        return kafka_retryable(exc.args[0])
    return False


KAFKA_CONNECT_REFUSED = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)
"""Connection errors a broker gives the same credentials or certificates on every try."""


def kafka_connect_refused(err: KafkaError) -> bool:
    """Whether the broker refused this client's login or TLS handshake (permanent).

    librdkafka reports a server's TLS alert (e.g. "certificate required" when mutual TLS wants
    a client certificate we did not send) as a transport error carrying OpenSSL's text.
    """
    if err.code() in KAFKA_CONNECT_REFUSED:
        return True
    return err.code() == KafkaError._TRANSPORT and "SSL routines" in err.str()


def registry_retryable(exc: BaseException) -> bool:
    """Whether a schema registry request may succeed on a later try: the registry unreachable,
    or answering 5xx or 429. Any other answer (not found, unauthorized, an incompatible schema)
    is the registry's last word."""
    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code >= 500 or exc.http_status_code == 429
    return isinstance(exc, registry_http.TransportError | OSError)


# --- ClickHouse ---------------------------------------------------------------------------------

CLICKHOUSE_PERMANENT = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
        407,  # DECIMAL_OVERFLOW
        467,  # CANNOT_PARSE_BOOL
        469,  # VIOLATED_CONSTRAINT (migration 005's timestamp range, or any CHECK)
        691,  # UNKNOWN_ELEMENT_OF_ENUM
        1001,  # STD_EXCEPTION: a decoder's own exception, e.g. avro::Exception on a corrupt body
    }
)
"""ClickHouse error codes that name the inserted data itself: the same rows fail on every try.

Everything else is retried, including codes not listed here: the load codes (TIMEOUT_EXCEEDED
159, TOO_MANY_SIMULTANEOUS_QUERIES 202, MEMORY_LIMIT_EXCEEDED 241, TOO_MANY_PARTS 252, ...),
network and socket codes (209, 210), and the schema codes an operator fixes by migrating
(UNKNOWN_TABLE 60). A code wrongly retried stalls the sink, visibly (``insert failures`` in
its log and metrics) and with every record still in Kafka; one wrongly called permanent would
send good rows to ``rejected_events``. So the list is of content codes only, and grows when a
new one is seen."""

_CLIENT_SIDE_DATA_ERRORS = (ValueError, TypeError, AttributeError, OverflowError, struct.error)
"""What clickhouse-connect raises when it cannot serialize a row's value into its column type
(an int for a String column gives AttributeError, a bad datetime string ValueError), before
anything is sent: the row can never be written as it is."""


def clickhouse_error_text(exc: BaseException) -> str:
    """ClickHouse's own message for a failure, for logs and rejection reasons.

    chDB's Python binding decodes the engine's message as UTF-8, and a message that quotes a
    refused row's binary value (a CHECK constraint's "Column values: payload = '...'") does not
    decode: clickhouse-connect then raises ``DatabaseError`` without a code, whose text is the
    ``UnicodeDecodeError``'s and whose cause holds the message's bytes. Those are read here.
    """
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError) and isinstance(cause.object, bytes):
        return cause.object.decode("utf-8", "replace")
    return str(exc)


_CODE = re.compile(r"\bCode: (\d+)\.")


def _clickhouse_code(exc: ch_errors.DatabaseError) -> int | None:
    if exc.code is not None:
        return exc.code
    match = _CODE.match(clickhouse_error_text(exc)) if exc.__cause__ is not None else None
    return int(match.group(1)) if match else None


def clickhouse_retryable(exc: BaseException) -> bool:
    """Whether a failed ClickHouse insert may succeed on a later try with the same rows.

    clickhouse-connect raises ``OperationalError`` for transport failures (the server down or
    unreachable, a cut connection) and ``DatabaseError`` with the server's ``code`` otherwise;
    chDB's errors come as ``DatabaseError`` with a code too (or with the code in a message it
    could not decode: :func:`clickhouse_error_text`).
    """
    if isinstance(exc, ch_errors.OperationalError | OSError):
        return True
    if isinstance(exc, ch_errors.DataError):
        return False
    if isinstance(exc, ch_errors.DatabaseError):
        return _clickhouse_code(exc) not in CLICKHOUSE_PERMANENT
    return not isinstance(exc, _CLIENT_SIDE_DATA_ERRORS)
