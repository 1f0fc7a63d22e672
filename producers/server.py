"""Running the edge's ASGI app under uvicorn, with a shutdown that lets our cleanup run.

uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which ends the process before the
caller's own cleanup (flushing the Kafka producer, draining and stopping the sink and the
worker). Here a signal only asks the server to stop: the listener closes (new connections are
refused), in-flight requests finish (each awaits its Kafka ack) and get their answer, then
``serve`` returns and the caller cleans up. A second SIGINT or SIGTERM forces the stop.

The two steps live in :class:`Shutdown`, not in the server, so that a caller whose stop goes on
after the server returned (``eventpipe dev`` drains the pipeline) can install it around its
whole stop: the second signal then reaches the drain as well.

``serve`` can run more than one listener in one event loop (the edge's public app and its admin
app); they share one :class:`Shutdown`, so a signal stops all of them, and so does any one
stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Generator, Iterator, Sequence

import uvicorn
from starlette.applications import Starlette

SIGNALS = (signal.SIGINT, signal.SIGTERM)

Listener = tuple[Starlette, str, int]


class Shutdown:
    """Ctrl-C / SIGTERM in two steps: the first requests a graceful stop, the second forces it.

    The handler only sets events (the owner logs what it does about them): a signal handler
    that wrote to stdout while the main thread was writing there could raise "reentrant call".
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.forced = threading.Event()

    def on_signal(self, sig: int, _frame: object) -> None:
        if self.requested.is_set():
            self.forced.set()
        self.requested.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Shutdown]:
        """Handle SIGINT and SIGTERM while inside; the previous handlers come back after."""
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only; its owner handles them
            return
        previous = {sig: signal.signal(sig, self.on_signal) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Server(uvicorn.Server):
    """uvicorn's ``should_exit``/``force_exit`` flags read and write the :class:`Shutdown`.

    uvicorn checks both flags in its own loops (serving, then waiting for connections and
    tasks during its shutdown), so mapping them covers every phase without a watcher task.
    """

    def __init__(self, config: uvicorn.Config, shutdown: Shutdown) -> None:
        self._shutdown = shutdown  # before uvicorn's __init__, which sets both flags
        super().__init__(config)

    @property  # type: ignore[override]  # an attribute in uvicorn
    def should_exit(self) -> bool:
        return self._shutdown.requested.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._shutdown.requested.set()

    @property  # type: ignore[override]
    def force_exit(self) -> bool:
        return self._shutdown.forced.is_set()

    @force_exit.setter
    def force_exit(self, value: bool) -> None:
        if value:
            self._shutdown.forced.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The Shutdown's handlers are in place (see serve); uvicorn's would re-raise the signal.
        yield


def serve(
    app: Starlette,
    host: str,
    port: int,
    shutdown: Shutdown | None = None,
    *,
    also: Sequence[Listener] = (),
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` (and the ``also`` listeners) until SIGINT/SIGTERM, then return after
    in-flight requests are answered.

    With ``shutdown``, its owner has installed it (``Shutdown.installed``) and signals are its
    business; without, one is installed for the time the servers run. With ``sock``, ``app`` is
    served on that listening socket (one that ``eventpipe edge --workers`` bound and shares)
    instead of binding ``host:port``.
    """
    if shutdown is not None:
        _serve_all([(app, host, port), *also], shutdown, sock)
        return
    with Shutdown().installed() as own:
        _serve_all([(app, host, port), *also], own, sock)


def _serve_all(
    listeners: Sequence[Listener], shutdown: Shutdown, sock: socket.socket | None = None
) -> None:
    servers = [
        _Server(
            uvicorn.Config(
                a, host=h, port=p, log_level="warning", lifespan="off", access_log=False
            ),
            shutdown,
        )
        for a, h, p in listeners
    ]

    async def one(server: _Server) -> None:
        try:
            first = server is servers[0]
            await server.serve(sockets=[sock] if first and sock is not None else None)
        finally:
            shutdown.requested.set()  # one listener gone (stopped, or failed to bind): all stop

    async def all_of_them() -> None:
        await asyncio.gather(*(one(s) for s in servers))

    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(all_of_them())
