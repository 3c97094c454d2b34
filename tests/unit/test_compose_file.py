"""The Docker files agree with the code: docker-compose.yml and the Dockerfile.

No Docker engine is needed: the files are parsed and checked against what the code accepts
(the settings, the ``paygate`` subcommands, the database driver, the console script). Only
``docker compose config`` runs a program, and it is skipped where the Docker client or its
compose plugin is missing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, AliasPath

from paygate import cli
from paygate.production_checks import Uses, unsafe_settings
from paygate.settings import Environment, Settings
from persistence.database import Database
from persistence.engine import create_engine
from schemas.payments import PaymentMessages

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
# In a container a server must listen on every interface to be reachable from the others.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


# ---- what the code accepts ------------------------------------------------------------------


def _setting_env_names() -> dict[str, str]:
    """Every environment variable name Settings reads, upper-cased, mapped to its field."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names[f"{prefix}{field_name}".upper()] = field_name
            continue
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, AliasPath):
                continue  # a path into a nested value is not an environment variable name
            names[choice.upper()] = field_name
    return names


SETTING_ENV_NAMES = _setting_env_names()


@functools.cache
def paygate_subcommands() -> frozenset[str]:
    """The subcommands of the real ``paygate`` parser."""
    names: set[str] = set()
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            names.update(action.choices)
    assert names, "the paygate parser has no subcommands"
    assert names == set(cli.subcommands())
    return frozenset(names)


def _console_script() -> str:
    """The name of the console script that runs ``paygate.cli:main``."""
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    entry = f"{cli.__name__}:{cli.main.__name__}"
    names = [name for name, target in scripts.items() if target == entry]
    assert len(names) == 1, f"expected one console script for {entry}, got {names}"
    return names[0]


