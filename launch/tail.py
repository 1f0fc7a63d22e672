"""``eventpipe tail``'s process: which broker, stdout, signals. The reading is
``eventpipe.tail``."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime

import typer

from eventpipe.registry import codec_for
from eventpipe.settings import Settings
from eventpipe.tail import Tail, TailError, parse_from, topic_name
from eventpipe.topics import ALL


def run_tail(
    settings: Settings,
    topic: str,
    *,
    start: str | None,
    last: int | None,
    product: str | None,
    follow: bool,
) -> None:
    """Without ``EVENTPIPE_KAFKA_BOOTSTRAP``, the broker of the ``eventpipe dev`` running on the
    data directory (its embedded broker listens on a port of its choosing)."""
    if not settings.kafka_bootstrap:
        from launch.dev import DevState

        state = DevState.read(settings.data_dir)
        if state is None:
            raise typer.BadParameter(
                "no broker: set EVENTPIPE_KAFKA_BOOTSTRAP, or run `eventpipe dev` "
                f"on this data directory ({settings.data_dir})"
            )
        settings = settings.model_copy(update={"kafka_bootstrap": state.kafka_bootstrap})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        tail = Tail(
            settings,
            codec_for(settings),
            topic_name(settings, topic, [settings.topic(t) for t in ALL]),
            start=parse_from(start, datetime.now(UTC)) if start is not None else None,
            last=last,
            product=product,
            follow=follow,
        )
        tail.run(_emit, stop)
    except TailError as exc:
        raise typer.BadParameter(str(exc)) from None
    except BrokenPipeError:  # `eventpipe tail ... | head`: the reader has what it wanted
        sys.stderr.close()


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
