"""The one typed settings object, read from ``EVENTPIPE_*`` environment variables.

Every default is chosen so that ``eventpipe dev`` works with no configuration at all: no Kafka
bootstrap means "start the embedded Tansu broker", no ClickHouse URL means "chDB on disk under the
data directory". Production sets the two URLs and nothing embedded starts.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventpipe.broker import BrokerProfile, Workarounds, workarounds

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
"""Workspace (product) and source names: they become Kafka keys, ClickHouse values and log
context, so they are short, lower-case and need no quoting anywhere."""

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]


class ApiKeyConfig(BaseModel):
    """One API key, configured by its SHA-256 hex digest: the secret itself is never stored.

    The same model checks keys minted through ``/admin/keys``, so a bad product, source or rate
    is refused when the key is made, not found by a 500 on the key's first request."""

    model_config = ConfigDict(extra="forbid")

    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    product: Name
    source: Name = "api"
    rate_limit_per_minute: Annotated[StrictInt, Field(gt=0)] | None = None


def split_listen(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) into its parts; ValueError when it is neither."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Only literal loopback addresses and ``localhost`` count: a name could resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTPIPE_", extra="ignore")

    # --- where things are -------------------------------------------------------------------
    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers. Unset: ``eventpipe dev`` starts the embedded Tansu broker."""
    clickhouse_url: str | None = None
    """``http(s)://user:pass@host:port/db`` or ``chdb:///path``. Unset: chDB under data_dir."""
    clickhouse_ca: Path | None = None
    """PEM file of the CA that signed an ``https://`` ClickHouse's certificate."""
    schema_registry_url: str | None = None
    """Confluent-compatible registry. Unset: Avro single-object encoding (no registry)."""
    data_dir: Path = Path(".eventpipe")
    broker_profile: BrokerProfile | None = None
    """``embedded`` turns on the workarounds for the embedded Tansu broker (``eventpipe.broker``).
    Unset: ``embedded`` when dev starts Tansu (no bootstrap), else ``kafka``."""
    topic_prefix: str = ""
    """Prepended to every topic name, so several pipelines (or test runs) can share a cluster."""
    topic_partitions: int = 4

    # --- Kafka security (eventpipe.kafka_security: the same on every client) -----------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca: Path | None = None
    """PEM file of the CA that signed the brokers' certificates. Unset: the system's CAs."""
    kafka_ssl_cert: Path | None = None
    """PEM client certificate, for mutual TLS (with ``kafka_ssl_key``)."""
    kafka_ssl_key: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_extra: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Other librdkafka properties (JSON); only keys the worker can follow too are taken."""

    # --- topics -----------------------------------------------------------------------------
    create_topics: bool = True
    """False: nothing is created, and a missing topic (or one with too few partitions) stops
    every process at start. For clusters whose topics are managed elsewhere."""
    topic_replication: int = Field(default=3, ge=1)
    """Replication factor of the topics eventpipe creates (dev's embedded broker: 1)."""
    topic_min_insync_replicas: int | None = Field(default=None, ge=1)
    """``min.insync.replicas`` of created topics. Unset: replication - 1, at least 1."""
    topic_retention_ms: int = 7 * 24 * 3600 * 1000
    """Retention of the pipeline's four topics (the changelogs are compacted instead)."""
    topic_config: dict[str, str] = Field(default_factory=dict)
    """More topic configs (JSON) for the four pipeline topics, over the two above."""
    changelog_topic_config: dict[str, str] = Field(default_factory=dict)
    """More topic configs (JSON) for the worker's table changelogs (compacted)."""

    # --- HTTP edge ------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    edge_workers: Annotated[int, Field(ge=1)] = 1
    """Processes of ``eventpipe edge`` serving one port (``--workers``): each with its own
    producer, answering after Kafka's ack as one process does. Rate limits and ``/metrics`` are
    per process; admin routes need one process (keys minted there live in it alone)."""
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    dev_api_key: str | None = None
    """Fixes the development key ``eventpipe dev`` prints (else one is generated and kept)."""
    admin_token: str | None = None
    """Enables the /admin endpoints (read-only query, key creation) for holders of this token."""
    admin_listen: str = "127.0.0.1:9001"
    """Where ``eventpipe edge`` serves the /admin routes: their own listener, never the public
    one. ``eventpipe dev`` serves them on its main (loopback) port instead."""
    admin_allow_remote: bool = False
    """Allow a non-loopback /admin listener (``admin_listen``, or ``dev``'s ``host``): off, so an
    admin token is never one typo away from being guessable from the network."""
    max_body_bytes: int = 5 * 1024 * 1024
    max_batch_events: int = 1000
    max_event_bytes: int = 900_000
    """One accepted event's Kafka record at most (key + Avro value): 413, or the batch entry's
    error, above it. Below ``eventpipe.kafka.MESSAGE_MAX_BYTES``, with room for the clean record
    the agents make of it: a bigger one would be refused by Kafka on every retry."""
    rate_limit_per_minute: int = 100
    kafka_delivery_timeout_ms: int = 10_000
    """How long the edge waits for Kafka's acknowledgement before answering 503."""
    retry_after_seconds: int = 5

    # --- /admin/query limits (ClickHouse settings on the read-only client's session) ----------
    admin_query_max_execution_s: float = 30.0
    admin_query_max_rows_to_read: int = 1_000_000_000
    admin_query_max_result_rows: int = 100_000
    admin_query_max_result_bytes: int = 100 * 1024 * 1024
    admin_query_max_memory_bytes: int = 1024 * 1024 * 1024

    # --- agents -----------------------------------------------------------------------------------
    dedupe_window_seconds: int = 24 * 3600
    kafka_session_timeout_s: float | None = None
    """Consumer-group session timeout. Unset: the broker profile's (10 s on Kafka, 2 s embedded)."""
    kafka_heartbeat_interval_s: float | None = None
    worker_id: str = "eventpipe"
    dev_workers: int = Field(default=1, ge=1)
    """How many worker processes ``eventpipe dev`` runs (each ``eventpipe worker``, in one group,
    sharing ``events.raw``'s partitions). The worker is the pipeline's slowest stage (one Python
    event loop, one core): on a machine with cores to spare, 2 raise what ``dev`` sustains
    (``python -m bench --only scale``). More than the topic's partitions leaves some idle."""

    # --- sink ----------------------------------------------------------------------------------
    sink_batch_size: int = 10_000
    sink_flush_interval_s: float = 0.2
    """How long the first message of a batch waits for the batch to fill: the floor of the
    sink's latency at low rates (a batch that fills first goes at once). 0.5 s put ~0.4 s into
    ``eventpipe dev``'s 2xx-to-row p50 at 2,400 events/s; 0.2 s halves it for at most 5 inserts a
    second per sink (ClickHouse advises against many more small ones)."""
    sink_group: str = "eventpipe-sink"
    sink_max_poll_interval_ms: int = 300_000
    """librdkafka's ``max.poll.interval.ms`` for the sink's consumer: a member that does not poll
    for this long is put out of its group. The sink polls (its partitions paused) while it
    waits for ClickHouse, so an outage does not reach it; tests shorten it to prove that."""

    # --- replay -------------------------------------------------------------------------------
    replay_confirm_above: int = Field(default=10_000, ge=0)
    """A replay that selects more raw records than this is a dry run unless ``--execute`` is
    given (``--dry-run`` always is one). The count is an upper bound from offsets: on the
    embedded broker a time range counts from the partition's start (``replay/select.py``)."""

    # --- metrics and dashboards --------------------------------------------------------------
    metrics_host: str = "127.0.0.1"
    """Where the worker and the standalone sink serve ``/metrics`` and ``/healthz`` (the edge
    serves them on its own port). Loopback by default; a container sets ``0.0.0.0``."""
    worker_metrics_port: int = 9101
    """``eventpipe dev`` gives its worker a free port instead, unless this is set."""
    sink_metrics_port: int = 9102
    lag_interval_s: float = 5.0
    """How often the worker and the sink measure their consumer lag (``eventpipe.lag``)."""
    dashboard_metrics_urls: list[str] = Field(default_factory=list)
    """Other processes' ``/metrics`` the edge's /dashboard reads for pipeline health (the
    worker's and the sink's); ``eventpipe dev`` sets its worker's."""

    materialized_properties: list[str] = Field(default_factory=list)
    """Top-level properties (the catalog's frequent ones) given a column of their own in
    ``events``, ``property_<name>``, so a breakdown by one is fast (``sinks.clickhouse``)."""

    # --- dev ------------------------------------------------------------------------------------
    drain_timeout_seconds: float = 120.0
    """How long a stopping ``eventpipe dev`` on the embedded broker waits for the worker and the
    sink to process what the edge acknowledged (``eventpipe.drain``) before it stops anyway."""

    # --- event catalog -----------------------------------------------------------------------
    catalog_typical_share: float = Field(default=0.95, gt=0.5, le=1.0)
    """A property is typical of an event's version when at least this share of its events carry
    it, and rare at most 1 - this; missing a typical one or carrying a rare one is an anomaly."""
    catalog_window_days: int = Field(default=30, ge=1, le=3660)
    """The days of occurred_at that shares, typical properties and anomalies are computed over."""

    log_level: str = "info"
    log_json: bool = False

    @model_validator(mode="after")
    def _admin_listener_is_local(self) -> Settings:
        host, _ = split_listen(self.admin_listen)
        if not is_loopback(host) and not self.admin_allow_remote:
            raise ValueError(
                f"EVENTPIPE_ADMIN_LISTEN={self.admin_listen!r} is not a loopback address: "
                "the admin routes mint keys and read ClickHouse; set "
                "EVENTPIPE_ADMIN_ALLOW_REMOTE=1 to serve them beyond this machine anyway"
            )
        return self

    @property
    def admin_address(self) -> tuple[str, int]:
        return split_listen(self.admin_listen)

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def profile(self) -> BrokerProfile:
        if self.broker_profile is not None:
            return self.broker_profile
        return BrokerProfile.EMBEDDED if self.embedded_kafka else BrokerProfile.KAFKA

    @property
    def workarounds(self) -> Workarounds:
        return workarounds(self.profile)

    @property
    def session_timeout_s(self) -> float:
        return self.kafka_session_timeout_s or self.workarounds.session_timeout_s

    @property
    def heartbeat_interval_s(self) -> float:
        return self.kafka_heartbeat_interval_s or self.workarounds.heartbeat_interval_s

    @property
    def bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise RuntimeError("EVENTPIPE_KAFKA_BOOTSTRAP is not set (and no embedded broker runs)")
        return self.kafka_bootstrap

    @property
    def embedded_clickhouse(self) -> bool:
        return not self.clickhouse_url or self.clickhouse_url.startswith("chdb:")

    @cached_property
    def clickhouse_dsn(self) -> str:
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
