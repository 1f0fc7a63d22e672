"""``eventpipe edge --workers N``: N edge processes serving one port.

The parent binds the listening socket once and starts N children (``eventpipe edge
--listen-fd FD``) that inherit it, so the kernel hands each new connection to whichever child
accepts first: a busy child takes fewer. Why processes: the edge's work per event is Python,
bound to one core by the interpreter lock; a socket shared by inheritance rather than
``SO_REUSEPORT``, so no other process can bind the port beside them.

Each child is a whole edge: its own producer, answering a request only after Kafka
acknowledged its events. The parent serves nothing. SIGINT/SIGTERM is passed on to every child,
which stops as one edge does (listener closed, in-flight requests answered, producer flushed);
a second signal is passed on too and forces them. A child that exits on its own stops the
others and the parent exits non-zero: a supervisor restarts the whole edge, so no port is ever
served by fewer processes than asked for without anyone noticing.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import structlog

from eventpipe.embedded import die_with_parent
from eventpipe.errors import StartError
from eventpipe.settings import Settings
from producers.server import Shutdown

log = structlog.get_logger(__name__)

BACKLOG = 2048
"""Connections the shared socket queues before a child accepts them (uvicorn's default)."""
STOP_TIMEOUT_S = 30.0
"""How long a child may take to answer its in-flight requests and flush, after a signal."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket the children share; inheritable, so they get it across exec."""
    try:
        sock = socket.create_server((host, port), backlog=BACKLOG)
    except OSError as exc:
        raise StartError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.set_inheritable(True)
    return sock


def run_workers(settings: Settings, count: int) -> int:
    """Start ``count`` edge children on one socket, supervise them, and return the exit code."""
    if settings.admin_token:
        raise StartError(
            "EVENTPIPE_ADMIN_TOKEN with more than one edge worker: keys minted on /admin would "
            "live in one process only. Run one worker for the admin listener, or unset the token"
        )
    sock = bind(settings.host, settings.port)
    fd = sock.fileno()
    children: list[subprocess.Popen[bytes]] = []
    with Shutdown().installed() as shutdown:
        try:
            for _ in range(count):
                children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "launch", "edge", "--listen-fd", str(fd)],
                        pass_fds=[fd],
                        stdin=subprocess.DEVNULL,
                        preexec_fn=die_with_parent(),
                    )
                )
            log.info(
                "edge workers started",
                workers=count,
                address=f"{settings.host}:{sock.getsockname()[1]}",
                pids=[c.pid for c in children],
            )
        finally:
            sock.close()  # the children hold it; the parent never accepts
        while not shutdown.requested.wait(0.2):
            gone = [c for c in children if c.poll() is not None]
            if gone:
                log.error("edge worker exited", pid=gone[0].pid, code=gone[0].returncode)
                break
        return _stop_all(children, shutdown)


def _stop_all(children: list[subprocess.Popen[bytes]], shutdown: Shutdown) -> int:
    """SIGTERM each child still running, pass on a forcing second signal, wait for all."""
    asked = [c for c in children if c.poll() is None]
    for child in asked:
        child.send_signal(signal.SIGTERM)
    forced = False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(c.poll() is None for c in children):
        if shutdown.forced.is_set() and not forced:
            forced = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)  # a child's second signal forces it
        if time.monotonic() > deadline:
            for child in children:
                if child.poll() is None:
                    log.error("edge worker did not stop; killed", pid=child.pid)
                    child.kill()
        time.sleep(0.05)
    failed = [c for c in children if c.returncode != 0]
    unasked = [c for c in children if c not in asked]
    if failed or (unasked and not shutdown.requested.is_set()):
        return 1
    return 0
