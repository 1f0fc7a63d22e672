"""bench.peer_quix's record functions (no quixstreams, no broker, no timing): the peer reads the
bytes the bench writes and makes the clean record the worker makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import peer_venv
from bench.data import clean_record, raw_record
from bench.peer_quix import Codec, clean
from bench.report import StageResult, median_of
from eventpipe.codec import CLEAN_EVENT, RAW_EVENT, AvroCodec

NOW = 1_760_000_000_000
WINDOW = 86_400_000


class State(dict[str, Any]):
    """quixstreams' ``State`` as far as the peer uses it."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value


@pytest.mark.parametrize("i", [0, 1, 7, 10, 4999])
def test_peer_makes_the_workers_clean_record(i: int) -> None:
    ours, peer = AvroCodec(), Codec()
    _, raw = raw_record(i, NOW)
    decoded = peer.decode_raw(ours.encode(RAW_EVENT, raw))
    record = clean(decoded, State(), WINDOW)
    assert record == clean_record(i, NOW)
    # Its bytes are a CleanEvent our codec (and so the sink) reads.
    name, value = ours.decode(peer.encode_clean(record), millis=True)
    assert (name, value) == (CLEAN_EVENT, clean_record(i, NOW))


def test_peer_dedupes_by_the_workers_rule() -> None:
    state = State()
    _, raw = raw_record(3, NOW)
    assert clean(raw, state, WINDOW) is not None
    assert list(state.values()) == [NOW]
    assert clean(raw, state, WINDOW) is not None  # the same record again: a redelivery
    assert clean({**raw, "received_at": NOW + 1000}, state, WINDOW) is None  # a retry
    assert clean({**raw, "received_at": NOW + WINDOW}, state, WINDOW) is not None


def test_peer_refuses_what_it_cannot_read() -> None:
    peer = Codec()
    with pytest.raises(ValueError):
        peer.decode_raw(b"\x00\x00\x00\x00\x01rest")
    _, raw = raw_record(1, NOW)
    with pytest.raises(ValueError):
        clean({**raw, "dialect": "v1"}, State(), WINDOW)


def test_peer_venv_is_reused_when_its_marker_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / ".peer-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".installed").write_text("\n".join(peer_venv.REQUIREMENTS) + "\n")
    monkeypatch.setattr(peer_venv, "VENV", venv)
    monkeypatch.setattr(peer_venv, "MARKER", venv / ".installed")

    def no_install(*_a: Any, **_k: Any) -> None:
        raise AssertionError("installed again")

    monkeypatch.setattr(peer_venv.subprocess, "run", no_install)
    assert peer_venv.python(lambda _m: None, tmp_path / "log") == venv / "bin" / "python"


def test_a_row_skipped_in_every_round_keeps_its_reason() -> None:
    skipped = StageResult("peer", 1.0, "events/s", details={"skipped": "no quixstreams"})
    assert median_of([skipped, skipped]).details["skipped"] == "no quixstreams"
    measured = StageResult("peer", 1.0, "events/s", ceiling=2.0)
    assert "skipped" not in median_of([skipped, measured]).details
