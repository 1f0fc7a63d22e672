"""The one retry policy: which failures are worth retrying, and how long to wait between tries.

Every stage that retries (the worker's outbox, the sink's insert, topic creation, dev's worker
supervisor) takes its backoff from :func:`backoff` and asks :func:`kafka_retryable` or
:func:`clickhouse_retryable` whether a failure may pass on a later try.

The split matters more than the waiting. A *retryable* failure (broker unreachable, a timeout,
ClickHouse down) clears by itself, so the stage waits and tries again; the record is never
dropped. A *permanent* failure (a record too large for the topic, a value that cannot be
encoded, a row ClickHouse refuses for its content) fails the same way on every try, so retrying
it would stop the stage for good behind one bad record: it becomes a ``rejected_events`` row with
its stage and reason, and the stage moves on.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from tenacity import wait_exponential_jitter
from tenacity.wait import wait_base

FIRST_WAIT_S = 0.2
MAX_WAIT_S = 5.0


def backoff(first_s: float = FIRST_WAIT_S, max_s: float = MAX_WAIT_S) -> wait_base:
    """Capped exponential backoff with jitter, so replicas that failed together do not retry
    together."""
    return wait_exponential_jitter(initial=first_s, max=max_s, jitter=first_s)


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
