"""Edge stage: ``eventpipe edge`` under HTTP load, against one bare producer process.

Figures: events/s accepted through 1,000-event batches (one process, then ``--workers 2``);
single-event requests/s and p50/p99 latency at concurrency 1, 8 and 64; the edge's peak RSS
under batch load. Ceilings: the same raw records (ids, Avro single-object encoding, keys)
produced by one process with confluent-kafka and the edge's own producer configuration
(acks=all, idempotent, murmur2_random): as fast as it goes for the batches; for single events,
each produced alone and awaited, as many outstanding as requests in flight.

Run as a module it is that ceiling's child process:
``python -m bench.edge --bootstrap HOST:PORT --topic T --events N [--in-flight C]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from bench.report import StageResult, percentile
from eventpipe.embedded import free_port, wait_for_port
from eventpipe.topics import TopicNames
from producers.auth import hash_key, new_key

UNLIMITED = 10**9
"""Requests per minute for the bench workspace: the rate limiter is not what is measured."""


SINGLE_CONCURRENCIES = (1, 8, 64)
"""Single-event requests in flight: latency alone (1), the p99 target's (8), throughput (64)."""
WORKERS = 2
"""``eventpipe edge --workers N`` measured beside the one-process edge (one per core here)."""


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
        env = child_env(settings, EVENTPIPE_API_KEYS=json.dumps(keys))

        def load(edge: Edge, kind: str, requests: int, conc: int) -> dict[str, Any]:
            """One load phase, with the CPU the edge (all its processes) and the broker used."""
            cpu = (edge.cpu_seconds(), cpu_seconds(tansu.pid))
            out = run_json(
                [
                    *("-m", "bench.loadgen", "max", "--url", edge.url, "--key", key),
                    *("--concurrency", str(conc), "--kind", kind, "--requests", str(requests)),
                    *("--time-limit", "120"),
                ],
                child_env(),
                workdir / "loadgen.log",
                timeout_s=240,
            )
            used = edge.cpu_seconds() - cpu[0]
            out["edge_cpu_share"] = used / out["elapsed_s"]
            out["broker_cpu_share"] = (cpu_seconds(tansu.pid) - cpu[1]) / out["elapsed_s"]
            if kind == "batch":
                out["edge_cpu_us_per_event"] = used / max(1, out["events_accepted"]) * 1e6
            else:
                out["edge_cpu_us_per_request"] = used / max(1, out["requests"]) * 1e6
            return out

        with Edge.started(env, workdir, 1) as edge:
            idle = edge.memory()
            say(f"edge: {batches} batches of 1,000 at concurrency {concurrency}")
            batch = load(edge, "batch", batches, concurrency)
            loaded = edge.memory()
            single: dict[int, dict[str, Any]] = {}
            for conc in SINGLE_CONCURRENCIES:
                n = max(100, singles * conc // 8) if conc > 1 else max(100, singles // 4)
                say(f"edge: {n} single-event requests at concurrency {conc}")
                single[conc] = load(edge, "single", n, conc)
            memory = {"idle": idle, "after_batches": loaded, "after_singles": edge.memory()}
        with Edge.started(env, workdir, WORKERS) as edge:
            say(f"edge --workers {WORKERS}: {batches} batches at concurrency {concurrency}")
            load(edge, "batch", max(8, batches // 10), concurrency)  # every worker warmed
            workers = load(edge, "batch", batches, concurrency)
            workers["memory_mb"] = edge.memory()
    say(f"edge ceiling: {events} events from one confluent-kafka producer")
    with broker("bench-ceiling.") as (settings, _):
        base = ["-m", "bench.edge", "--bootstrap", settings.bootstrap]
        base += ["--topic", TopicNames.from_settings(settings).raw]
        ceiling = run_json(
            [*base, "--events", str(events)], child_env(), workdir / "ceiling.log", 300
        )
        say("edge ceiling: single events, each awaited, from one confluent-kafka producer")
        single_ceiling = {
            conc: run_json(
                [*base, "--events", str(max(200, singles * conc // 8)), "--in-flight", str(conc)],
                child_env(),
                workdir / "ceiling.log",
                120,
            )
            for conc in SINGLE_CONCURRENCIES
        }
    bare = {"ceiling_name": "bare producer"}
    results = [
        StageResult(
            "edge: batch (1,000/request)",
            batch["events_per_s"],
            "events/s",
            ceiling=ceiling["events_per_s"],
            min_ratio=0.5,
            min_figure=100_000,
            details={**batch, "memory_mb": memory},
            **bare,
        ),
        StageResult(
            f"edge --workers {WORKERS}: batch",
            workers["events_per_s"],
            "events/s",
            ceiling=ceiling["events_per_s"],
            details={**workers, "one_worker_events_per_s": batch["events_per_s"]},
            **bare,
        ),
    ]
    for conc in SINGLE_CONCURRENCIES:
        got, top = single[conc], single_ceiling[conc]
        results.append(
            StageResult(
                f"edge: single, c={conc}",
                got["requests_per_s"],
                "requests/s",
                ceiling=top["events_per_s"],
                min_figure=5_000 if conc == 64 else None,
                details=got,
                **bare,
            )
        )
        for pct in ("p50", "p99"):
            results.append(
                StageResult(
                    f"edge: single, c={conc}, {pct}",
                    got["latency_ms"][pct] / 1000,
                    "s",
                    ceiling=top["latency_ms"][pct] / 1000,
                    max_figure=0.020 if conc == 8 and pct == "p99" else None,
                    **bare,
                )
            )
    results.append(
        StageResult(
            "edge: peak RSS under batch load",
            round(memory["after_batches"]["peak_rss_mb"], 1),
            "MiB",
            max_figure=200,
            details=memory,
        )
    )
    return results, {"ceiling": ceiling, "single_ceiling": single_ceiling}


class Edge:
    """``eventpipe edge [--workers N]`` on a free port, for one ``with`` block."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url

    @classmethod
    @contextmanager
    def started(cls, env: dict[str, str], workdir: Path, workers: int) -> Iterator[Edge]:
        port = free_port()
        args = ["-m", "launch", "edge", "--port", str(port), "--workers", str(workers)]
        proc = spawn(args, env, workdir / "edge.log")
        try:
            wait_for_port("127.0.0.1", port, 60, proc)
            edge = cls(proc, f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 60
            while workers > 1 and len(edge.pids()) <= workers:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"edge --workers {workers}: workers did not start")
                time.sleep(0.05)
            yield edge
        finally:
            stop(proc)

    def pids(self) -> list[int]:
        """The edge's process and its workers."""
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            children = []
        return [pid, *map(int, children)]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def memory(self) -> dict[str, float]:
        """RSS (MiB) of the process that serves, summed over the workers when there are."""
        pids = self.pids()
        serving = pids[1:] or pids
        readings = [memory_mb(pid) for pid in serving]
        return {k: sum(r[k] for r in readings) for k in ("rss_mb", "peak_rss_mb")}


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


def produce_awaited(bootstrap: str, topic: str, events: int, in_flight: int) -> dict[str, Any]:
    """The single-event ceiling: ``in_flight`` events outstanding, each produced alone and
    awaited (its delivery report) before another takes its place, as the edge's single-event
    requests are; reports events/s and the produce-to-report latency p50/p99."""
    from confluent_kafka import Producer

    from eventpipe.codec import AvroCodec
    from eventpipe.ids import event_id_for
    from eventpipe.kafka import producer_config

    payloads = [v2_payload(i) for i in range(256)]
    codec = AvroCodec()
    producer = Producer(producer_config(settings_for(bootstrap, "")))
    latencies: list[float] = []
    failed = [0]
    outstanding = [0]

    def on_delivery(err: Any, _msg: Any, sent: float) -> None:
        latencies.append(time.perf_counter() - sent)
        outstanding[0] -= 1
        if err is not None:
            failed[0] += 1

    warm = event_id_for(PRODUCT, SOURCE, None)  # connections and producer id first, not counted
    producer.produce(topic, codec.raw_encoder("v2", PRODUCT, SOURCE, 0)(warm, None, b"{}"))
    producer.flush(30)
    t0 = time.perf_counter()
    sent = 0
    while len(latencies) < events:
        while outstanding[0] < in_flight and sent < events:
            received = int(time.time() * 1000)
            encode = codec.raw_encoder("v2", PRODUCT, SOURCE, received)  # per request, as there
            event_id = event_id_for(PRODUCT, SOURCE, None)
            at = time.perf_counter()
            producer.produce(
                topic,
                encode(event_id, None, payloads[sent % 256]),
                event_id.encode(),
                on_delivery=lambda err, msg, at=at: on_delivery(err, msg, at),
            )
            outstanding[0] += 1
            sent += 1
        producer.poll(0.001)
    elapsed = time.perf_counter() - t0
    return {
        "events": events,
        "in_flight": in_flight,
        "failed": failed[0],
        "elapsed_s": elapsed,
        "events_per_s": (events - failed[0]) / elapsed,
        "latency_ms": {
            "p50": 1000 * percentile(latencies, 50),
            "p99": 1000 * percentile(latencies, 99),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.edge")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--in-flight", type=int, help="single events awaited one by one, N at once")
    a = p.parse_args()
    if a.in_flight:
        result = produce_awaited(a.bootstrap, a.topic, a.events, a.in_flight)
    else:
        result = produce_ceiling(a.bootstrap, a.topic, a.events)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
