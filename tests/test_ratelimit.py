"""The per-client token bucket in front of /api: 429 in the error shape, exemptions."""

from __future__ import annotations

from flask import Flask

from api import create_app
from api.ratelimit import TokenBucketLimiter
from core.settings import Settings
from tests.fakes import toy_services


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limited_app(rate: float, burst: int) -> Flask:
    services = toy_services()
    # model_copy sets the fields even before Settings declares them.
    settings = services.settings.model_copy(
        update={"rate_limit_per_s": rate, "rate_limit_burst": burst})
    app = create_app(settings, services=services)
    app.config["TESTING"] = True
    return app


def test_a_bucket_grants_the_burst_then_refuses_with_the_wait_until_a_token() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == 0.5  # one token back after 1 / rate seconds
    clock.now = 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0


def test_a_bucket_refills_at_the_rate_but_never_beyond_the_burst() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate=10.0, burst=2, clock=clock)
    limiter.acquire("a"), limiter.acquire("a")
    clock.now = 100.0  # idle for long: still only ``burst`` tokens
    got = [limiter.acquire("a") for _ in range(3)]
    assert got[:2] == [0.0, 0.0]
    assert got[2] > 0


def test_refused_requests_do_not_dig_the_bucket_deeper() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate=1.0, burst=1, clock=clock)
    limiter.acquire("a")
    for _ in range(100):
        limiter.acquire("a")  # a flood while empty
    clock.now = 1.0
    assert limiter.acquire("a") == 0.0


def test_clients_have_their_own_buckets() -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=1, clock=FakeClock())
    assert limiter.acquire("10.0.0.1") == 0.0
    assert limiter.acquire("10.0.0.1") > 0
    assert limiter.acquire("10.0.0.2") == 0.0


def test_the_number_of_remembered_clients_is_bounded() -> None:
    limiter = TokenBucketLimiter(rate=1.0, burst=1, clock=FakeClock(), max_clients=100)
    for n in range(1000):
        limiter.acquire(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100


def test_a_flood_from_one_client_gets_429_in_the_error_shape_with_retry_after() -> None:
    client = limited_app(rate=1.0, burst=5).test_client()
    statuses = [client.get("/api/trending").status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5
    assert statuses[5:] == [429] * 3
    response = client.get("/api/recommendations?user_id=u1")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    body = response.get_json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["message"]
    assert body["error"]["details"]["retry_after_s"] == int(response.headers["Retry-After"])


def test_posting_events_counts_against_the_same_bucket() -> None:
    client = limited_app(rate=1.0, burst=2).test_client()
    event = {"event_type": "view", "user_id": "u1", "item_id": "mugs-1"}
    assert client.post("/api/events", json=event).status_code == 202
    assert client.post("/api/events", json=event).status_code == 202
    assert client.post("/api/events", json=event).status_code == 429


def test_another_client_address_is_not_limited_by_a_flooding_one() -> None:
    client = limited_app(rate=1.0, burst=2).test_client()
    for _ in range(5):
        client.get("/api/trending", environ_base={"REMOTE_ADDR": "10.1.1.1"})
    assert client.get("/api/trending", environ_base={"REMOTE_ADDR": "10.1.1.1"}
                      ).status_code == 429
    assert client.get("/api/trending", environ_base={"REMOTE_ADDR": "10.2.2.2"}
                      ).status_code == 200


def test_health_and_metrics_are_never_limited() -> None:
    client = limited_app(rate=1.0, burst=1).test_client()
    client.get("/api/trending")
    assert client.get("/api/trending").status_code == 429
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_a_rate_of_zero_turns_the_limit_off() -> None:
    client = limited_app(rate=0.0, burst=1).test_client()
    assert all(client.get("/api/trending").status_code == 200 for _ in range(50))


def test_the_default_limit_lets_an_ordinary_client_through() -> None:
    services = toy_services()
    app = create_app(services.settings, services=services)
    assert "streamrec.ratelimit" in app.extensions  # on by default
    client = app.test_client()
    assert all(client.get("/api/trending").status_code == 200 for _ in range(50))


def test_the_limit_reads_its_rate_and_burst_from_the_settings() -> None:
    settings = Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092",
                        secret_key="k").model_copy(
        update={"rate_limit_per_s": 7.0, "rate_limit_burst": 9})
    app = create_app(settings, services=toy_services())
    limiter = app.extensions["streamrec.ratelimit"]
    assert (limiter.rate, limiter.burst) == (7.0, 9)
