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
    kafka_session_timeout_s: float = 10.0
    """Consumer-group session timeout. Tansu answers a join after half of it: dev uses 2 s."""
    kafka_heartbeat_interval_s: float = 3.0
    worker_id: str = "eventpipe"

    # --- sink ----------------------------------------------------------------------------------
    sink_batch_size: int = 10_000
    sink_flush_interval_s: float = 0.5
    sink_group: str = "eventpipe-sink"
    sink_max_poll_interval_ms: int = 300_000
    """librdkafka's ``max.poll.interval.ms`` for the sink's consumer: a member that does not poll
    for this long is put out of its group. The sink polls (its partitions paused) while it
    waits for ClickHouse, so an outage does not reach it; tests shorten it to prove that."""

    log_level: str = "info"
    log_json: bool = False

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

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
