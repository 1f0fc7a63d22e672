"""``eventpipe worker``: prepare the changelogs, then run the Faust worker until a signal.

Started through ``faust.Worker`` rather than ``app.main()``: the latter binds a web server on
0.0.0.0:6066 even with ``web_enabled=False``, so a second worker on the host fails and the port
is open to the network. ``faust.Worker`` honours the setting, and it stops the app cleanly on
SIGTERM and SIGINT (Faust flushes the producer and commits offsets on the way out).

Readiness: with ``EVENTPIPE_WORKER_READY_FILE`` set, the worker creates that file once its first
rebalance is over: it has its partitions, every assigned table partition is recovered, and its
agents are consuming (Faust's "Worker ready"). See :func:`ready` and :func:`attach_ready_file`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import faust
import mode.loop
import structlog

from eventpipe import dialects, garbage_collection
from eventpipe.kafka import ensure_topics
from eventpipe.lag import WORKER_LAG, LagMonitor
from eventpipe.metrics import serve_metrics
from eventpipe.publisher import publisher_for
from eventpipe.settings import Settings
from eventpipe.suppression_feed import SuppressionFeed
from eventpipe.topics import TopicNames
from streams.app import app_id, changelog_topics, create_app
from streams.changelog import prepare_changelogs

log = structlog.get_logger(__name__)

READY_FILE_ENV = "EVENTPIPE_WORKER_READY_FILE"
READY_POLL_S = 0.05


def ready(app: faust.App) -> bool:
    """True once a rebalance has completed: partitions assigned, tables recovered, streams on.

    ``tables.actives_ready`` is set at the very end of Faust's recovery (after the seek to the
    committed offsets and the flow resume) and cleared when a rebalance starts; ``rebalancing``
    is cleared just after it.
    """
    return bool(app.tables.actives_ready) and not app.rebalancing


def attach_ready_file(app: faust.App, path: Path) -> None:
    """Write ``path`` (atomically, JSON ``{"pid", "partitions"}``) when ``app`` is first ready.

    One-shot: a later rebalance does not remove it; stopping the worker does
    (``remove_ready_file``). A SIGKILLed worker leaves it behind, so it is also removed
    before the worker starts.
    """

    async def write_ready_file() -> None:
        # Faust has no event or signal for "recovery done and streams resumed": poll its flags.
        while not ready(app):  # noqa: ASYNC110
            await asyncio.sleep(READY_POLL_S)
        assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "partitions": assigned}))
        tmp.replace(path)
        log.info("worker ready", ready_file=str(path), partitions=len(assigned))

    app.task(write_ready_file)


def _health(app: faust.App) -> dict[str, object]:
    """``ok`` while the worker runs; ``ready`` once it has its partitions and tables."""
    return {"status": "ok", "ready": ready(app)}


def remove_ready_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)


def run_worker(settings: Settings) -> None:
    """Run one worker in this process; returns after a clean stop, raises ``SystemExit`` else.

    The pipeline's topics are created or checked first (``eventpipe.kafka.ensure_topics``); the
    changelog topics are created here, before Faust starts, so the sentinels can go first.
    """
    # uvloop before anything makes a loop (the app takes its loop when built): Faust's stream
    # yields to the loop once per record, and every publish awaits a future.
    mode.loop.use("uvloop")
    ready_env = os.environ.get(READY_FILE_ENV)
    ready_file = Path(ready_env) if ready_env else None
    if ready_file is not None:
        remove_ready_file(ready_file)
    ensure_topics(settings)  # a refused login or a missing topic stops the worker here
    # Every suppression is loaded before the first raw record is read (eventpipe.suppression_feed).
    feed = SuppressionFeed(settings, TopicNames.from_settings(settings).suppressions).start()
    publisher = publisher_for(settings)
    app = create_app(settings, publisher, feed.suppressions)
    if ready_file is not None:
        attach_ready_file(app, ready_file)
    prepare_changelogs(settings, changelog_topics(app))
    # /metrics and /healthz on the configured port, and the consumer lag of events.raw read as
    # the drain reads it (eventpipe.lag: on Tansu the watermark is short by up to a batch).
    server = serve_metrics(
        settings.metrics_host, settings.worker_metrics_port, health=lambda: _health(app)
    )
    names = TopicNames.from_settings(settings)
    lag = LagMonitor(settings, app_id(settings), [names.raw], WORKER_LAG).start()
    # Faust and aiokafka build DEBUG records on the per-event send path (~8% of worker CPU in
    # the benchmark's profile) unless their loggers are told otherwise.
    level = logging.getLevelName(settings.log_level.upper())
    level = max(level if isinstance(level, int) else logging.INFO, logging.INFO)
    for name in ("faust", "mode"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(level, logging.WARNING))
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        redirect_stdouts=False,
    )
    dialects.prepare()  # the first record of each dialect would build its decoder
    garbage_collection.settle()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    finally:
        lag.close()
        feed.close()
        server.close()
        publisher.close()  # the agents awaited every send: nothing is left but to stop it
        if ready_file is not None:
            remove_ready_file(ready_file)
