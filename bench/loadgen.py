"""The load generator: a separate process posting to the edge over loopback (httpx, asyncio).

``max``: closed loop, ``--concurrency`` requests in flight until ``--requests`` are done (or the
time limit); reports events/s, requests/s, p50/p99 request latency and its own CPU time, so a
saturated generator is visible. ``paced``: batches of unique external ids at a fixed event rate
for a fixed time; writes each batch's 2xx wall-clock time to ``--out`` (for end-to-end latency).

Request bodies are built before the clock starts. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import httpx
import orjson

from bench.data import batch_body, v2_payload
from bench.report import percentile

BATCH_PATH = "/api/v2/events/batch"
SINGLE_PATH = "/api/v2/events"


def _client(url: str, key: str, concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=60.0,
    )


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _write_json(path: str, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(value, f)


async def run_max(args: argparse.Namespace) -> dict[str, Any]:
    batch = args.kind == "batch"
    distinct = 8 if batch else 256
    bodies = [
        batch_body(i * args.batch, args.batch) if batch else v2_payload(i) for i in range(distinct)
    ]
    path = BATCH_PATH if batch else SINGLE_PATH
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    accepted = 0
    issued = 0
    deadline = time.monotonic() + args.time_limit

    async with _client(args.url, args.key, args.concurrency) as client:
        await client.post(path, content=bodies[0])  # warm one connection, not counted

        async def worker() -> None:
            nonlocal issued, accepted
            while issued < args.requests and time.monotonic() < deadline:
                body = bodies[issued % distinct]
                issued += 1
                t0 = time.perf_counter()
                resp = await client.post(path, content=body)
                latencies.append(time.perf_counter() - t0)
                statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
                if resp.status_code == 202:
                    accepted += orjson.loads(resp.content)["accepted"] if batch else 1

        cpu0, t0, wall0 = _cpu(), time.perf_counter(), time.time()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {
        "kind": args.kind,
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "events_accepted": accepted,
        "started_wall": wall0,
        "elapsed_s": elapsed,
        "events_per_s": accepted / elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "latency_ms": {
            "p50": 1000 * percentile(latencies, 50),
            "p99": 1000 * percentile(latencies, 99),
        },
        "statuses": statuses,
        "loadgen_cpu_s": cpu,
        "loadgen_cpu_share": cpu / elapsed,
    }


async def run_paced(args: argparse.Namespace) -> dict[str, Any]:
    """``--rate`` events/s in batches of ``--batch``, each batch sent on schedule."""
    interval = args.batch / args.rate
    count = max(1, int(args.duration / interval))
    bodies = [batch_body(k * args.batch, args.batch, args.id_prefix) for k in range(count)]
    sent: list[list[Any]] = []  # [first index, size, 2xx wall time, status]
    async with _client(args.url, args.key, 64) as client:

        async def one(k: int) -> None:
            resp = await client.post(BATCH_PATH, content=bodies[k])
            sent.append([k * args.batch, args.batch, time.time(), resp.status_code])

        cpu0, start = _cpu(), time.monotonic()
        tasks = []
        late = 0.0
        for k in range(count):
            delay = start + k * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            tasks.append(asyncio.create_task(one(k)))
        await asyncio.gather(*tasks)
        elapsed, cpu = time.monotonic() - start, _cpu() - cpu0
    _write_json(args.out, sent)
    return {
        "batches": count,
        "events": count * args.batch,
        "rate": args.rate,
        "elapsed_s": elapsed,
        "max_lateness_s": late,
        "non_2xx": sum(1 for s in sent if s[3] != 202),
        "loadgen_cpu_s": cpu,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("mode", choices=["max", "paced"])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--kind", choices=["batch", "single"], default="batch")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--id-prefix", default="lat-")
    p.add_argument("--out", default="/dev/null")
    args = p.parse_args()
    result = asyncio.run(run_max(args) if args.mode == "max" else run_paced(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
