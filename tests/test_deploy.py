"""docker-compose.yml, the Dockerfile, Prometheus and Grafana checked against the code.

No container engine runs here, so these tests prove what can be proved statically:
every app command is a real `streamrec` command with real options, every
environment variable is a Settings field or alias, ports agree, Prometheus scrapes
the services and ports that serve metrics, and Grafana queries metrics that exist.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import AliasChoices

from api.metrics import ApiMetrics
from cli.main import cli
from consumers.metrics import ConsumerMetrics
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("api", "consumer", "trainer")
#: Variables read by libraries, not by Settings.
LIBRARY_ENV = {"PROMETHEUS_MULTIPROC_DIR"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def settings_env_names() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"STREAMREC_{name.upper()}")
    return names


def settings_from_env(env: dict[str, str]) -> Settings:
    return Settings.model_validate(
        {_field_of(k): v for k, v in env.items() if k not in LIBRARY_ENV})


def _field_of(env_name: str) -> str:
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = ([str(c).upper() for c in alias.choices] if isinstance(alias, AliasChoices)
                   else [f"STREAMREC_{name.upper()}"])
        if env_name.upper() in choices:
            return name
    raise AssertionError(f"{env_name} is no Settings field")


def resolve_command(argv: list[str]) -> tuple[click.Command, list[str]]:
    assert argv[0] == "streamrec", argv
    command = cli.commands.get(argv[1])
    assert command is not None, f"`streamrec {argv[1]}` does not exist"
    return command, argv[2:]


def test_app_services_run_real_cli_commands_with_real_options(compose: dict[str, Any]) -> None:
    for service in APP_SERVICES:
        argv = compose["services"][service]["command"]
        command, args = resolve_command(argv)
        # Parsing the arguments with click proves every option exists and has a valid value.
        ctx = command.make_context(argv[1], list(args), resilient_parsing=False)
        ctx.close()


def test_dockerfile_default_command_is_a_real_cli_command() -> None:
    text = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    argv = json.loads(cmd.group(1))
    command, args = resolve_command(argv)
    command.make_context(argv[1], list(args)).close()


def test_dockerfile_copies_every_package_and_sets_only_settings_env() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("core", "online_models", "index", "offline", "infra", "consumers", "api",
                    "cli", "data"):
        assert re.search(rf"^COPY {package} \./{package}$", text, re.M), package
    env_block = " ".join(re.findall(r"^ENV (.*?)(?<!\\)$", text, re.M | re.S))
    names = set(re.findall(r"(STREAMREC_[A-Z_]+)=", env_block))
    assert names and names <= settings_env_names()


def test_app_environment_names_are_settings_fields_and_values_validate(
    compose: dict[str, Any],
) -> None:
    known = settings_env_names() | LIBRARY_ENV
    for service in APP_SERVICES:
        env = {k: str(v) for k, v in compose["services"][service]["environment"].items()}
        assert set(env) <= known, set(env) - known
        # Values (with ${VAR:-default} taken as the default) pass Settings validation.
        values = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
        settings_from_env(values)


def test_ports_agree_between_cli_settings_compose_and_prometheus(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    api_env = services["api"]["environment"]
    api_port = int(api_env["STREAMREC_API_PORT"])
    argv = services["api"]["command"]
    assert argv[argv.index("--port") + 1] == str(api_port)
    assert f"{api_port}:{api_port}" in services["api"]["ports"]
    assert api_port == Settings().api_port
    metrics_port = int(services["consumer"]["environment"]["STREAMREC_CONSUMER_METRICS_PORT"])
    assert str(metrics_port) in [str(p) for p in services["consumer"]["expose"]]
    assert "ports" not in services["consumer"], "host ports would stop --scale"
    assert "container_name" not in services["consumer"]
    # The dashboard reads the consumers where they serve metrics.
    assert api_env["STREAMREC_CONSUMER_METRICS_URLS"] == (
        f"http://consumer:{metrics_port}/metrics")
    # Consumers must bind all interfaces for Prometheus to reach them.
    assert services["consumer"]["environment"]["STREAMREC_API_HOST"] == "0.0.0.0"

    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    dns = jobs["consumer"]["dns_sd_configs"][0]
    assert dns["names"] == ["consumer"] and dns["port"] == metrics_port
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"


def test_service_addresses_point_at_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["api"]["environment"]
    assert env["STREAMREC_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in services["kafka"]["environment"][
        "KAFKA_ADVERTISED_LISTENERS"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["STREAMREC_REDIS_URL"].startswith("redis://redis:6379")
    pg = services["postgres"]["environment"]
    assert env["STREAMREC_DATABASE_URL"] == (
        f"postgresql+psycopg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg['POSTGRES_DB']}")
    settings = settings_from_env({k: v for k, v in env.items() if "${" not in str(v)})
    script = " ".join(services["kafka-init"]["command"])
    topics = re.search(r"for topic in (.*?); do", script)
    assert topics is not None
    assert set(topics.group(1).split()) == {settings.interactions_topic, settings.catalog_topic,
                                            settings.dead_letter_topic}
    partitions = shlex.split(script)[shlex.split(script).index("--partitions") + 1]
    assert int(partitions) == settings.topic_partitions


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    grafana = ROOT / "deploy" / "grafana"
    datasource = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((grafana / "provisioning/dashboards/streamrec.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((grafana / "dashboards/streamrec.json").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid for p in dashboard["panels"])


def _exported_names() -> set[str]:
    names: set[str] = set()
    for registry in (ApiMetrics().registry, ConsumerMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(s.name for s in family.samples)
    return names


def _grafana_metric_names() -> set[str]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/streamrec.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(streamrec_[a-z_]+)", e)}
    # Counters are stored without _total; histograms are queried by _bucket.
    return {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in used}


def test_grafana_queries_only_metrics_the_code_exports() -> None:
    exported = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in _exported_names()}
    exported.add("streamrec_model_info")  # collected at scrape time from the registry
    assert _grafana_metric_names() <= exported


CLUSTER_NODES = [f"redis-node-{n}" for n in range(1, 7)]
CLUSTER_APPS = ("api-cluster", "consumer-cluster")


def _profile(compose: dict[str, Any], name: str) -> set[str]:
    return {s for s, spec in compose["services"].items() if name in spec.get("profiles", [])}


def test_the_cluster_profile_runs_six_cluster_nodes_and_creates_a_3_plus_3_cluster(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {*CLUSTER_NODES, "redis-cluster-init", *CLUSTER_APPS} <= _profile(compose, "cluster")
    for node in CLUSTER_NODES:
        spec = services[node]
        assert spec["hostname"] == node
        assert "--cluster-enabled yes" in " ".join(spec["command"])
    init = services["redis-cluster-init"]
    assert init["restart"] == "no"
    assert set(init["depends_on"]) == set(CLUSTER_NODES)
    assert all(c["condition"] == "service_healthy" for c in init["depends_on"].values())
    script = " ".join(init["command"])
    assert "redis-cli --cluster create" in script and "--cluster-replicas 1" in script
    listed = re.search(r"for n in ([\d ]+); do", script)
    assert listed is not None and [f"redis-node-{n}" for n in listed.group(1).split()] == (
        CLUSTER_NODES)


def test_the_cluster_apps_run_real_commands_on_the_cluster_beside_the_default_stack(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    known = settings_env_names() | LIBRARY_ENV
    for name in CLUSTER_APPS:
        spec = services[name]
        command, args = resolve_command(spec["command"])
        command.make_context(spec["command"][1], list(args)).close()
        env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))
               for k, v in spec["environment"].items()}
        assert set(env) <= known, set(env) - known
        settings = settings_from_env(env)
        host = settings.redis_url.split("//", 1)[1].split(":", 1)[0]
        assert host in CLUSTER_NODES
        assert spec["depends_on"]["redis-cluster-init"]["condition"] == (
            "service_completed_successfully")
        assert "redis" not in spec["depends_on"]  # the single Redis is not needed
    consumer = settings_from_env({k: str(v) for k, v in
                                  services["consumer-cluster"]["environment"].items()
                                  if "${" not in str(v)})
    default = settings_from_env({k: str(v) for k, v in
                                 services["consumer"]["environment"].items()
                                 if "${" not in str(v)})
    # Its own consumer group (both stacks see every event); the default one archives.
    assert consumer.consumer_group != default.consumer_group
    assert not consumer.archive_events and default.archive_events
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports))
    assert "ports" not in services["consumer-cluster"]


def test_no_default_service_depends_on_a_profile_service(compose: dict[str, Any]) -> None:
    in_profiles = {s for s, spec in compose["services"].items() if spec.get("profiles")}
    for name, spec in compose["services"].items():
        if not spec.get("profiles"):
            assert not set(spec.get("depends_on", {})) & in_profiles, name


_INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_interpolate(value: str, env: dict[str, str]) -> str:
    """Docker Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` rules."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        unset = name not in env or (op is not None and op.startswith(":") and not env[name])
        if op is not None and op.endswith("?") and unset:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op is not None and op.endswith("-") and unset:
            return arg
        return env.get(name, "")

    return _INTERPOLATION.sub(one, value)


SECRET_ENV = ("STREAMREC_SECRET_KEY", "STREAMREC_API_TOKEN")


@pytest.mark.parametrize("missing", SECRET_ENV)
def test_compose_refuses_to_start_without_the_secret_key_and_api_token(
    compose: dict[str, Any], missing: str,
) -> None:
    strong = {name: "x" * 64 for name in SECRET_ENV}
    for service in APP_SERVICES:
        env = compose["services"][service]["environment"]
        # Set: the value passes through unchanged; never a built-in fallback.
        assert compose_interpolate(str(env[missing]), strong) == strong[missing]
        for given in ({}, {**strong, missing: ""}):
            with pytest.raises(ValueError, match=missing):
                compose_interpolate(str(env[missing]), {k: v for k, v in given.items()
                                                        if k != missing or v == ""})
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()
