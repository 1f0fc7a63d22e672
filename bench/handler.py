"""The edge's batch handler alone, in this process: no HTTP, no Kafka.

``python -m bench.handler [--rounds N]`` calls the ASGI app of ``producers.app`` with one
1,000-event v2 batch N times, against a publisher that acknowledges at once, and prints the
median and the fastest time per batch. It isolates the handler's own work (parse, validate,
encode, answer) from the HTTP server and the broker, so a change to it can be compared before
and after on a busy machine (compare the fastest times: they vary least).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

import orjson

from bench.data import batch_body
from eventpipe import garbage_collection
from eventpipe.publisher import Failure
from eventpipe.settings import Settings
from producers.app import create_app
from producers.auth import KeyStore

KEY = "ep_bench_handler"
PATH = "/api/v2/events/batch"


class AckAll:
    async def publish(
        self,
        topic: str,
        items: Sequence[tuple[bytes, bytes]],
        partitions: Sequence[int] | None = None,
    ) -> list[Failure | None]:
        return [None] * len(items)

    def close(self) -> None: ...


async def _rounds(rounds: int) -> list[float]:
    keys = KeyStore([], 10**9)
    keys.add(KEY, "bench", "api", 10**9)
    app = create_app(Settings(kafka_bootstrap="unused:9092"), AckAll(), keys)
    body = batch_body(0, 1000)
    garbage_collection.settle()  # as the edge does once built
    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "raw_path": PATH.encode(),
        "headers": [
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-type", b"application/json"),
        ],
        "query_string": b"",
        "http_version": "1.1",
        "scheme": "http",
        "server": ("bench", 80),
        "client": ("bench", 1),
        "root_path": "",
    }

    async def call(check: bool = False) -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 202:
            raise RuntimeError(f"the handler answered {sent[0]['status']}: {sent[1:]}")
        if check and orjson.loads(sent[1]["body"])["rejected"]:  # a 202 may still reject some
            raise RuntimeError(f"the handler rejected events: {sent[1]['body'][:300]!r}")

    for _ in range(5):  # warm caches (name normalization, ISO seconds)
        await call(check=True)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.handler")
    p.add_argument("--rounds", type=int, default=200)
    times = asyncio.run(_rounds(p.parse_args().rounds))
    print(
        f"1,000-event v2 batch: median {statistics.median(times) * 1000:.2f} ms, "
        f"fastest {min(times) * 1000:.2f} ms ({len(times)} rounds)"
    )


if __name__ == "__main__":
    main()
