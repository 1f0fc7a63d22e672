"""Reading a topic from a test: every record up to the partitions' real ends, and ``eventpipe
tail`` run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from eventpipe.drain import Offsets
from tests.conftest import Stack

READ_TIMEOUT_S = 30.0


def bootstrap(stack: Stack) -> str:
    return str(json.loads((stack.data_dir / "dev.json").read_text())["kafka_bootstrap"])


def read_topic(servers: str, topic: str) -> list[Message]:
    """Every record of ``topic`` now, through a plain consumer (assigned from offset 0)."""
    offsets = Offsets(servers)
    try:
        ends, _ = offsets.ends(offsets.partitions([topic]))
    finally:
        offsets.close()
    pending = {tp for tp, end in ends.items() if end > 0}
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"test-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
        }
    )
    out: list[Message] = []
    try:
        consumer.assign([TopicPartition(t, p, 0) for t, p in pending])
        deadline = time.monotonic() + READ_TIMEOUT_S
        while pending:
            assert time.monotonic() < deadline, f"{topic}: not read to the end: {pending}"
            for msg in consumer.consume(10_000, 0.2):
                tp = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    pending.discard(tp)
                    continue
                out.append(msg)
                if (msg.offset() or 0) + 1 >= ends[tp]:
                    pending.discard(tp)
    finally:
        consumer.close()
    return out


def tail_command(stack: Stack, env: dict[str, str], *args: str) -> list[str]:
    """``python -m launch tail ... --data-dir <the stack's>``, as ``eventpipe tail`` runs."""
    return [sys.executable, "-m", "launch", "tail", *args, "--data-dir", str(stack.data_dir)]


def tail_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(extra, EVENTPIPE_LOG_LEVEL="warning")
    return env


def tail(stack: Stack, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """Run ``eventpipe tail`` to its end; its JSON lines, parsed."""
    done = subprocess.run(
        tail_command(stack, env, *args),
        env=tail_env(env),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return [json.loads(line) for line in done.stdout.decode().splitlines()]