# ---- reading the compose file ---------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    assert isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` as compose resolves it when VAR is unset."""

    def default(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        return match.group("default") if op.endswith("-") else ""

    return _INTERPOLATION.sub(default, value).replace("$$", "$")


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        env = dict(pairs)
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


def _command(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """``{service: condition}``; the short list form means ``service_started``."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _published_ports(service: Mapping[str, Any]) -> set[tuple[int, int]]:
    """``{(host port, container port)}`` of a service's ``ports``, short or long syntax."""
    ports: set[tuple[int, int]] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if "published" in entry:
                ports.add((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/", 1)[0].split(":")
        if len(parts) >= 2:  # [ip:]host:container; a lone container port is published anywhere
            ports.add((int(parts[-2]), int(parts[-1])))
    return ports


def _volume_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """``{container path: source}`` of a service's ``volumes``, short or long syntax."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts[str(entry["target"])] = str(entry.get("source", ""))
            continue
        source, _, rest = str(entry).partition(":")
        mounts[rest.split(":", 1)[0] if rest else source] = source if rest else ""
    return mounts


def _paygate_image(services: Mapping[str, Mapping[str, Any]]) -> str:
    built = {s["image"] for s in services.values() if "build" in s and "image" in s}
    assert len(built) == 1, f"expected one image built from this repo, got {built}"
    return built.pop()


@pytest.fixture(scope="module")
def paygate_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    image = _paygate_image(services)
    found = {name: s for name, s in services.items() if s.get("image") == image}
    assert {"topics", "acquirer", "consumer", "facade"} <= set(found)
    return found


@pytest.fixture
def settings_for(monkeypatch: pytest.MonkeyPatch) -> Callable[[Mapping[str, Any]], Settings]:
    """Builds the Settings a service would see: the image's ENV, then its compose env."""
    image_env = _dockerfile_env(_final_stage(_dockerfile_instructions()))

    def build(service: Mapping[str, Any]) -> Settings:
        for name in list(os.environ):
            if name.upper() in SETTING_ENV_NAMES:
                monkeypatch.delenv(name)
        for name, value in {**image_env, **_environment(service)}.items():
            monkeypatch.setenv(name, value)
        return Settings()

    return build


# ---- reading the Dockerfile -----------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return _stages(instructions)[-1]


def _dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword != "ENV":
            continue
        words = shlex.split(rest)
        if words and "=" not in words[0]:  # legacy form: ENV NAME value
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def _exec_form(rest: str) -> list[str]:
    value = yaml.safe_load(rest)  # the JSON exec form is valid YAML
    assert isinstance(value, list), f"use the exec (JSON) form, not {rest!r}"
    return [str(v) for v in value]


# ---- compose: settings and commands ---------------------------------------------------------


def test_every_paygate_environment_variable_is_a_real_setting(paygate_services):
    for name, service in paygate_services.items():
        unknown = {v for v in _environment(service) if v.upper() not in SETTING_ENV_NAMES}
        assert not unknown, f"{name}: not paygate settings: {sorted(unknown)}"


def test_every_paygate_service_environment_validates(paygate_services, settings_for):
    for service in paygate_services.values():
        settings_for(service)  # raises on a value the settings reject


def test_every_paygate_service_runs_a_real_subcommand(paygate_services):
    assert {"consumer", "facade", "acquirer", "topics"} <= paygate_subcommands()
    for name, service in paygate_services.items():
        assert "entrypoint" not in service, f"{name}: keep the image's paygate entrypoint"
        command = _command(service)
        assert command, f"{name}: no command"
        assert command[0] in paygate_subcommands(), f"{name}: {command[0]!r} is no subcommand"
    assert _command(paygate_services["topics"]) == ["topics"]


def test_the_paygate_image_is_built_from_this_repository(paygate_services):
    for name, service in paygate_services.items():
        build = service.get("build")
        assert build is not None, f"{name}: no build section"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "")
        assert (ROOT / context).resolve() == ROOT
        assert (ROOT / context / (dockerfile or "Dockerfile")).resolve() == DOCKERFILE


# ---- compose: Kafka -------------------------------------------------------------------------


def _kafka_env(services: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    return _environment(services["kafka"])


def test_kafka_is_apache_kafka_4_in_kraft_mode(services):
    image = services["kafka"]["image"]
    repository, _, tag = image.partition(":")
    assert repository == "apache/kafka"
    assert re.fullmatch(r"4\.\d+\.\d+", tag), f"want a pinned Kafka 4.x tag, got {tag!r}"

    env = _kafka_env(services)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert [v.split("@", 1)[0] for v in voters] == [node_id]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://" in env["KAFKA_LISTENERS"]
    protocol_map = dict(
        p.split(":", 1) for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    listener_names = {item.split("://", 1)[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert listener_names <= set(protocol_map)
    assert not any("ZOOKEEPER" in name for name in env), "KRaft needs no ZooKeeper"


def test_kafka_is_a_usable_single_node(services):
    env = _kafka_env(services)
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[name] == "1", f"{name} must be 1 on a single broker"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    # Topics are created by the topics service, with the partitions the settings ask for.
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_kafka_healthcheck_asks_the_broker(services):
    test = services["kafka"]["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else test
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in command
    assert "--bootstrap-server localhost:9092" in command


def test_paygate_services_reach_kafka_on_its_advertised_listener(
    services, paygate_services, settings_for
):
    advertised = {
        urlsplit(listener).netloc
        for listener in _kafka_env(services)["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in ("topics", "consumer", "facade"):
        bootstrap = settings_for(paygate_services[name]).require_kafka()
        for server in bootstrap.split(","):
            assert server in advertised, f"{name}: {server} is not an advertised listener"
            assert server.split(":", 1)[0] in services, f"{name}: {server} is no service"


def test_consumer_and_facade_use_the_registry_service_once_it_answers(
    services, paygate_services, settings_for
):
    for name in ("consumer", "facade"):
        url = settings_for(paygate_services[name]).schema_registry_url
        assert url is not None, f"{name} has no PAYGATE_SCHEMA_REGISTRY_URL"
        parts = urlsplit(url)
        assert parts.path == "/apis/ccompat/v7", f"{name}: not the Confluent-compatible API"
        assert parts.hostname in services, f"{name}: {parts.hostname} is no service"
        assert "healthcheck" in services[parts.hostname]
        depends = paygate_services[name]["depends_on"][parts.hostname]
        assert depends == {"condition": "service_healthy"}


# ---- compose: PostgreSQL and the shared configuration ---------------------------------------


def test_postgres_has_a_healthcheck_and_a_volume(compose, services):
    postgres = services["postgres"]
    assert postgres["image"].partition(":")[0] == "postgres"
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (" ".join(test) if isinstance(test, list) else test)
    sources = set(_volume_mounts(postgres).values())
    assert sources & set(compose.get("volumes") or {}), "postgres data needs a named volume"


def test_consumer_and_facade_share_kafka_database_and_fingerprint_key(
    paygate_services, settings_for
):
    consumer = settings_for(paygate_services["consumer"])
    facade = settings_for(paygate_services["facade"])
    assert consumer.kafka_bootstrap_servers == facade.kafka_bootstrap_servers
    assert consumer.database_url == facade.database_url
    assert consumer.account_key == facade.account_key
    assert consumer.commands_topic == facade.commands_topic
    assert consumer.results_topic == facade.results_topic


def test_database_url_uses_asyncpg_on_the_postgres_service(
    services, paygate_services, settings_for
):
    url = settings_for(paygate_services["consumer"]).database_url
    engine = create_engine(url)  # no connection is made until one is used
    assert engine.dialect.name == "postgresql"
    assert engine.dialect.driver == "asyncpg"

    parsed = engine.url
    postgres_env = _environment(services["postgres"])
    assert parsed.host == "postgres"
    assert parsed.username == postgres_env["POSTGRES_USER"]
    assert parsed.password == postgres_env["POSTGRES_PASSWORD"]
    assert parsed.database == postgres_env["POSTGRES_DB"]


def test_fingerprint_key_is_set_from_the_environment(paygate_services):
    for name in ("consumer", "facade"):
        raw = paygate_services[name]["environment"]["PAYGATE_ACCOUNT_FINGERPRINT_KEY"]
        assert str(raw).startswith("${PAYGATE_ACCOUNT_FINGERPRINT_KEY"), (
            f"{name}: the fingerprint key must come from the operator's environment"
        )


def test_the_stack_is_explicitly_a_development_stack(paygate_services, settings_for):
    """Production (the default) refuses the sandbox, the self-signed certificate and the
    development key, so every service that production checks says development itself."""
    checked = {
        name: service
        for name, service in paygate_services.items()
        if cli.production_uses(_command(service)[0]) != Uses.NOTHING
    }
    assert {"acquirer", "consumer", "facade"} <= set(checked)
    for name, service in checked.items():
        assert _environment(service).get("PAYGATE_ENV") == "development", name
        settings = settings_for(service)
        assert settings.env is Environment.DEVELOPMENT
        assert unsafe_settings(settings, cli.production_uses(_command(service)[0])) == [], name


def test_the_stack_would_not_pass_for_production(paygate_services, settings_for):
    """Switched to production as it stands, each checked service refuses to start: the
    compose file is no production template, and its default key is the development one."""
    for name in ("acquirer", "consumer", "facade"):
        service = paygate_services[name]
        settings = settings_for(service).model_copy(update={"env": Environment.PRODUCTION})
        unsafe = unsafe_settings(settings, cli.production_uses(_command(service)[0]))
        assert unsafe, name
        if name != "acquirer":
            assert "PAYGATE_ACCOUNT_FINGERPRINT_KEY" in {item.setting for item in unsafe}


# ---- compose: the processes -----------------------------------------------------------------


def test_facade_publishes_its_https_port(paygate_services, settings_for):
    settings = settings_for(paygate_services["facade"])
    default_port = Settings.model_fields["http_port"].default
    assert settings.http_host == ALL_INTERFACES
    assert (default_port, settings.http_port) in _published_ports(paygate_services["facade"])


def test_facade_keeps_its_certificate_on_a_volume(compose, paygate_services, settings_for):
    facade = paygate_services["facade"]
    settings = settings_for(facade)
    source = _volume_mounts(facade).get(str(settings.tls_dir))
    assert source in (compose.get("volumes") or {}), "the certificate needs a named volume"


def test_consumer_uses_the_acquirer_service(paygate_services, settings_for):
    consumer = settings_for(paygate_services["consumer"])
    acquirer = settings_for(paygate_services["acquirer"])
    assert consumer.provider == "sandbox"
    target = urlsplit(consumer.sandbox_url)
    assert target.hostname == "acquirer"
    assert target.port == acquirer.acquirer_port
    assert acquirer.acquirer_host == ALL_INTERFACES
    assert consumer.metrics_host == ALL_INTERFACES


def test_acquirer_keeps_its_ledger_on_a_volume(compose, paygate_services, settings_for):
    acquirer = paygate_services["acquirer"]
    ledger_dir = str(settings_for(acquirer).acquirer_ledger.parent)
    source = _volume_mounts(acquirer).get(ledger_dir)
    assert source in (compose.get("volumes") or {}), "the ledger needs a named volume"


def test_alipay_pays_through_the_acquirers_simulator_with_shared_test_keys(
    compose, paygate_services, settings_for, tmp_path
):
    """The acquirer generates the Alipay test keys into a named volume that the consumer
    and the facade read once it is healthy; Alipay goes to its /gateway.do, and the
    simulator notifies the facade's endpoint."""
    from paygate.alipay_dev import ensure_dev_keys, with_dev_keys
    from paygate.notices import notification_wiring
    from paygate.providers import build_provider

    acquirer = settings_for(paygate_services["acquirer"])
    keys_dir = acquirer.alipay_dev_keys_dir
    assert keys_dir is not None
    source = _volume_mounts(paygate_services["acquirer"])[str(keys_dir)]
    assert source in (compose.get("volumes") or {}), "the keys need a named volume"
    facade = settings_for(paygate_services["facade"])
    consumer = settings_for(paygate_services["consumer"])
    for name, settings in (("consumer", consumer), ("facade", facade)):
        assert settings.alipay_dev_keys_dir == keys_dir, name
        assert _volume_mounts(paygate_services[name])[str(keys_dir)] == source, name
        assert "alipay" in settings.provider_names, name
        assert _depends_on(paygate_services[name]).get("acquirer") == "service_healthy", name
    assert "healthcheck" in paygate_services["acquirer"]

    gateway = urlsplit(consumer.alipay_gateway_url)
    assert (gateway.scheme, gateway.hostname, gateway.port, gateway.path) == (
        "http",
        "acquirer",
        acquirer.acquirer_port,
        "/gateway.do",
    )
    assert consumer.alipay_notify_url is not None
    notify = urlsplit(consumer.alipay_notify_url)
    assert (notify.scheme, notify.hostname, notify.port, notify.path) == (
        "https",
        "facade",
        facade.http_port,
        "/v1/notifications/alipay",
    )
    # With keys where the volume would hold them, both sides build what they need.
    ensure_dev_keys(tmp_path)
    here = consumer.model_copy(update={"alipay_dev_keys_dir": tmp_path})
    assert build_provider(here, "alipay").name == "alipay"
    readers, _sink = notification_wiring(
        facade.model_copy(update={"alipay_dev_keys_dir": tmp_path}),
        cast(Database, _NoDatabase()),
        PaymentMessages.bundled(),
    )
    assert set(readers) == {"alipay"}
    assert with_dev_keys(here).alipay_app_id is not None


class _NoDatabase:
    """notification_wiring reads ``payments``, ``refunds``, ``strays`` and ``writes`` from
    its database and nothing else."""

    payments = None
    refunds = None
    strays = None
    writes = None


def test_topics_run_once_before_consumer_and_facade(services, paygate_services):
    assert str(paygate_services["topics"].get("restart")) == "no"
    assert _depends_on(paygate_services["topics"]).get("kafka") == "service_healthy"
    for name in ("consumer", "facade"):
        deps = _depends_on(paygate_services[name])
        assert deps.get("topics") == "service_completed_successfully", name
        assert deps.get("kafka") == "service_healthy", name
        assert deps.get("postgres") == "service_healthy", name
    assert "acquirer" in _depends_on(paygate_services["consumer"])


def test_dependencies_exist_and_healthy_ones_have_healthchecks(services):
    for name, service in services.items():
        for dep, condition in _depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source in _volume_mounts(service).values():
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name}: volume {source} is not declared"


# ---- compose: monitoring --------------------------------------------------------------------

MONITORING = ROOT / "monitoring"


def _mounted(service: Mapping[str, Any], container_path: str) -> Path:
    """The file or folder of this repository mounted at ``container_path``."""
    source = _volume_mounts(service).get(container_path)
    assert source, f"nothing is mounted at {container_path}"
    return (ROOT / source).resolve()


def _ops_listener(service: Mapping[str, Any], settings: Settings) -> tuple[str, int] | None:
    """``(host, port)`` of the ops listener of a paygate service, None if it has none."""
    command = _command(service)[0]
    if command == "consumer":
        return settings.metrics_host, settings.metrics_port
    if command == "facade":
        return settings.facade_ops_host, settings.facade_ops_port
    return None


def _prometheus_config(services: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    config = yaml.safe_load(
        _mounted(services["prometheus"], "/etc/prometheus/prometheus.yml").read_text()
    )
    assert isinstance(config, dict)
    return config


def test_prometheus_scrapes_every_paygate_process_on_its_ops_listener(
    services, paygate_services, settings_for
):
    scraped = {
        target: job["job_name"]
        for job in _prometheus_config(services)["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    expected: dict[str, str] = {}
    for name, service in paygate_services.items():
        listener = _ops_listener(service, settings_for(service))
        if listener is None:
            continue
        host, port = listener
        assert host == ALL_INTERFACES, f"{name}: its ops listener must be reachable"
        assert str(port) in {str(p) for p in service.get("expose") or []}, name
        expected[f"{name}:{port}"] = f"paygate-{_command(service)[0]}"
    assert set(expected) == {"consumer:9102", "facade:9103"}
    assert expected.items() <= scraped.items()
    # The alert on unreachable targets matches these job names.
    alerts = (MONITORING / "alerts.yml").read_text()
    assert 'up{job=~"paygate-.*"}' in alerts


def test_prometheus_evaluates_the_alert_rules(services):
    prometheus = services["prometheus"]
    rule_files = _prometheus_config(services)["rule_files"]
    assert {_mounted(prometheus, path) for path in rule_files} == {MONITORING / "alerts.yml"}


def test_the_prometheus_config_passes_promtool(services, tmp_path):
    from tests.support.promql import run_promtool

    config = _prometheus_config(services)
    config["rule_files"] = [str(MONITORING / "alerts.yml")]  # the host path of the mount
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    done = run_promtool("check", "config", checked)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_is_provisioned_with_the_dashboard_and_the_prometheus_data_source(services):
    grafana = services["grafana"]
    provisioning = _mounted(grafana, "/etc/grafana/provisioning")
    assert provisioning == MONITORING / "grafana" / "provisioning"

    providers = yaml.safe_load((provisioning / "dashboards" / "paygate.yml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    mounted = {
        target: _mounted(grafana, target)
        for target in _volume_mounts(grafana)
        if target.startswith(folder + "/")
    }
    assert set(mounted.values()) == {MONITORING / "grafana" / "paygate.json"}

    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [source] = sources["datasources"]
    url = urlsplit(source["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert source["type"] == "prometheus"
    dashboard = json.loads((MONITORING / "grafana" / "paygate.json").read_text())
    [variable] = dashboard["templating"]["list"]
    assert variable["current"]["value"] == source["uid"]
    assert _depends_on(grafana).get("prometheus") == "service_started"


def test_monitoring_ui_ports_are_published_on_loopback_only(services):
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        entries = [str(e) for e in services[name].get("ports") or []]
        assert entries == [f"127.0.0.1:{port}:{port}"], name


# ---- the Dockerfile -------------------------------------------------------------------------


def test_dockerfile_builds_on_python_slim_in_stages():
    stages = _stages(_dockerfile_instructions())
    assert len(stages) >= 2, "build in a builder stage, run from a clean one"
    for stage in stages:
        image = stage[0][1].split()[0]
        assert image == "python:3.11-slim", f"base image {image}"
    runs = " ".join(rest for stage in stages for keyword, rest in stage if keyword == "RUN")
    assert re.search(r"pip install (\S+ )*\.(\s|$)", runs), "install the package itself"
    assert "[dev]" not in runs, "the image carries no dev extras"


def test_dockerfile_runs_paygate_as_a_non_root_user():
    final = _final_stage(_dockerfile_instructions())
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}

    entrypoints = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entrypoints
    assert _exec_form(entrypoints[-1]) == [_console_script()]
    commands = [rest for keyword, rest in final if keyword == "CMD"]
    assert commands
    assert _exec_form(commands[-1])[0] in paygate_subcommands()


def test_dockerfile_exposes_the_facade_port_and_sets_only_real_settings():
    final = _final_stage(_dockerfile_instructions())
    exposed = {
        int(port.split("/", 1)[0])
        for keyword, rest in final
        if keyword == "EXPOSE"
        for port in rest.split()
    }
    assert Settings.model_fields["http_port"].default in exposed
    for name in _dockerfile_env(final):
        if name.upper().startswith("PAYGATE_"):
            assert name.upper() in SETTING_ENV_NAMES, f"ENV {name} is not a paygate setting"
