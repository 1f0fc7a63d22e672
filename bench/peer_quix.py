"""The agents' peer: the worker's job written with quixstreams, the library a team would pick
instead of Faust (GitHub issue 19). Run by ``bench.agents`` with the peer's own interpreter
(``bench.peer_venv``): quixstreams pins confluent-kafka and pydantic-settings below the
versions eventpipe needs, so it cannot share the project's venv.

``<peer python> -m bench.peer_quix --bootstrap B --raw T --clean T --group G --state-dir D
--events N --out FILE``: per record of ``events.raw``

1. decode the Avro record with the pipeline's own codec (``eventpipe.codec``, timestamps left
   as epoch milliseconds, as ``streams.codec`` asks for them);
2. parse the v2 JSON payload with orjson and normalize its name with ``eventpipe.naming`` (the
   rule itself: that module imports only the standard library);
3. dedupe with quixstreams' keyed state (RocksDB, with its changelog topic: the defaults) by the
   dedupe key of (product, source, external_id) and ``streams.dedupe.decide`` (standard library
   only), storing the first ``received_at`` as our worker does;
4. build the ``CleanEvent`` with ``eventpipe.event.clean_record`` (needs orjson only), encode it
   with the same codec, and produce it to ``events.clean`` keyed by its event id.

It writes the rate between the first and the N-th record it processed (as ``bench.bare_faust``:
start-up and the group join excluded) to FILE, atomically, about every second (so the parent
can apply the stall rule for Tansu's end-offset bug), and runs until the parent stops it.

What it does not do, so the comparison favours it: it parses only the v2 dialect, and without
the dialect's validation (``eventpipe.dialects.v2`` checks types, lengths and unknown fields with
msgspec, which is not installed here); a record it cannot read is counted and skipped, not sent
to ``events.rejected``; it links no identities (``person_id`` stays the actor, as the issue's
job has no identity table) and forgets no dedupe keys after the window. Its state is scoped, as
quixstreams scopes all state, by the message key: ``events.raw`` is keyed by identity key, which
a retry shares (same payload), so a retry meets its dedupe key in the same partition, as it does
in the worker (``streams.agents``). Re-keying by the dedupe key with ``group_by`` would add a
repartition topic the worker avoids by design.

This module imports quixstreams only in :func:`main`, so its record functions can be tested in
the project's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from eventpipe.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec
from eventpipe.event import ParsedEvent, clean_record, to_ms
from eventpipe.ids import dedupe_key
from eventpipe.naming import normalize
from streams.dedupe import Decision, decide


class Codec:
    """The pipeline's own Avro codec (``eventpipe.codec``: fastavro and prometheus-client only)
    for the peer's two records, so it reads and writes exactly the worker's bytes."""

    def __init__(self) -> None:
        self._codec = AvroCodec()

    def decode_raw(self, data: bytes) -> dict[str, Any]:
        name, value = self._codec.decode(data, millis=True)
        if name != RAW_EVENT:
            raise ValueError(f"{name} on events.raw: not a RawEvent")
        return value

    def encode_clean(self, record: dict[str, Any]) -> bytes:
        return self._codec.encode(CLEAN_EVENT, record)


def parse_v2(payload: bytes, received_ms: int) -> ParsedEvent:
    """A v2 event's fields as ``eventpipe.dialects.v2.parse`` maps them, without its checks."""
    ev = orjson.loads(payload)
    if not isinstance(ev, dict):
        raise ValueError("not a JSON object")
    get = ev.get
    name = normalize(event=get("event"), event_type=get("event_type"), action=get("action"))
    occurred = ev.get("occurred_at")
    occurred_ms = received_ms if occurred is None else to_ms(datetime.fromisoformat(occurred))
    properties = ev.get("properties")
    if properties is None:
        properties = ev.get("metadata") or {}
    subject_type, subject_id = ev.get("subject_type"), ev.get("subject_id")
    return ParsedEvent(
        name=name,
        occurred_at_ms=occurred_ms,
        external_id=ev.get("external_id"),
        subject_type=subject_type,
        subject_id=subject_id,
        user_id=subject_id if subject_type == "user" else None,
        anonymous_id=properties.get("anonymous_id"),
        properties=properties,
        traits=properties.get("traits") or {},
    )


