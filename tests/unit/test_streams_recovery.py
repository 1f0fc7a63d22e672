"""The Faust fixes (streams.recovery, streams.fetchwait) and the worker's ready file: no broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import faust
import pytest
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from eventpipe.kafka import producer_config
from eventpipe.publisher import KafkaPublisher
from eventpipe.settings import Settings
from streams.app import create_app
from streams.recovery import ResumeKeepsBuffers
from streams.worker import ready, remove_ready_file


def _queue(flow: FlowControlEvent) -> FlowControlQueue[int]:
    # Faust's stream and changelog queues are built like this (clear_on_resume=True).
    return FlowControlQueue(maxsize=10, flow_control=flow, clear_on_resume=True)


def test_upstream_flow_control_clears_buffered_records_on_a_resume_while_active() -> None:
    """The bug: Faust calls resume() again when recovery completes, with flow already on."""
    flow = FlowControlEvent()
    q = _queue(flow)
    flow.resume()
    q.put_nowait(1)
    flow.resume()
    assert q.qsize() == 0  # the record is gone, never processed nor acked


def test_resume_while_active_keeps_buffered_records() -> None:
    flow = ResumeKeepsBuffers()
    q = _queue(flow)
    flow.resume()
    q.put_nowait(1)
    flow.resume()
    assert flow.is_active()
    assert q.get_nowait() == 1


def test_resume_after_suspend_still_clears_and_reactivates() -> None:
    flow = ResumeKeepsBuffers()
    q = _queue(flow)
    flow.resume()
    q.put_nowait(1)
    flow.suspend()
    assert not flow.is_active()
    flow.resume()
    assert flow.is_active()
    assert q.qsize() == 0


def test_initially_suspended_like_upstream() -> None:
    flow = ResumeKeepsBuffers()
    assert not flow.is_active()


@pytest.fixture
def app() -> Iterator[faust.App]:
    """An app that is never started: its publisher points at a port nobody serves."""
    settings = Settings(kafka_bootstrap="127.0.0.1:9", topic_prefix="unit.")
    publisher = KafkaPublisher(producer_config(settings, log_level=0))  # no connect noise
    yield create_app(settings, publisher)
    publisher.close(timeout_s=0)


def test_app_uses_the_fixed_flow_control(app: faust.App) -> None:
    assert isinstance(app.flow_control, ResumeKeepsBuffers)


def test_ready_needs_recovered_tables_and_no_rebalance(app: faust.App) -> None:
    assert not ready(app)
    app.tables.actives_ready = True
    app.rebalancing = True
    assert not ready(app)
    app.rebalancing = False
    assert ready(app)
    app.tables.on_rebalance_start()
    assert not ready(app)


def test_remove_ready_file(tmp_path: Path) -> None:
    path = tmp_path / "ready"
    path.write_text(json.dumps({"pid": 1}))
    remove_ready_file(path)
    remove_ready_file(path)  # missing is fine
    assert not path.exists()
