"""Running the edge's ASGI apps under uvicorn, with a shutdown that lets our cleanup run.

uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which ends the process before the
caller's own cleanup (flushing the Kafka producer, stopping the sink and the worker). Here a
signal only asks the servers to stop: in-flight requests finish (each awaits its Kafka ack),
then ``serve`` returns and the caller cleans up and exits 0. A second SIGINT forces the exit.

``serve`` can run more than one listener in one event loop (the edge's public app and its admin
app): the first one handles the signals for all, and when any of them stops, all stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Generator, Sequence

import uvicorn
from starlette.applications import Starlette

Listener = tuple[Starlette, str, int]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, group: list[_Server]) -> None:
        super().__init__(config)
        self._group = group

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread() or self is not self._group[0]:
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, _frame: object) -> None:
        force = self.should_exit and sig == signal.SIGINT
        for server in self._group:
            server.force_exit = server.force_exit or force
            server.should_exit = True


def serve(app: Starlette, host: str, port: int, *, also: Sequence[Listener] = ()) -> None:
    """Serve until SIGINT/SIGTERM, then return after in-flight requests are answered."""
    group: list[_Server] = []
    for a, h, p in [(app, host, port), *also]:
        config = uvicorn.Config(a, host=h, port=p, log_level="warning", lifespan="off")
        group.append(_Server(config, group))

    async def one(server: _Server) -> None:
        try:
            await server.serve()
        finally:
            for other in group:
                other.should_exit = True

    async def all_of_them() -> None:
        await asyncio.gather(*(one(s) for s in group))

    with asyncio.Runner(loop_factory=group[0].config.get_loop_factory()) as runner:
        runner.run(all_of_them())
