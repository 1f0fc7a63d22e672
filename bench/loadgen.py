"""The load generator: a separate process posting to the edge over loopback (httpx).

    python -m bench.loadgen {max,paced,keyed} --url URL --key KEY [options]

``max`` (bench): closed loop, ``--concurrency`` requests in flight until ``--requests`` are done
(or the time limit); reports events/s, requests/s, p50/p99 request latency and its own CPU time,
so a saturated generator is visible. ``paced`` (bench): batches of unique external ids at a
fixed event rate for a fixed time; writes each batch's 2xx wall-clock time to ``--out`` (for
end-to-end latency). Both build their request bodies before the clock starts.

``keyed`` (the fault tests): ``--workers`` threads send v2 batches of uniquely keyed events
(``external_id`` = ``<run>-<worker>-<n>``) until ``--seconds`` are up, at most ``--rate``
events/s in all. Every event id a 2xx reports is appended to ``--out`` as it arrives, so a test
can act mid-run (``read_ids``, ``read_run``). With ``--retry`` a batch answered 503 (or cut by a
dropped connection) is sent again, same body, until it is accepted, as a well-behaved client
does: no new batch starts after the time is up, but a started one is retried for up to
``--settle`` seconds more. A batch that ends without a 2xx has an unknown outcome: a 503 after a
delivery timeout, or a cut connection, may still have reached Kafka (the contract is "2xx means
stored; otherwise retry with the same keys, and dedupe makes it land once"). Its external ids
are written as ``?<external_id>`` lines, so a test can tell such rows from a row nobody sent.
The last line of ``--out`` is a JSON summary.

Every mode prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.data import batch_body, v2_payload
from bench.rawhttp import RawConnection
from bench.report import percentile

BATCH_PATH = "/api/v2/events/batch"
SINGLE_PATH = "/api/v2/events"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _client(url: str, key: str, concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={**_auth(key), "Content-Type": "application/json"},
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
    """The closed loop, over :mod:`bench.rawhttp` connections (one per request in flight)."""
    batch = args.kind == "batch"
    distinct = 8 if batch else 256
    bodies = [
        batch_body(i * args.batch, args.batch) if batch else v2_payload(i) for i in range(distinct)
    ]
    path = BATCH_PATH if batch else SINGLE_PATH
    headers = {**_auth(args.key), "Content-Type": "application/json"}
    conns = [RawConnection(args.url, headers) for _ in range(args.concurrency)]
    requests = [conns[0].request(path, body) for body in bodies]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    accepted = 0
    issued = 0
    deadline = time.monotonic() + args.time_limit
    for conn in conns:  # open and warm every connection, not counted
        await conn.send(requests[0])

    async def worker(conn: RawConnection) -> None:
        nonlocal issued, accepted
        while issued < args.requests and time.monotonic() < deadline:
            request = requests[issued % distinct]
            issued += 1
            t0 = time.perf_counter()
            status, body = await conn.send(request)
            latencies.append(time.perf_counter() - t0)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 202:
                accepted += orjson.loads(body)["accepted"] if batch else 1

    try:
        cpu0, t0, wall0 = _cpu(), time.perf_counter(), time.time()
        await asyncio.gather(*(worker(c) for c in conns))
        elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        for conn in conns:
            await conn.close()
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


def run_keyed(args: argparse.Namespace) -> dict[str, Any]:
    """The ``keyed`` mode of the module docstring."""
    out = Path(args.out).open("a", buffering=1)  # noqa: SIM115  # written by every worker
    lock = threading.Lock()
    stats: dict[str, int] = {
        "batches": 0,
        "accepted": 0,
        "unavailable": 0,
        "errors": 0,
        "unresolved": 0,
    }
    deadline = time.monotonic() + args.seconds
    give_up_at = deadline + (args.settle if args.retry else 0.0)
    run_id = uuid.uuid4().hex[:8]

    # Pacing: each worker sends one batch per period, so the total rate is bounded.
    period = args.workers * args.batch / args.rate if args.rate else 0.0

    def worker(w: int) -> None:
        n = 0
        next_at = time.monotonic()
        with httpx.Client(base_url=args.url, timeout=30) as http:
            while time.monotonic() < deadline:
                if period:
                    next_at += period
                    time.sleep(max(0.0, next_at - time.monotonic()))
                body = {
                    "events": [
                        {"event": "load.tick", "external_id": f"{run_id}-{w}-{n + i}"}
                        for i in range(args.batch)
                    ]
                }
                n += args.batch
                accepted = False
                while time.monotonic() < give_up_at:
                    try:
                        r = http.post(BATCH_PATH, json=body, headers=_auth(args.key))
                    except httpx.TransportError:
                        with lock:
                            stats["errors"] += 1
                        if not args.retry:
                            break
                        time.sleep(0.2)
                        continue
                    if r.status_code == 202:
                        answer = r.json()
                        ids = [d["uuid"] for d in answer["data"]]
                        with lock:
                            stats["batches"] += 1
                            stats["accepted"] += len(ids)
                            out.write("\n".join(ids) + "\n")
                        # Events Kafka did not acknowledge in time: the rest of the batch, with
                        # an unknown outcome; sent again (same keys) when retrying.
                        left = [body["events"][e["index"]] for e in answer["errors"]]
                        if not left:
                            accepted = True
                            break
                        body = {"events": left}
                        if not args.retry:
                            break
                        time.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0))
                        continue
                    with lock:
                        stats["unavailable" if r.status_code == 503 else "errors"] += 1
                    if not args.retry or r.status_code != 503:
                        break
                    time.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0))
                if not accepted:
                    with lock:
                        stats["unresolved"] += len(body["events"])
                        out.write("".join(f"?{e['external_id']}\n" for e in body["events"]))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.write(json.dumps({"summary": stats}) + "\n")
    out.close()
    return stats


def read_ids(path: Path) -> tuple[list[str], dict[str, int] | None]:
    """A ``keyed`` run's accepted ids written so far, and the summary once the run has ended."""
    ids, _, summary = read_run(path)
    return ids, summary


