"""Kafka connection security: one settings block, the same on every client.

eventpipe talks to Kafka through two client libraries. confluent-kafka (librdkafka) is the
edge's producer, the sink's consumer, the admin client that creates and checks topics, the
changelog sentinels and the drain probe; aiokafka, inside Faust, is the worker's consumer,
producer and admin. They are configured in different vocabularies: librdkafka takes
``security.protocol``, ``sasl.*`` and ``ssl.*`` properties (:func:`librdkafka_security`);
aiokafka takes a protocol, SASL fields and an ``ssl.SSLContext`` (:func:`worker_security`, which
``streams.app.faust_config`` turns into Faust's ``broker_credentials``). Both are built here,
from the same ``Settings`` fields, so a worker can never connect differently from the rest.

``EVENTPIPE_KAFKA_EXTRA`` passes other librdkafka properties. Each key must be one the worker can
follow too (:data:`WORKER_EQUIVALENT`, translated for aiokafka below) or one that only changes
what a librdkafka client logs (:data:`DIAGNOSTIC`). Any other key is refused at start: applied to
the confluent-kafka clients alone, it would leave the worker silently different (another timeout,
another TLS check). Keys that a dedicated setting owns, or that eventpipe sets for its guarantees
(acks, idempotence, the partitioner, offset commits), are refused with the setting to use.

Secrets (the SASL password, the key's passphrase) are ``SecretStr`` in ``Settings``: their repr
is masked, and they are unwrapped only into the client configuration dicts built here, which
nothing logs.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventpipe.errors import StartError
from eventpipe.settings import Settings

SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})

OWNED_BY_SETTING = {
    "bootstrap.servers": "EVENTPIPE_KAFKA_BOOTSTRAP",
    "security.protocol": "EVENTPIPE_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "EVENTPIPE_KAFKA_SASL_MECHANISM",
    "sasl.mechanisms": "EVENTPIPE_KAFKA_SASL_MECHANISM",
    "sasl.username": "EVENTPIPE_KAFKA_SASL_USERNAME",
    "sasl.password": "EVENTPIPE_KAFKA_SASL_PASSWORD",
    "ssl.ca.location": "EVENTPIPE_KAFKA_SSL_CA",
    "ssl.certificate.location": "EVENTPIPE_KAFKA_SSL_CERT",
    "ssl.key.location": "EVENTPIPE_KAFKA_SSL_KEY",
    "ssl.key.password": "EVENTPIPE_KAFKA_SSL_KEY_PASSWORD",
    "group.id": "EVENTPIPE_SINK_GROUP / EVENTPIPE_WORKER_ID",
    "session.timeout.ms": "EVENTPIPE_KAFKA_SESSION_TIMEOUT_S",
    "heartbeat.interval.ms": "EVENTPIPE_KAFKA_HEARTBEAT_INTERVAL_S",
    "message.timeout.ms": "EVENTPIPE_KAFKA_DELIVERY_TIMEOUT_MS",
}
"""librdkafka keys that have a setting of their own: EXTRA must not set them a second way."""

GUARANTEES = frozenset(
    {
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "partitioner",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "isolation.level",
        "message.max.bytes",
        "transactional.id",
    }
)
"""Keys eventpipe sets because its guarantees depend on them (2xx only after acks=all, keys on
Faust's partitions, offsets committed after the write)."""

WORKER_EQUIVALENT = {
    "client.id": "Faust broker_client_id",
    "metadata.max.age.ms": "aiokafka metadata_max_age_ms",
    "connections.max.idle.ms": "aiokafka connections_max_idle_ms",
    "ssl.endpoint.identification.algorithm": "SSLContext.check_hostname",
    "enable.ssl.certificate.verification": "SSLContext.verify_mode",
    "ssl.cipher.suites": "SSLContext.set_ciphers",
}
"""EXTRA keys applied to the worker too, and how (see :func:`worker_security`)."""

DIAGNOSTIC = frozenset({"debug", "log_level", "log.connection.close"})
"""EXTRA keys that change only what a librdkafka client logs, never how it talks to Kafka."""


class KafkaConfigError(StartError):
    """A Kafka setting that cannot work, found before any client is built (the process stops)."""


@dataclass(frozen=True)
class WorkerSecurity:
    """The worker's (aiokafka's) view of the security block."""

    protocol: str
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    faust: dict[str, Any] = field(default_factory=dict)
    """Faust settings from EXTRA (client id, metadata age, idle connections)."""


def check(settings: Settings) -> None:
    """Refuse a security block that cannot work, naming the setting; called by both builders."""
    protocol = settings.kafka_security_protocol
    sasl = protocol in SASL_PROTOCOLS
    if sasl:
        missing = [
            name
            for name, value in (
                ("EVENTPIPE_KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
                ("EVENTPIPE_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("EVENTPIPE_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if not value
        ]
        if missing:
            raise KafkaConfigError(
                f"EVENTPIPE_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}"
            )
    elif settings.kafka_sasl_mechanism or settings.kafka_sasl_username:
        raise KafkaConfigError(
            f"EVENTPIPE_KAFKA_SASL_* is set but EVENTPIPE_KAFKA_SECURITY_PROTOCOL={protocol} "
            "does not authenticate with SASL: use SASL_SSL (or SASL_PLAINTEXT)"
        )
    files = {
        "EVENTPIPE_KAFKA_SSL_CA": settings.kafka_ssl_ca,
        "EVENTPIPE_KAFKA_SSL_CERT": settings.kafka_ssl_cert,
        "EVENTPIPE_KAFKA_SSL_KEY": settings.kafka_ssl_key,
    }
    given = [name for name, path in files.items() if path is not None]
    if given and protocol not in TLS_PROTOCOLS:
        raise KafkaConfigError(
            f"{', '.join(given)} set but EVENTPIPE_KAFKA_SECURITY_PROTOCOL={protocol} does not "
            "use TLS: use SSL (or SASL_SSL)"
        )
    if (settings.kafka_ssl_cert is None) != (settings.kafka_ssl_key is None):
        raise KafkaConfigError(
            "EVENTPIPE_KAFKA_SSL_CERT and EVENTPIPE_KAFKA_SSL_KEY go together (mutual TLS)"
        )
    for name, path in files.items():
        if path is not None and not Path(path).is_file():
            raise KafkaConfigError(f"{name}={path}: no such file")
    for key in settings.kafka_extra:
        _check_extra_key(key)


def _check_extra_key(key: str) -> None:
    if key in OWNED_BY_SETTING:
        raise KafkaConfigError(f"EVENTPIPE_KAFKA_EXTRA: set {key!r} with {OWNED_BY_SETTING[key]}")
    if key in GUARANTEES:
        raise KafkaConfigError(
            f"EVENTPIPE_KAFKA_EXTRA: {key!r} is set by eventpipe (its delivery guarantees "
            "depend on it) and cannot be changed"
        )
    if key not in WORKER_EQUIVALENT and key not in DIAGNOSTIC:
        raise KafkaConfigError(
            f"EVENTPIPE_KAFKA_EXTRA: {key!r} has no equivalent in aiokafka (the worker's "
            "client): the worker would silently differ from the other clients. Supported: "
            f"{', '.join(sorted([*WORKER_EQUIVALENT, *DIAGNOSTIC]))}"
        )


def librdkafka_security(settings: Settings) -> dict[str, Any]:
    """The security block and EXTRA as librdkafka properties (every confluent-kafka client)."""
    check(settings)
    conf: dict[str, Any] = {"security.protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in SASL_PROTOCOLS:
        assert settings.kafka_sasl_password is not None  # check() made sure
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_ca is not None:
        conf["ssl.ca.location"] = str(settings.kafka_ssl_ca)
    if settings.kafka_ssl_cert is not None:
        conf["ssl.certificate.location"] = str(settings.kafka_ssl_cert)
        conf["ssl.key.location"] = str(settings.kafka_ssl_key)
        if settings.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    conf.update(settings.kafka_extra)
    return conf


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The worker's TLS, as librdkafka does it by default: the CA file (else the system's),
    the server's host name checked, the client certificate when mutual TLS is configured."""
    ca = str(settings.kafka_ssl_ca) if settings.kafka_ssl_ca is not None else None
    ctx = ssl.create_default_context(cafile=ca)
    if settings.kafka_ssl_cert is not None:
        password = settings.kafka_ssl_key_password
        ctx.load_cert_chain(
            str(settings.kafka_ssl_cert),
            str(settings.kafka_ssl_key),
            password.get_secret_value() if password is not None else None,
        )
    extra = settings.kafka_extra
    if "ssl.endpoint.identification.algorithm" in extra:
        ctx.check_hostname = str(extra["ssl.endpoint.identification.algorithm"]).lower() == "https"
    if "enable.ssl.certificate.verification" in extra and not _flag(
        extra["enable.ssl.certificate.verification"]
    ):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if "ssl.cipher.suites" in extra:
        ctx.set_ciphers(str(extra["ssl.cipher.suites"]))
    return ctx


def worker_security(settings: Settings) -> WorkerSecurity:
    """The same block for aiokafka: what ``streams.app.faust_config`` hands Faust."""
    check(settings)
    protocol = settings.kafka_security_protocol
    extra = settings.kafka_extra
    faust: dict[str, Any] = {}
    if "client.id" in extra:
        faust["broker_client_id"] = str(extra["client.id"])
    for key, names in (
        ("metadata.max.age.ms", ("consumer_metadata_max_age_ms", "producer_metadata_max_age_ms")),
        (
            "connections.max.idle.ms",
            ("consumer_connections_max_idle_ms", "producer_connections_max_idle_ms"),
        ),
    ):
        if key in extra:
            faust.update(dict.fromkeys(names, int(extra[key])))
    password = settings.kafka_sasl_password
    return WorkerSecurity(
        protocol=protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism if protocol in SASL_PROTOCOLS else None,
        username=settings.kafka_sasl_username if protocol in SASL_PROTOCOLS else None,
        password=password.get_secret_value() if protocol in SASL_PROTOCOLS and password else None,
        ssl_context=ssl_context(settings) if protocol in TLS_PROTOCOLS else None,
        faust=faust,
    )


def describe(settings: Settings) -> str:
    """How eventpipe connects, for error messages and logs: never a secret."""
    protocol = settings.kafka_security_protocol
    if protocol in SASL_PROTOCOLS:
        return f"{protocol}, {settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username!r}"
    if protocol == "SSL" and settings.kafka_ssl_cert is not None:
        return "SSL with a client certificate"
    return protocol