def clean(raw: dict[str, Any], state: Any, window_ms: int) -> dict[str, Any] | None:
    """The clean record of a decoded raw one, or None for a duplicate. ``state`` is anything
    with ``get(key)`` and ``set(key, value)``: quixstreams' keyed ``State`` in the peer."""
    if raw["dialect"] != "v2":
        raise ValueError(f"dialect {raw['dialect']!r}: the peer reads v2 only")
    received_ms = raw["received_at"]
    parsed = parse_v2(raw["payload"], received_ms)
    external_id = raw["external_id"]
    if external_id is not None:
        key = dedupe_key(raw["product"], raw["source"], external_id)
        decision = decide(state.get(key), received_ms, window_ms)
        if decision is Decision.DUPLICATE:
            return None
        if decision is Decision.FIRST:
            state.set(key, received_ms)
    return clean_record(raw, parsed, person_id=parsed.actor_id)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


class Counter:
    """Records processed, with the first and latest times; written as ``bench.bare_faust``."""

    def __init__(self, events: int, out: str) -> None:
        self.events, self.out = events, out
        self.n = self.duplicates = self.unreadable = 0
        self.t0 = self.t1 = self.cpu0 = self.cpu1 = 0.0
        self.lock = threading.Lock()

    def tick(self) -> None:
        self.n += 1
        self.t1, self.cpu1 = time.perf_counter(), _cpu()
        if self.n == 1:
            self.t0, self.cpu0 = self.t1, self.cpu1
        if self.n == self.events:
            self.write()

    def write(self) -> None:
        with self.lock:
            n, elapsed = self.n, self.t1 - self.t0
            if n < 2:
                return
            result = {
                "events": self.events,
                "arrived": n,
                "elapsed_s": elapsed,
                "events_per_s": (n - 1) / elapsed if elapsed > 0 else float("nan"),
                "cpu_share": (self.cpu1 - self.cpu0) / elapsed if elapsed > 0 else None,
                "duplicates": self.duplicates,
                "unreadable": self.unreadable,
            }
            Path(self.out + ".tmp").write_text(json.dumps(result))
            os.replace(self.out + ".tmp", self.out)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peer_quix")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--raw", required=True, help="the events.raw topic")
    p.add_argument("--clean", required=True, help="the events.clean topic")
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--window-ms", type=int, default=24 * 3600 * 1000)
    p.add_argument("--session-timeout-ms", type=int, default=2000)
    p.add_argument("--heartbeat-ms", type=int, default=500)
    p.add_argument("--fetch-wait-ms", type=int, default=100)
    a = p.parse_args()

    from quixstreams import Application  # the peer's venv only
    from quixstreams.models.serializers import Serializer

    codec = Codec()

    class CleanSerializer(Serializer):
        def __call__(self, value: dict[str, Any], ctx: Any) -> bytes:
            return codec.encode_clean(value)

    app = Application(
        broker_address=a.bootstrap,
        consumer_group=a.group,
        auto_offset_reset="earliest",
        state_dir=a.state_dir,
        loglevel="WARNING",
        # Tansu answers a group join after half the session timeout, and does not answer a
        # waiting fetch when data arrives (eventpipe.broker): the embedded profile's values.
        consumer_extra_config={
            "session.timeout.ms": a.session_timeout_ms,
            "heartbeat.interval.ms": a.heartbeat_ms,
            "fetch.wait.max.ms": a.fetch_wait_ms,
        },
        # The worker's partitioner (eventpipe.kafka.producer_config), for the same placement.
        producer_extra_config={"partitioner": "murmur2_random"},
    )
    counter = Counter(a.events, a.out)
    raw_topic = app.topic(a.raw, key_deserializer="bytes", value_deserializer="bytes")
    clean_topic = app.topic(a.clean, key_serializer="bytes", value_serializer=CleanSerializer())

    def step(data: bytes, state: Any) -> dict[str, Any] | None:
        counter.tick()
        try:
            raw = codec.decode_raw(data)
            record = clean(raw, state, a.window_ms)
        except Exception:  # the worker rejects it; the peer counts it and goes on
            counter.unreadable += 1
            return None
        if record is None:
            counter.duplicates += 1
            return None
        return record

    sdf = app.dataframe(raw_topic)
    sdf = sdf.apply(step, stateful=True)
    sdf = sdf.filter(lambda out: out is not None)
    sdf.to_topic(clean_topic, key=lambda record: record["event_id"].encode())

    def progress() -> None:
        while True:
            time.sleep(1.0)
            counter.write()  # lets the parent see a tail stuck at a partition's end (Tansu)

    threading.Thread(target=progress, daemon=True).start()
    app.run()


if __name__ == "__main__":
    main()
