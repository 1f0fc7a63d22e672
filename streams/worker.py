"""``eventpipe worker``: prepare the changelogs, then run the Faust worker until a signal.

Started through ``faust.Worker`` rather than ``app.main()``: the latter binds a web server on
0.0.0.0:6066 even with ``web_enabled=False``, so a second worker on the host fails and the port
is open to the network. ``faust.Worker`` honours the setting, and it stops the app cleanly on
SIGTERM and SIGINT (Faust flushes the producer and commits offsets on the way out).
"""

from __future__ import annotations

import faust

from eventpipe.settings import Settings
from streams.app import changelog_topics, create_app
from streams.changelog import prepare_changelogs


def run_worker(settings: Settings) -> None:
    """Run one worker in this process; returns after a clean stop, raises ``SystemExit`` else.

    The raw, clean and rejected topics must exist (``eventpipe.kafka.ensure_topics``); the
    changelog topics are created here, before Faust starts, so the sentinels can go first.
    """
    app = create_app(settings)
    prepare_changelogs(settings, changelog_topics(app))
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        redirect_stdouts=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
