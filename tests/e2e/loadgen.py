"""A bounded load generator for fault tests, run as a second process on loopback.

    python -m tests.e2e.loadgen --url URL --key KEY --seconds S --out FILE [--workers N]
        [--batch B] [--retry] [--rate EVENTS_PER_S]

Each worker sends v2 batches of uniquely keyed events (``external_id`` = ``<run>-<worker>-<n>``)
until the time is up. Every event id a 2xx reports is appended to FILE as it arrives, so a
test can act mid-run. With ``--retry`` a batch answered 503 (or cut by a dropped connection) is
sent again, same body, until it is accepted, as a well-behaved client does: no new batch starts
after the time is up, but a started one is retried for up to ``--settle`` seconds more.

A batch that ends without a 2xx has an unknown outcome: a 503 after a delivery timeout, or a cut
connection, may still have reached Kafka (the contract is "2xx means stored; otherwise retry with
the same keys, and dedupe makes it land once"). Its external ids are written as ``?<external_id>``
lines, so a test can tell such rows from a row nobody sent. The last line of FILE is a JSON
summary.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx


def run(args: argparse.Namespace) -> dict[str, Any]:
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
                        r = http.post(
                            "/api/v2/events/batch",
                            json=body,
                            headers={"Authorization": f"Bearer {args.key}"},
                        )
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--retry", action="store_true")
    p.add_argument("--settle", type=float, default=60, help="s to finish retries after the time")
    p.add_argument("--rate", type=float, default=0, help="events/s in all (0: as fast as possible)")
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()


def read_ids(path: Path) -> tuple[list[str], dict[str, int] | None]:
    """The accepted ids written so far, and the summary once the run has ended."""
    ids, _, summary = read_run(path)
    return ids, summary


def read_run(path: Path) -> tuple[list[str], set[str], dict[str, int] | None]:
    """Accepted event ids, external ids of batches with an unknown outcome, and the summary."""
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
