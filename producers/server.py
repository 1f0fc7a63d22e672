"""Running the edge's ASGI app under uvicorn, with a shutdown that lets our cleanup run.

uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which ends the process before the
caller's own cleanup (flushing the Kafka producer, stopping the sink and the worker). Here a
signal only asks the server to stop: in-flight requests finish (each awaits its Kafka ack), then
``serve`` returns and the caller cleans up and exits 0. A second SIGINT forces the exit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
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
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def serve(app: Starlette, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, then return after in-flight requests are answered."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    _Server(config).run()