def read_run(path: Path) -> tuple[list[str], set[str], dict[str, int] | None]:
    """A ``keyed`` run's accepted event ids, external ids of batches with an unknown outcome,
    and the summary."""
    if not path.exists():
        return [], set(), None
    ids: list[str] = []
    unresolved: set[str] = set()
    summary = None
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            summary = json.loads(line)["summary"]
        elif line.startswith("?"):
            unresolved.add(line[1:])
        elif line:
            ids.append(line)
    return ids, unresolved, summary


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    modes = p.add_subparsers(dest="mode", required=True)
    for mode in ("max", "paced"):
        m = modes.add_parser(mode)
        m.add_argument("--url", required=True)
        m.add_argument("--key", required=True)
        m.add_argument("--kind", choices=["batch", "single"], default="batch")
        m.add_argument("--batch", type=int, default=1000)
        m.add_argument("--requests", type=int, default=100)
        m.add_argument("--concurrency", type=int, default=8)
        m.add_argument("--time-limit", type=float, default=60.0)
        m.add_argument("--rate", type=float, default=1000.0)
        m.add_argument("--duration", type=float, default=10.0)
        m.add_argument("--id-prefix", default="lat-")
        m.add_argument("--out", default="/dev/null")
    k = modes.add_parser("keyed")
    k.add_argument("--url", required=True)
    k.add_argument("--key", required=True)
    k.add_argument("--seconds", type=float, required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--workers", type=int, default=4)
    k.add_argument("--batch", type=int, default=100)
    k.add_argument("--retry", action="store_true")
    k.add_argument("--settle", type=float, default=60, help="s to finish retries after the time")
    k.add_argument("--rate", type=float, default=0, help="events/s in all (0: as fast as possible)")
    args = p.parse_args()
    if args.mode == "keyed":
        result = run_keyed(args)
    else:
        result = asyncio.run(run_max(args) if args.mode == "max" else run_paced(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
