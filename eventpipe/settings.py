"""The one typed settings object, read from ``EVENTPIPE_*`` environment variables.

Every default is chosen so that ``eventpipe dev`` works with no configuration at all: no Kafka
bootstrap means "start the embedded Tansu broker", no ClickHouse URL means "chDB on disk under the
data directory". Production sets the two URLs and nothing embedded starts.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventpipe.broker import BrokerProfile, Workarounds, workarounds


class ApiKeyConfig(BaseModel):
    """One API key, configured by its SHA-256 hex digest: the secret itself is never stored."""

    sha256: str
    product: str
    source: str = "api"
    rate_limit_per_minute: int | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTPIPE_", extra="ignore")

    # --- where things are -------------------------------------------------------------------
    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers. Unset: ``eventpipe dev`` starts the embedded Tansu broker."""
    clickhouse_url: str | None = None
    """``http(s)://user:pass@host:port/db`` or ``chdb:///path``. Unset: chDB under data_dir."""
    schema_registry_url: str | None = None
    """Confluent-compatible registry. Unset: Avro single-object encoding (no registry)."""
    data_dir: Path = Path(".eventpipe")
    broker_profile: BrokerProfile | None = None
    """``embedded`` turns on the workarounds for the embedded Tansu broker (``eventpipe.broker``).
    Unset: ``embedded`` when dev starts Tansu (no bootstrap), else ``kafka``."""
    topic_prefix: str = ""
    """Prepended to every topic name, so several pipelines (or test runs) can share a cluster."""
    topic_partitions: int = 4
    topic_replication: int = 1

    # --- HTTP edge ------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    dev_api_key: str | None = None
    """Fixes the development key ``eventpipe dev`` prints (else one is generated and kept)."""
    admin_token: str | None = None
    """Enables the /admin endpoints (read-only query, key creation) for holders of this token."""
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

    # --- agents -----------------------------------------------------------------------------------
    dedupe_window_seconds: int = 24 * 3600
    kafka_session_timeout_s: float | None = None
    """Consumer-group session timeout. Unset: the broker profile's (10 s on Kafka, 2 s embedded)."""
    kafka_heartbeat_interval_s: float | None = None
    worker_id: str = "eventpipe"

    # --- sink ----------------------------------------------------------------------------------
    sink_batch_size: int = 10_000
    sink_flush_interval_s: float = 0.5
    sink_group: str = "eventpipe-sink"

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
