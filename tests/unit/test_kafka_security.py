"""One settings block becomes the same security on confluent-kafka and on Faust (aiokafka)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from eventpipe.errors import StartError
from eventpipe.kafka import changelog_config, client_config, consumer_config, topic_config
from eventpipe.kafka_security import KafkaConfigError, worker_security
from eventpipe.settings import Settings
from sinks.clickhouse import ClickHouseStartError, client_kwargs, connect, migrate, redact
from streams.app import faust_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=unit-test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "c.key",
        "-out",
        "c.csr",
        "-subj",
        "/CN=unit-client",
    )
    run(
        "x509",
        "-req",
        "-in",
        "c.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "c.pem",
        "-days",
        "1",
    )
    return {"ca": d / "ca.pem", "cert": d / "c.pem", "key": d / "c.key"}


def aiokafka_auth(settings: Settings) -> dict[str, Any]:
    """What Faust hands every aiokafka client it builds (consumer, producer, admin)."""
    conf = faust_config(settings)
    return dict(credentials_to_aiokafka_auth(conf["broker_credentials"]))


def settings(**kw: Any) -> Settings:
    return Settings(kafka_bootstrap="k1:9093,k2:9093", **kw)


def test_sasl_ssl_scram_is_the_same_on_both_libraries(pki: dict[str, Path]) -> None:
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_ca=pki["ca"],
    )
    rd = client_config(s)
    aio = aiokafka_auth(s)
    assert (rd["security.protocol"], aio["security_protocol"]) == ("SASL_SSL", "SASL_SSL")
    assert rd["sasl.mechanism"] == aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert rd["sasl.username"] == aio["sasl_plain_username"] == "svc"
    assert rd["sasl.password"] == aio["sasl_plain_password"] == "pw"
    ctx: ssl.SSLContext = aio["ssl_context"]
    assert rd["ssl.ca.location"] == str(pki["ca"])
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "unit-test-ca"),),)]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname  # librdkafka's default
    assert faust_config(s)["broker"] == ["kafka://k1:9093", "kafka://k2:9093"]


def test_sasl_plaintext_plain_has_no_tls_on_either(pki: dict[str, Path]) -> None:
    s = settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    aio = aiokafka_auth(s)
    assert client_config(s)["security.protocol"] == aio["security_protocol"] == "SASL_PLAINTEXT"
    assert aio["sasl_mechanism"] == "PLAIN" and aio["ssl_context"] is None


def test_mutual_tls_loads_the_client_certificate_on_both(pki: dict[str, Path]) -> None:
    s = settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca=pki["ca"],
        kafka_ssl_cert=pki["cert"],
        kafka_ssl_key=pki["key"],
    )
    rd = client_config(s)
    aio = aiokafka_auth(s)
    assert rd["security.protocol"] == aio["security_protocol"] == "SSL"
    assert rd["ssl.certificate.location"] == str(pki["cert"])
    assert rd["ssl.key.location"] == str(pki["key"])
    assert isinstance(aio["ssl_context"], ssl.SSLContext)
    # a key that does not match the certificate fails when the context is built, not later
    bad = s.model_copy(update={"kafka_ssl_key": pki["ca"]})
    with pytest.raises(ssl.SSLError):
        worker_security(bad)


def test_plaintext_is_the_default_everywhere() -> None:
    s = settings()
    assert client_config(s) == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "PLAINTEXT",
    }
    assert aiokafka_auth(s) == {"security_protocol": "PLAINTEXT"}


def test_extra_keys_reach_both_or_are_refused() -> None:
    s = settings(
        kafka_security_protocol="SSL",
        kafka_extra={
            "client.id": "team-x",
            "metadata.max.age.ms": 60000,
            "ssl.endpoint.identification.algorithm": "none",
            "debug": "security",
        },
    )
    assert consumer_config(s, "g")["client.id"] == "team-x"
    conf = faust_config(s)
    assert conf["broker_client_id"] == "team-x"
    assert conf["consumer_metadata_max_age_ms"] == conf["producer_metadata_max_age_ms"] == 60000
    assert conf["broker_credentials"].context.check_hostname is False
    for key, says in (
        ("socket.keepalive.enable", "no equivalent in aiokafka"),
        ("acks", "set by eventpipe"),
        ("sasl.password", "EVENTPIPE_KAFKA_SASL_PASSWORD"),
    ):
        with pytest.raises(KafkaConfigError, match=says):
            client_config(settings(kafka_extra={key: "x"}))
        with pytest.raises(KafkaConfigError, match=says):
            faust_config(settings(kafka_extra={key: "x"}))


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs EVENTPIPE_KAFKA_SASL_MECHANISM"),
        ({"kafka_sasl_username": "u"}, "does not authenticate with SASL"),
        ({"kafka_ssl_ca": Path("/etc/hostname")}, "does not use TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cert": Path("/etc/hostname")},
            "go together",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_ca": Path("/nope.pem")}, "no such file"),
    ],
)
def test_a_block_that_cannot_work_is_refused_naming_the_setting(
    kw: dict[str, Any], says: str
) -> None:
    with pytest.raises(StartError, match=says):
        client_config(settings(**kw))


def test_secrets_are_masked_in_settings_and_messages() -> None:
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password="hunter2",
        kafka_ssl_key_password="hunter3",
    )
    assert "hunter2" not in repr(s) and "hunter3" not in repr(s)
    assert "hunter2" not in repr(worker_security(s))
    assert "hunter2" not in repr(faust_config(s)["broker_credentials"])


def test_topic_configs_default_for_three_brokers() -> None:
    s = settings()
    assert s.topic_replication == 3
    assert topic_config(s) == {"retention.ms": "604800000", "min.insync.replicas": "2"}
    assert changelog_config(s) == {"cleanup.policy": "compact", "min.insync.replicas": "2"}
    one = settings(topic_replication=1, topic_config={"retention.ms": "1000"})
    assert topic_config(one) == {"retention.ms": "1000", "min.insync.replicas": "1"}


def test_clickhouse_https_carries_the_ca(pki: dict[str, Path]) -> None:
    url = "https://user:secret@ch.example:8443/analytics"
    kwargs = client_kwargs(url, ca=pki["ca"])
    assert kwargs["ca_cert"] == str(pki["ca"]) and kwargs["verify"] is True
    assert kwargs["dsn"] == url
    assert redact(url) == "https://user:***@ch.example:8443/analytics"
    with pytest.raises(ClickHouseStartError, match="is not https"):
        client_kwargs("http://ch:8123/db", ca=pki["ca"])
    with pytest.raises(ClickHouseStartError, match="no such file"):
        client_kwargs(url, ca=Path("/nope.pem"))


def test_clickhouse_missing_database_and_read_only_user_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ClickHouseStartError, match="database 'nope' does not exist"):
        connect(f"chdb://{tmp_path}/ch?database=nope")
    reader = connect(f"chdb://{tmp_path}/ch", readonly=True)  # what a read-only user gets
    try:
        with pytest.raises(ClickHouseStartError, match="may not create tables"):
            migrate(reader)
    finally:
        reader.close()
