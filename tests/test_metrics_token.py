"""With a metrics token set, /metrics answers only Prometheus' bearer token."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import toy_app


def test_metrics_needs_the_bearer_token_when_one_is_set(tmp_path: Path) -> None:
    client = toy_app(tmp_path, metrics_token="prometheus-scrape-token").test_client()

    refused = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer guess"})
    scraped = client.get("/metrics",
                         headers={"Authorization": "Bearer prometheus-scrape-token"})

    assert (refused.status_code, wrong.status_code, scraped.status_code) == (401, 401, 200)
    assert refused.get_json()["error"]["code"] == "unauthorized"
    assert b"streamrec_api_requests_total" in scraped.data


def test_metrics_stays_open_without_a_token(tmp_path: Path) -> None:
    assert toy_app(tmp_path).test_client().get("/metrics").status_code == 200
