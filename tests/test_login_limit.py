"""The storefront's log-in limit: atomic under parallel guesses, across workers (Redis),
and bounding one password sprayed over many usernames. The attempt counters (memory
and Redis) pass one contract."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from api.ratelimit import LoginLimiter
from api.storefront.account_views import LOGIN_MAX_FAILURES, SIGNUP_MAX_PER_ADDRESS
from core.ports import AttemptCounter
from infra.accounts import AccountStore
from infra.attempts import MemoryAttemptCounter, RedisAttemptCounter
from tests.fakes import toy_app

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
GUESSES = 15


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def accounts() -> Iterator[AccountStore]:
    # A slow hash (~tens of ms), as in production: the race lives while it runs.
    store = AccountStore("sqlite://", password_method="pbkdf2:sha256:60000")
    store.create_schema()
    store.create_user("alice", "password-1")
    yield store
    store.close()


def _app(tmp_path: Path, accounts: AccountStore, attempts: AttemptCounter) -> Flask:
    app = toy_app(tmp_path, accounts)
    app.extensions["streamrec"].attempts = attempts
    return app


def _attacker(app: Flask) -> tuple[FlaskClient, str]:
    client = app.test_client()
    found = CSRF.search(client.get("/login").text)
    assert found
    return client, found.group(1)


def _guess_in_parallel(apps: list[Flask], username: str = "alice",
                       password: str = "guess-guess") -> Counter[int]:
    attackers = [_attacker(app) for app in apps]

    def guess(i: int) -> int:
        client, csrf = attackers[i % len(attackers)]
        return client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": csrf}).status_code

    with ThreadPoolExecutor(max_workers=GUESSES) as pool:
        return Counter(pool.map(guess, range(GUESSES)))


def test_parallel_guesses_get_exactly_the_allowed_password_checks(
    tmp_path: Path, accounts: AccountStore
) -> None:
    app = _app(tmp_path, accounts, MemoryAttemptCounter())
    statuses = _guess_in_parallel([app])
    assert statuses == {401: LOGIN_MAX_FAILURES, 429: GUESSES - LOGIN_MAX_FAILURES}


@pytest.mark.integration
def test_the_limit_holds_across_workers_sharing_redis(
    tmp_path: Path, accounts: AccountStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    # Two apps = two gunicorn workers: each has its own client, both count in Redis.
    workers = [_app(tmp_path, accounts, RedisAttemptCounter(redis_client, redis_prefix))
               for _ in range(2)]
    statuses = _guess_in_parallel(workers)
    assert statuses == {401: LOGIN_MAX_FAILURES, 429: GUESSES - LOGIN_MAX_FAILURES}


def test_one_password_sprayed_over_many_usernames_is_limited_per_address(
    tmp_path: Path, accounts: AccountStore
) -> None:
    app = _app(tmp_path, accounts, MemoryAttemptCounter())
    client, csrf = _attacker(app)
    limit = LoginLimiter(MemoryAttemptCounter()).per_address
    statuses = [client.post("/login", data={"username": f"victim{i}", "password": "Summer2026!",
                                            "csrf_token": csrf}).status_code
                for i in range(limit + 3)]
    assert statuses == [401] * limit + [429] * 3


def test_a_success_gives_the_pair_a_fresh_start_and_does_not_count(
    tmp_path: Path, accounts: AccountStore
) -> None:
    counter = MemoryAttemptCounter()
    app = _app(tmp_path, accounts, counter)
    client, csrf = _attacker(app)
    for _ in range(LOGIN_MAX_FAILURES - 1):
        assert client.post("/login", data={"username": "alice", "password": "nope-nope",
                                           "csrf_token": csrf}).status_code == 401
    ok = client.post("/login", data={"username": "alice", "password": "password-1",
                                     "csrf_token": csrf})
    assert ok.status_code == 302
    # The wider counters hold only the failures, the pair none.
    assert counter.hit(["login-addr:127.0.0.1"], 60.0) == [LOGIN_MAX_FAILURES]
    assert counter.hit(["login:alice|127.0.0.1"], 60.0) == [1]


# --- the attempt counter contract ----------------------------------------------------------
@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def counter_and_clock(
    request: pytest.FixtureRequest,
) -> tuple[AttemptCounter, Callable[[float], None]]:
    if request.param == "memory":
        clock = FakeClock()

        def advance(seconds: float) -> None:
            clock.now += seconds

        return MemoryAttemptCounter(clock=clock), advance
    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("redis_prefix")
    counter = RedisAttemptCounter(client, prefix)

    def expire(seconds: float) -> None:  # the server's clock: end every window now
        for key in client.scan_iter(match=prefix + "*"):
            client.pexpire(key, 1)
        time.sleep(0.01)

    return counter, expire


def test_counts_are_per_key_and_start_again_after_the_window(
    counter_and_clock: tuple[AttemptCounter, Callable[[float], None]],
) -> None:
    counter, advance = counter_and_clock
    assert counter.hit(["a", "b"], 60.0) == [1, 1]
    assert counter.hit(["a"], 60.0) == [2]
    counter.undo(["a", "b", "never-seen"])
    assert counter.hit(["a", "b", "never-seen"], 60.0) == [2, 1, 1]
    counter.reset("a")
    assert counter.hit(["a"], 60.0) == [1]
    advance(61.0)
    assert counter.hit(["a", "b"], 60.0) == [1, 1]


def test_parallel_hits_each_get_their_own_count(
    counter_and_clock: tuple[AttemptCounter, Callable[[float], None]],
) -> None:
    counter, _ = counter_and_clock
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = sorted(pool.map(lambda _: counter.hit(["k"], 60.0)[0], range(40)))
    assert counts == list(range(1, 41))


def test_sign_up_attempts_are_limited_per_address(tmp_path: Path, accounts: AccountStore) -> None:
    # Sign-up tells a taken username (409); the limit bounds listing usernames that way.
    app = _app(tmp_path, accounts, MemoryAttemptCounter())
    client, csrf = _attacker(app)
    statuses = [client.post("/signup", data={"username": "alice", "password": "password-9",
                                             "password2": "password-9",
                                             "csrf_token": csrf}).status_code
                for _ in range(SIGNUP_MAX_PER_ADDRESS + 2)]
    assert statuses == [409] * SIGNUP_MAX_PER_ADDRESS + [429] * 2
