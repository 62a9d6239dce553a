"""Rate limits: a per-client token bucket in front of the JSON API (``/api/*``), and
the storefront's log-in limit (:class:`LoginLimiter`, on a shared attempt counter).

Each client (the request's remote address) owns a bucket of ``burst`` tokens that
refills at ``rate`` tokens per second; a request takes one token, and a request
that finds the bucket empty is answered ``429`` in the API's error shape with a
``Retry-After`` header (whole seconds until a token is back). ``/healthz``,
``/metrics``, the storefront and the dashboard are not limited.

The buckets live in the worker process: under gunicorn with N workers a client may
reach N times the rate (the kernel spreads connections over workers). That is
enough to stop one client from flooding a worker; a global limit belongs in the
reverse proxy or in Redis. Behind a proxy every request carries the proxy's
address, so put the limit in the proxy there (or wrap the app in werkzeug's
``ProxyFix`` so ``remote_addr`` is the client's).

>>> limiter = TokenBucketLimiter(rate=1.0, burst=2, clock=lambda: 0.0)
>>> [limiter.acquire("10.0.0.1") for _ in range(3)]
[0.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, jsonify, request

from core.ports import AttemptCounter
from core.settings import Settings

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_RATE",
    "RATE_CHARGED",
    "LoginLimiter",
    "TokenBucketLimiter",
    "init_rate_limit",
    "within_limit",
]

#: Defaults while ``Settings`` has no ``rate_limit_per_s`` / ``rate_limit_burst``.
DEFAULT_RATE = 100.0
DEFAULT_BURST = 200
#: Clients remembered at most; the least recently seen are forgotten first (a
#: forgotten client starts again with a full bucket, which only errs on the lenient side).
MAX_CLIENTS = 10_000
_LIMITED_PREFIX = "/api/"
#: WSGI environ key: the wait :meth:`TokenBucketLimiter.acquire` already answered for
#: this request (the 304 fast path, :mod:`api.fastpath`, takes its token before Flask).
RATE_CHARGED = "streamrec.rate_charged"


class TokenBucketLimiter:
    """Token buckets keyed by client; thread-safe (gthread workers share one).

    Parameters
    ----------
    rate
        Tokens added per second (sustained requests per second); must be > 0.
    burst
        Bucket size: requests a client may make at once after being idle.
    clock
        Monotonic seconds (tests pass a fake).
    max_clients
        Buckets kept; the least recently used go first.
    """

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenBucketLimiter(rate={self.rate:g}, burst={self.burst})"

    def acquire(self, client: str) -> float:
        """Take a token for ``client``: 0.0 when granted, else seconds until one is back."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)  # re-inserted last: most recently used
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def _too_many(wait_s: float, limiter: TokenBucketLimiter) -> Response:
    retry_after = max(1, math.ceil(wait_s))
    response = jsonify({"error": {
        "code": "rate_limited",
        "message": f"too many requests: at most {limiter.rate:g}/s "
                   f"(bursts of {limiter.burst}) per client",
        "details": {"retry_after_s": retry_after},
    }})
    response.status_code = 429
    response.headers["Retry-After"] = str(retry_after)
    return response


def init_rate_limit(app: Flask, settings: Settings) -> TokenBucketLimiter | None:
    """Limit ``/api/*`` per remote address; None (and no hook) when the rate is 0."""
    rate = float(getattr(settings, "rate_limit_per_s", DEFAULT_RATE))
    burst = int(getattr(settings, "rate_limit_burst", DEFAULT_BURST))
    if rate <= 0:
        return None
    limiter = TokenBucketLimiter(rate, burst)
    app.extensions["streamrec.ratelimit"] = limiter

    @app.before_request
    def _rate_limit() -> Response | None:
        if not request.path.startswith(_LIMITED_PREFIX):
            return None
        charged = request.environ.get(RATE_CHARGED)
        wait = (limiter.acquire(request.remote_addr or "unknown") if charged is None
                else float(charged))
        return _too_many(wait, limiter) if wait > 0 else None

    return limiter


def within_limit(counter: AttemptCounter, key: str, limit: int, window_s: float) -> bool:
    """Count one attempt under ``key``; True while at most ``limit`` fell in the window."""
    return counter.hit([key], window_s)[0] <= limit


@dataclass(frozen=True)
class LoginLimiter:
    """Log-in attempts per username and address, per address and per username.

    Every attempt is counted *before* its password is checked, in one atomic step
    of the shared counter (Redis under gunicorn): 15 guesses sent at once get exactly
    ``per_account_and_address`` password checks, whichever workers they reach. A
    success takes its attempt back from the wider counters and clears the pair's.

    - ``per_account_and_address``: one attacker guessing one account;
    - ``per_address``: one address spraying a password over many usernames;
    - ``per_account``: many addresses guessing one account. Its price: an attacker
      can lock the owner out for up to ``window_s`` seconds.

    >>> from infra.attempts import MemoryAttemptCounter
    >>> limiter = LoginLimiter(MemoryAttemptCounter(), per_account_and_address=2)
    >>> [limiter.allow("alice", "10.0.0.1") for _ in range(3)]
    [True, True, False]
    >>> limiter.allow("alice", "10.0.0.2")  # another address has its own allowance
    True
    """

    counter: AttemptCounter
    per_account_and_address: int = 5
    per_address: int = 30
    per_account: int = 30
    window_s: float = 300.0

    @staticmethod
    def _keys(username: str, address: str) -> tuple[str, str, str]:
        name = username.strip().lower()[:64]
        return f"login:{name}|{address}", f"login-addr:{address}", f"login-user:{name}"

    def allow(self, username: str, address: str) -> bool:
        """Count an attempt; False when one of the limits is already spent."""
        counts = self.counter.hit(self._keys(username, address), self.window_s)
        limits = (self.per_account_and_address, self.per_address, self.per_account)
        return all(count <= limit for count, limit in zip(counts, limits, strict=True))

    def succeeded(self, username: str, address: str) -> None:
        """A right password: the pair starts afresh, the wider counters get it back."""
        pair, *wider = self._keys(username, address)
        self.counter.reset(pair)
        self.counter.undo(wider)
