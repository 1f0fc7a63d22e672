"""State stage: what a restarted worker pays for its tables (``--only state``).

For each key count (0, 100k, 1M; ``--quick``: 0, 10k) a fresh embedded broker gets a dedupe
changelog holding that many live entries (within the window: as a worker that stopped leaves
it) and one raw event waiting on ``events.raw``. Then ``eventpipe worker`` starts, as after a
restart. Reported per count: spawn to ready (partitions assigned, tables recovered), spawn to
the waiting event's clean record (restart-to-processing), and the worker's RSS then; bytes per
key is the RSS above the 0-key worker's, divided by the count. One more run starts onto the
largest count of identity links (anonymous id -> user id, kept for good) and no dedupe key, the
table a long-running worker only adds to. The changelogs are written
directly (confluent-kafka, ~150k records/s) rather than by the worker, which would take minutes
per million. Not a timed assertion: the figures are for comparing changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.data import raw_record
from bench.kafka_io import Watcher, fill
from bench.procs import broker, child_env, memory_mb, spawn, stop, wait_until
from bench.report import StageResult
from eventpipe.codec import RAW_EVENT
from eventpipe.identity import identity_key
from eventpipe.kafka import create_topics, producer_config
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from streams.app import DEDUPE_TABLE, IDENTITY_TABLE, app_id
from streams.changelog import COMPACT, expiring
from streams.dedupe import table_key

FULL_KEYS = (0, 100_000, 1_000_000)
QUICK_KEYS = (0, 10_000)
"""Live keys per run. One more run writes the largest count out of the window, then a tenth of
it live: the changelog a long-running worker leaves, minus the tombstones it wrote (keys that
expired while no worker ran). The recovery keeps the live tenth only."""
TIMEOUT_S = 600.0


def fill_changelog(
    settings: Settings, keys: int, say: Callable[[str], None], expired: bool = False
) -> str:
    """Write ``keys`` dedupe entries, spread over the partitions, within the window (else two
    windows old, then ``keys // 10`` within it); return the topic."""
    topic = f"{app_id(settings)}-{DEDUPE_TABLE}-changelog"
    window_ms = settings.dedupe_window_seconds * 1000
    create_topics(settings, [topic], config=expiring(window_ms))
    now_ms = int(time.time() * 1000)
    if expired:
        old = b"%d" % (now_ms - 2 * window_ms)
        entries = ((table_key("bench", "api", f"old-{i}"), old) for i in range(keys))
        _write(settings, topic, entries, f"{keys:,} expired dedupe entries", say)
        keys //= 10
    kept = b"%d" % now_ms
    entries = ((table_key("bench", "api", f"kept-{i}"), kept) for i in range(keys))
    _write(settings, topic, entries, f"{keys:,} dedupe entries", say)
    return topic


def fill_links(settings: Settings, links: int, say: Callable[[str], None]) -> None:
    """Write ``links`` identity links (anonymous id -> user id), spread over the partitions: the
    identity changelog a worker leaves once it linked that many anonymous ids."""
    topic = f"{app_id(settings)}-{IDENTITY_TABLE}-changelog"
    create_topics(settings, [topic], config=COMPACT)
    entries = (
        (identity_key("bench", f"anon-{i}", f"user-{i}", ""), b'"user-%d"' % i)
        for i in range(links)
    )
    _write(settings, topic, entries, "identity links", say)


def _write(
    settings: Settings,
    topic: str,
    entries: Iterable[tuple[bytes, bytes]],
    name: str,
    say: Callable[[str], None],
) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    partitions = settings.topic_partitions
    for i, (key, value) in enumerate(entries):
        while True:
            try:
                producer.produce(topic, value, key, i % partitions, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 50_000 == 0:
            say(f"state: writing {name} ({i:,})")
    if producer.flush(120) or errors:
        raise RuntimeError(f"filling {topic} failed: {errors[:3]}")


def measure(
    workdir: Path, keys: int, say: Callable[[str], None], expired: bool = False, links: int = 0
) -> dict[str, Any]:
    name = f"bench-state-{keys}{'-expired' if expired else ''}{f'-links-{links}' if links else ''}."
    with broker(name) as (settings, _):
        fill_changelog(settings, keys, say, expired)
        if links:
            fill_links(settings, links, say)
        names = TopicNames.from_settings(settings)
        fill(settings, names.raw, RAW_EVENT, [raw_record(0, int(time.time() * 1000))])
        watcher = Watcher(settings.bootstrap, names.clean, settings.topic_partitions)
        ready = workdir / f"state-{keys}.ready"
        ready.unlink(missing_ok=True)
        env = child_env(settings, EVENTPIPE_WORKER_READY_FILE=str(ready))
        say(f"state: worker recovering {keys:,} keys")
        started = time.perf_counter()
        worker = spawn(["-m", "launch", "worker"], env, workdir / f"state-{keys}.log")
        try:
            wait_until(lambda: ready.exists() or worker.poll() is not None, TIMEOUT_S, "ready")
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited {worker.returncode}; see {workdir}")
            ready_s = time.perf_counter() - started
            say(f"state: worker with {keys:,} keys ready, waiting for the event")
            watcher.wait_for(
                1, TIMEOUT_S, on_first=lambda: None, alive=lambda: worker.poll() is None
            )
            assert watcher.first is not None
            memory = memory_mb(worker.pid)
        finally:
            stop(worker)
            watcher.close()
        return {
            "keys": keys // 10 if expired else keys,
            "expired_keys": keys if expired else 0,
            "links": links,
            "ready_s": ready_s,
            "restart_to_processing_s": watcher.first - started,
            **memory,
        }


def run(
    workdir: Path, quick: bool, say: Callable[[str], None]
) -> tuple[list[StageResult], dict[str, Any]]:
    counts = QUICK_KEYS if quick else FULL_KEYS
    runs = [measure(workdir, keys, say) for keys in counts]
    runs.append(measure(workdir, counts[-1], say, expired=True))
    runs.append(measure(workdir, 0, say, links=counts[-1]))
    base = runs[0]["rss_mb"]
    results = []
    for r in runs:
        n = f"{r['keys']:,}" + (f" (+{r['expired_keys']:,} expired)" if r["expired_keys"] else "")
        n += f" keys, {r['links']:,} identity links" if r["links"] else " keys"
        results.append(
            StageResult(
                f"state: restart to processing, {n}", r["restart_to_processing_s"], "s", details=r
            )
        )
        results.append(StageResult(f"state: worker RSS, {n}", round(r["rss_mb"], 1), "MiB"))
        for held, what in ((r["keys"], "live key"), (r["links"], "link")):
            if held:
                per = (r["rss_mb"] - base) * 1024 * 1024 / held
                results.append(StageResult(f"state: bytes per {what}, {n}", round(per), "B"))
    return results, {}
