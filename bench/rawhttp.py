"""A minimal HTTP/1.1 keep-alive client for the load generator's closed loop.

Why not httpx there: at single-event requests httpx spent ~300 us of CPU per request, so the
generator saturated its core before the edge did and the figure measured the client. This one
sends prebuilt request bytes on a kept-alive connection and reads the status line, the
``Content-Length`` and the body: the edge answers every request with a length (no chunking).
Anything else (a closed connection, a response without a length) raises, never passes quietly.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class RawConnection:
    """One kept-alive connection; ``post`` sends a request and returns (status, body)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def request(self, path: str, body: bytes) -> bytes:
        """The bytes of one POST, to be built before the clock starts."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self._head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
