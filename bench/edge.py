"""Edge stage: ``eventpipe edge`` under HTTP load, against one bare producer process.

Figure: events/s accepted through 1,000-event batches, and single-event requests/s, each with
p50/p99 request latency at a fixed concurrency, plus the edge's RSS. Ceiling: the same raw
records (ids, Avro single-object encoding, keys) produced by one process with confluent-kafka
and the edge's own producer configuration (acks=all, idempotent, murmur2_random).

Run as a module it is that ceiling's child process:
``python -m bench.edge --bootstrap HOST:PORT --topic T --events N``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.data import PRODUCT, SOURCE, v2_payload
from bench.procs import (
    broker,
    child_env,
    cpu_seconds,
    memory_mb,
    run_json,
    settings_for,
    spawn,
    stop,
)
from bench.report import StageResult
from eventpipe.embedded import free_port, wait_for_port
from eventpipe.topics import TopicNames
from producers.auth import hash_key, new_key

UNLIMITED = 10**9
"""Requests per minute for the bench workspace: the rate limiter is not what is measured."""


def run(
    workdir: Path, events: int, singles: int, concurrency: int, say: Callable[[str], None]
) -> tuple[list[StageResult], dict[str, Any]]:
    batches = max(1, events // 1000)
    with broker("bench-edge.") as (settings, tansu):
        key = new_key()
        keys = [
            {
                "sha256": hash_key(key),
                "product": PRODUCT,
                "source": SOURCE,
                "rate_limit_per_minute": UNLIMITED,
            }
        ]
        port = free_port()
        env = child_env(settings, EVENTPIPE_API_KEYS=json.dumps(keys))
        edge = spawn(["-m", "launch", "edge", "--port", str(port)], env, workdir / "edge.log")
        try:
            wait_for_port("127.0.0.1", port, 60, edge)
            url = f"http://127.0.0.1:{port}"
            idle = memory_mb(edge.pid)
            common = ["-m", "bench.loadgen", "max", "--url", url, "--key", key]
            common += ["--concurrency", str(concurrency)]

            def phase(kind: str, requests: int, time_limit: int) -> dict[str, Any]:
                """One load phase, with the CPU share the edge and the broker used during it."""
                cpu = (cpu_seconds(edge.pid), cpu_seconds(tansu.pid))
                out = run_json(
                    [
                        *common,
                        "--kind",
                        kind,
                        "--requests",
                        str(requests),
                        "--time-limit",
                        str(time_limit),
                    ],
                    child_env(),
                    workdir / "loadgen.log",
                    timeout_s=time_limit * 2,
                )
                out["edge_cpu_share"] = (cpu_seconds(edge.pid) - cpu[0]) / out["elapsed_s"]
                out["broker_cpu_share"] = (cpu_seconds(tansu.pid) - cpu[1]) / out["elapsed_s"]
                handled = out["events_accepted"] if kind == "batch" else out["requests"]
                out["edge_cpu_us_per_event" if kind == "batch" else "edge_cpu_us_per_request"] = (
                    (cpu_seconds(edge.pid) - cpu[0]) / max(1, handled) * 1e6
                )
                return out

            say(f"edge: {batches} batches of 1,000 at concurrency {concurrency}")
            batch = phase("batch", batches, 120)
            loaded = memory_mb(edge.pid)
            say(f"edge: {singles} single-event requests at concurrency {concurrency}")
            single = phase("single", singles, 60)
            memory = {"idle": idle, "after_batches": loaded, "after_singles": memory_mb(edge.pid)}
        finally:
            stop(edge)
    say(f"edge ceiling: {events} events from one confluent-kafka producer")
    with broker("bench-ceiling.") as (settings, _):
        ceiling = run_json(
            [
                *("-m", "bench.edge", "--bootstrap", settings.bootstrap),
                *("--topic", TopicNames.from_settings(settings).raw, "--events", str(events)),
            ],
            child_env(),
            workdir / "ceiling.log",
            timeout_s=300,
        )
    results = [
        StageResult(
            "edge: batch (1,000/request)",
            batch["events_per_s"],
            "events/s",
            ceiling=ceiling["events_per_s"],
            ceiling_name="bare producer",
            min_ratio=0.5,
            min_figure=100_000,
            details={**batch, "memory_mb": memory},
        ),
        StageResult(
            "edge: single-event requests",
            single["requests_per_s"],
            "requests/s",
            details=single,
        ),
        StageResult(
            "edge: RSS after load",
            round(memory["after_singles"]["rss_mb"], 1),
            "MiB",
            details=memory,
        ),
    ]
    return results, {"ceiling": ceiling}


def produce_ceiling(bootstrap: str, topic: str, events: int) -> dict[str, Any]:
    """Encode and produce ``events`` raw records as the edge does, wait for every ack."""
    from confluent_kafka import Producer

    from eventpipe.codec import AvroCodec
    from eventpipe.ids import event_id_for
    from eventpipe.kafka import producer_config

    payloads = [v2_payload(i) for i in range(1000)]
    codec = AvroCodec()
    producer = Producer(producer_config(settings_for(bootstrap, "")))
    failed = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed[0] += 1

    t0 = time.perf_counter()
    received = int(time.time() * 1000)
    # the edge's own encoder, made once per request there (1,000 events), once here
    encode = codec.raw_encoder("v2", PRODUCT, SOURCE, received)
    for i in range(events):
        event_id = event_id_for(PRODUCT, SOURCE, None)
        value = encode(event_id, None, payloads[i % 1000])
        while True:
            try:
                producer.produce(topic, value, event_id.encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.005)
        if i % 1000 == 999:
            producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - t0
    return {
        "events": events,
        "failed": failed[0] + left,
        "elapsed_s": elapsed,
        "events_per_s": (events - failed[0] - left) / elapsed,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.edge")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--events", type=int, required=True)
    a = p.parse_args()
    print(json.dumps(produce_ceiling(a.bootstrap, a.topic, a.events)), flush=True)


if __name__ == "__main__":
    main()
