"""Helpers of the fault tests that drive load from a second process (``bench.loadgen keyed``)
and then check that what got a 2xx is in ClickHouse, once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

from eventpipe.drain import Offsets, lag
from eventpipe.settings import Settings
from eventpipe.topics import TopicNames
from launch.dev import DevState
from streams.app import app_id
from tests.conftest import Stack


def loadgen(url: str, key: str, seconds: float, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "keyed",
            "--url",
            url,
            "--key",
            key,
            "--seconds",
            str(seconds),
            "--out",
            str(out),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
    )


def wait_until(pred: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def assert_landed_once(
    stack: Stack, product: str, accepted: list[str], unknown: Collection[str] = ()
) -> None:
    """Every accepted id is in ClickHouse exactly once. Any other row must come from a batch
    whose outcome the client could not know (``unknown`` external ids: a 503 after a delivery
    timeout, a cut connection), never from nowhere."""
    assert len(set(accepted)) == len(accepted), "the edge gave one id to two events"
    want = set(accepted)
    rows = stack.wait_for(
        f"SELECT event_id, external_id FROM events FINAL WHERE product = '{product}'",
        lambda rs: want <= {r["event_id"] for r in rs},
        timeout_s=180,
    )
    # FINAL keeps one row per event id, so a copy under the same id cannot show here; one
    # event landing twice would be its external id under two ids.
    external = [r["external_id"] for r in rows if r["external_id"] is not None]
    assert len(external) == len(set(external)), "an event landed twice, under two ids"
    extra = [r for r in rows if r["event_id"] not in want]
    from_nowhere = [r for r in extra if r["external_id"] not in unknown]
    assert not from_nowhere, f"{len(from_nowhere)} rows nobody sent: {from_nowhere[:5]}"


def dev_settings(stack: Stack) -> Settings:
    """The settings that name the running ``eventpipe dev``'s broker, topics and worker group."""
    state = DevState.read(stack.data_dir)
    assert state is not None, f"no eventpipe dev state in {stack.data_dir}"
    return Settings(
        kafka_bootstrap=state.kafka_bootstrap,
        topic_prefix=state.topic_prefix,
        worker_id=state.worker_id,
    )


def assert_worker_commits_reach_ends(stack: Stack, timeout_s: float = 30) -> None:
    """The worker group's committed offsets reach the end of every raw partition: after a
    restart or a takeover, commits that crawl behind what was processed make the lag read wrong
    and the next restart read it all again."""
    settings = dev_settings(stack)
    offsets = Offsets(settings.bootstrap)
    try:
        tps = offsets.partitions([TopicNames.from_settings(settings).raw])
        assert tps, "no events.raw partitions: the check below would hold vacuously"
        deadline = time.monotonic() + timeout_s
        while (behind := lag(offsets.ends(tps)[0], offsets.committed(app_id(settings), tps))) > 0:
            assert time.monotonic() < deadline, f"the worker's commits stay {behind} behind"
            time.sleep(0.2)
    finally:
        offsets.close()
