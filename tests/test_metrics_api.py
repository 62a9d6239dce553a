"""GET /metrics of the API: latency per URL rule, statuses, source mix, CTR counters, model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from api.services import ApiServices
from tests.fakes import toy_services
from tests.test_api import learn_views


@pytest.fixture
def services(tmp_path: Path) -> ApiServices:
    found = toy_services()
    found.settings = found.settings.model_copy(
        update={"state_dir": tmp_path, "variants": {"default": 0.5, "B": 0.5}})
    return found


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_latency_and_status_are_labelled_by_url_rule_not_raw_path(client: FlaskClient) -> None:
    client.get("/api/items/candles-1")
    client.get("/api/items/bags-2")
    client.get("/api/items/no-such-item")

    samples = scrape(client)

    rule = "/api/items/<item_id>"
    assert value(samples, "streamrec_api_request_duration_seconds_count",
                 endpoint=rule, method="GET") == 3
    assert value(samples, "streamrec_api_requests_total",
                 endpoint=rule, method="GET", status="200") == 2
    assert value(samples, "streamrec_api_requests_total",
                 endpoint=rule, method="GET", status="404") == 1
    assert not any("candles-1" in str(key) for key in samples)


def test_unknown_paths_share_one_unmatched_label(client: FlaskClient) -> None:
    client.get("/nope/1")
    client.get("/nope/2")
    assert value(scrape(client), "streamrec_api_requests_total",
                 endpoint="<unmatched>", method="GET", status="404") == 2


def test_source_mix_counts_each_source_that_scored_a_served_item(
    client: FlaskClient, services: ApiServices
) -> None:
    learn_views(services, "u1", ["candles-1", "candles-2", "bags-1"])
    body = client.get("/api/recommendations", query_string={"user_id": "u1", "k": 5}).get_json()
    expected: dict[str, int] = {}
    for item in body["items"]:
        for source in item["sources"]:
            expected[source] = expected.get(source, 0) + 1
    assert expected, "the toy recommender served nothing"

    samples = scrape(client)

    for source, n in expected.items():
        assert value(samples, "streamrec_recommended_items_total", source=source) == n
    assert value(samples, "streamrec_recommendations_served_total",
                 endpoint="/api/recommendations", variant="default") == 1
    assert value(samples, "streamrec_items_served_total",
                 endpoint="/api/recommendations", variant="default") == len(body["items"])


def test_feedback_counts_only_clicks_carts_purchases_tied_to_a_recommendation(
    client: FlaskClient,
) -> None:
    rec_id = client.get("/api/recommendations", query_string={"user_id": "u1"}).get_json()["rec_id"]
    events = [
        {"event_type": "click", "user_id": "u1", "item_id": "candles-1", "rec_id": rec_id},
        {"event_type": "click", "user_id": "u1", "item_id": "candles-2", "rec_id": rec_id,
         "variant": "B"},
        {"event_type": "purchase", "user_id": "u1", "item_id": "candles-2", "variant": "B"},
        {"event_type": "click", "user_id": "u1", "item_id": "candles-3"},  # organic
        {"event_type": "view", "user_id": "u1", "item_id": "candles-3", "rec_id": rec_id},
    ]
    assert client.post("/api/events", json=events).status_code == 202

    samples = scrape(client)

    assert value(samples, "streamrec_rec_feedback_total", variant="default",
                 event_type="click") == 1
    assert value(samples, "streamrec_rec_feedback_total", variant="B", event_type="click") == 1
    assert value(samples, "streamrec_rec_feedback_total", variant="B",
                 event_type="purchase") == 1
    assert value(samples, "streamrec_rec_feedback_total", variant="default",
                 event_type="view") == 0


def test_client_chosen_variants_and_methods_do_not_grow_metrics(client: FlaskClient) -> None:
    def click(variant: str) -> dict[str, str]:
        return {"event_type": "click", "user_id": "u1", "item_id": "candles-1",
                "variant": variant}

    assert client.post("/api/events", json=[click("B"), click("first-unknown")]).status_code == 202
    client.open("/api/items/candles-1", method="PROPFIND")
    client.get("/metrics")  # the scrape's own series exist from here on
    before = client.get("/metrics").data
    for n in range(0, 1000, 100):  # 1,000 distinct variants, in batches of 100
        batch = [click(f"v{n + i}-<script>") for i in range(100)]
        assert client.post("/api/events", json=batch).status_code == 202
    for n in range(100):
        client.open("/api/items/candles-1", method=f"X{n}")
    after = client.get("/metrics").data
    assert len(after) < len(before) + 200  # counts grew, series did not

    samples = scrape(client)
    variants = {dict(k[1]).get("variant") for k in samples if k[0].startswith("streamrec_rec_")}
    assert variants == {"B", "other"}
    assert value(samples, "streamrec_rec_feedback_total", variant="other",
                 event_type="click") == 1001
    methods = {dict(k[1])["method"] for k in samples if k[0] == "streamrec_api_requests_total"}
    assert methods <= {"GET", "POST", "other"}


def test_model_info_follows_the_latest_pointer(client: FlaskClient,
                                               services: ApiServices) -> None:
    assert not any(k[0] == "streamrec_model_info" for k in scrape(client))

    artifacts = services.settings.artifacts_dir
    (artifacts / "v2").mkdir(parents=True)
    (artifacts / "v2" / "manifest.json").write_text(json.dumps(
        {"version": "v2", "created_at": "2024-05-01T10:00:00+00:00"}))
    (artifacts / "latest").write_text("v2\n")

    samples = scrape(client)

    assert value(samples, "streamrec_model_info", version="v2",
                 created_at="2024-05-01T10:00:00+00:00") == 1
    assert value(samples, "streamrec_model_trained_timestamp_seconds") == 1714557600


def test_each_app_has_its_own_registry() -> None:
    first, second = toy_services(), toy_services()
    a = create_app(first.settings, services=first).test_client()
    b = create_app(second.settings, services=second).test_client()
    a.get("/api/items/candles-1")
    assert value(scrape(a), "streamrec_api_requests_total",
                 endpoint="/api/items/<item_id>", method="GET", status="200") == 1
    assert value(scrape(b), "streamrec_api_requests_total",
                 endpoint="/api/items/<item_id>", method="GET", status="200") == 0


MULTIPROCESS_SCRIPT = """
import os, sys
from api import create_app
from api.metrics import ApiMetrics, init_metrics
from tests.fakes import toy_services
s = toy_services()
app = create_app(s.settings, services=s)
app.extensions["streamrec.metrics"].multiproc_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
client = app.test_client()
for _ in range(int(sys.argv[1])):
    client.get("/api/items/candles-1")
sys.stdout.write(client.get("/metrics").get_data(as_text=True))
"""


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    # Two processes stand in for two gunicorn workers sharing PROMETHEUS_MULTIPROC_DIR.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[1]

    def run(n: int) -> str:
        done = subprocess.run([sys.executable, "-c", MULTIPROCESS_SCRIPT, str(n)], env=env,
                              cwd=root, capture_output=True, text=True, timeout=120, check=True)
        return done.stdout

    run(2)
    text = run(3)

    totals = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "streamrec_api_requests_total"
              and s.labels.get("endpoint") == "/api/items/<item_id>"]
    assert totals == [5.0]
