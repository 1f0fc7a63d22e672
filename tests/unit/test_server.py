"""producers.server: a first signal asks the server to stop, a second forces it; both reach
uvicorn's own flags, so a stop requested from outside the server ends ``serve``."""

from __future__ import annotations

import signal
import threading

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from eventpipe.embedded import free_port
from producers.server import Shutdown, serve


def test_first_signal_requests_the_stop_and_the_second_forces_it() -> None:
    shutdown = Shutdown()
    shutdown.on_signal(signal.SIGTERM, None)
    assert shutdown.requested.is_set() and not shutdown.forced.is_set()
    shutdown.on_signal(signal.SIGINT, None)
    assert shutdown.forced.is_set()


def test_installed_handles_both_signals_and_puts_the_old_handlers_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    shutdown = Shutdown()
    with shutdown.installed():
        signal.raise_signal(signal.SIGTERM)
        assert shutdown.requested.is_set()
    assert signal.getsignal(signal.SIGTERM) is before


def test_serve_returns_once_its_shutdown_is_requested() -> None:
    async def hello(_: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/", hello)])
    port = free_port()
    shutdown = Shutdown()
    thread = threading.Thread(target=serve, args=(app, "127.0.0.1", port, shutdown))
    thread.start()
    try:
        for _ in range(100):
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text == "hi"
                break
            except httpx.TransportError:
                threading.Event().wait(0.05)
        else:
            raise AssertionError("the server never answered")
    finally:
        shutdown.requested.set()
        thread.join(10)
    assert not thread.is_alive()
