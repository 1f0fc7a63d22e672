"""API keys and per-workspace rate limits: who may send, and how fast.

Keys are held only as SHA-256 digests, and a request's key is found by a dict lookup on its
digest. That lookup is not constant-time, and need not be: what its timing could reveal is how
much of the *digest* of a guess matches a stored digest, and steering a guess's digest byte by
byte means finding SHA-256 preimages. Keys are 24 random bytes (``new_key``), so guessing one
is out of reach too. No key ever reaches a log line, a metric or an error body.

Keys come from two places: ``EVENTPIPE_API_KEYS`` (every replica reads the same list) and
``/admin/keys`` (minted in this process only). A configured key cannot be revoked through the
admin route: that would revoke it in one replica while every other one still accepts it.

Rate limits are token buckets per workspace (product) **per edge replica**: N replicas behind a
load balancer allow up to N times the configured budget.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from eventpipe.errors import Conflict, RateLimited, Unauthorized
from eventpipe.settings import ApiKeyConfig
from producers.metrics import RATE_LIMITED

KEY_PREFIX = "ep_"


@dataclass(frozen=True, slots=True)
class Principal:
    """What a valid key grants: a workspace (product), a source, and its request budget."""

    product: str
    source: str
    rate_limit_per_minute: int


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


class KeyStore:
    def __init__(self, keys: list[ApiKeyConfig], default_rate_limit: int) -> None:
        self._default = default_rate_limit
        self._by_digest: dict[str, Principal] = {}
        self._lock = threading.Lock()
        for k in keys:
            self.add_digest(k)
        self._configured = frozenset(self._by_digest)

    def add_digest(self, cfg: ApiKeyConfig) -> Principal:
        p = Principal(cfg.product, cfg.source, cfg.rate_limit_per_minute or self._default)
        with self._lock:
            self._by_digest[cfg.sha256.lower()] = p
        return p

    def add(self, key: str, product: str, source: str = "api", rate: int | None = None) -> None:
        self.add_digest(
            ApiKeyConfig(
                sha256=hash_key(key), product=product, source=source, rate_limit_per_minute=rate
            )
        )

    def revoke(self, key: str) -> bool:
        """Forget a minted key: its next request is a 401. True when the key was known.

        A key from ``EVENTPIPE_API_KEYS`` is a Conflict: it lives in every replica's
        configuration, and is revoked by removing it there."""
        digest = hash_key(key)
        if digest in self._configured:
            raise Conflict(
                "this key is configured in EVENTPIPE_API_KEYS, which every edge replica reads: "
                "remove it there and restart the edges to revoke it",
                field="key",
            )
        with self._lock:
            return self._by_digest.pop(digest, None) is not None

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing Authorization header (expected 'Bearer <api key>')")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("malformed Authorization header (expected 'Bearer <api key>')")
        found = self._by_digest.get(hash_key(token))
        if found is None:
            raise Unauthorized("invalid API key")
        return found


class RateLimiter:
    """Token bucket per workspace: ``limit`` requests per minute, bursts up to ``limit``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # product -> (tokens, last refill)

    def check(self, principal: Principal) -> None:
        limit = principal.rate_limit_per_minute
        if limit <= 0:
            return
        rate = limit / 60.0
        now = self._clock()
        tokens, last = self._buckets.get(principal.product, (float(limit), now))
        tokens = min(float(limit), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[principal.product] = (tokens, now)
            retry = max(1, math.ceil((1.0 - tokens) / rate))
            RATE_LIMITED.inc()
            raise RateLimited(f"workspace over {limit} requests per minute", retry_after=retry)
        self._buckets[principal.product] = (tokens - 1.0, now)
