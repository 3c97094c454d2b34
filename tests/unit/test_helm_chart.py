"""The Helm chart: it lints, renders valid Kubernetes objects, and wires paygate right.

``helm lint --strict`` and ``helm template`` run here (helm is go-installed by
scripts/with-test-services.sh); the rendered objects of built-in kinds are validated
against Kubernetes' schemas (kubernetes-validate, offline, strict: unknown fields fail).
The custom resources (ServiceMonitor, PrometheusRule) are checked against what they must
say: the PrometheusRule is monitoring/alerts.yml as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import AliasChoices

from paygate.settings import SECRETS_DIR_ENV, Settings
from tests.support.helm import CHART, render, run_helm
from tests.support.promql import run_promtool

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.30.0"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Settings that are secrets: they come from the mounted Secret, never from env values.
SECRET_SETTINGS = {
    "PAYGATE_DATABASE_URL",
    "PAYGATE_ACCOUNT_FINGERPRINT_KEY",
    "PAYGATE_STRIPE_API_KEY",
    "PAYGATE_STRIPE_WEBHOOK_SECRET",
}


def _setting_names() -> set[str]:
    names = {SECRETS_DIR_ENV}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        else:
            names.add(f"PAYGATE_{field_name.upper()}")
    return names


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def with_acquirer() -> list[dict[str, Any]]:
    return render("acquirer.enabled=true")


def one(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(deployment)["env"]}


def test_the_chart_lints() -> None:
    done = run_helm("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_built_in_object_is_valid_kubernetes(objects, with_acquirer) -> None:
    kinds = set()
    for document in objects + with_acquirer:
        kinds.add(document["kind"])
        if document["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "Job", *CUSTOM_KINDS}


def test_the_validator_refuses_what_kubernetes_would() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("component", "ops_setting"),
    [
        ("facade", "PAYGATE_FACADE_OPS_PORT"),
        ("consumer", "PAYGATE_METRICS_PORT"),
    ],
)
def test_probes_use_the_ops_listener(objects, component: str, ops_setting: str) -> None:
    deployment = one(objects, "Deployment", f"-{component}")
    main = container(deployment)
    assert main["args"] == [component]
    ops = next(p for p in main["ports"] if p["name"] == "ops")
    assert str(ops["containerPort"]) == env_of(deployment)[ops_setting]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert main["resources"]["requests"]["cpu"]
    assert main["resources"]["requests"]["memory"]


@pytest.mark.parametrize("component", ["facade", "consumer"])
def test_secrets_are_files_and_settings_are_real(objects, component: str) -> None:
    deployment = one(objects, "Deployment", f"-{component}")
    env = env_of(deployment)
    assert set(env) <= _setting_names(), sorted(set(env) - _setting_names())
    assert not SECRET_SETTINGS & set(env), "secrets come from the mounted Secret"
    assert all("valueFrom" not in item for item in container(deployment)["env"])
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert env[SECRETS_DIR_ENV] == mounts["secrets"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"]


def test_the_facade_serves_its_certificate_from_the_tls_secret(objects) -> None:
    facade = one(objects, "Deployment", "-facade")
    env = env_of(facade)
    mounts = {m["name"]: m["mountPath"] for m in container(facade)["volumeMounts"]}
    assert env["PAYGATE_TLS_CERT_FILE"] == f"{mounts['tls']}/tls.crt"
    assert env["PAYGATE_TLS_KEY_FILE"] == f"{mounts['tls']}/tls.key"


@pytest.mark.parametrize("component", ["facade", "consumer"])
def test_each_component_has_a_disruption_budget_over_its_pods(objects, component: str) -> None:
    deployment = one(objects, "Deployment", f"-{component}")
    budget = one(objects, "PodDisruptionBudget", f"-{component}")
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pods.items()


def test_the_service_monitor_scrapes_both_under_the_job_names_the_alerts_expect(objects):
    monitor = one(objects, "ServiceMonitor", "-paygate")
    job_label = monitor["spec"]["jobLabel"]
    scraped = {
        service["metadata"]["labels"][job_label]: service
        for service in objects
        if service["kind"] == "Service" and job_label in service["metadata"]["labels"]
    }
    assert set(scraped) == {"paygate-facade", "paygate-consumer"}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    for service in scraped.values():
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_the_prometheus_rule_is_the_repositorys_alert_file(objects, tmp_path) -> None:
    alerts = ROOT / "monitoring" / "alerts.yml"
    assert (CHART / "files" / "alerts.yml").read_text() == alerts.read_text(), (
        "copy monitoring/alerts.yml to deploy/helm/paygate/files/alerts.yml"
    )
    rule = one(objects, "PrometheusRule", "-paygate")
    assert rule["spec"] == yaml.safe_load(alerts.read_text())
    rendered = tmp_path / "rendered-rules.yml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    done = run_promtool("check", "rules", rendered)
    assert done.returncode == 0, done.stdout + done.stderr


def test_migrations_run_once_before_pods_roll(objects) -> None:
    job = one(objects, "Job", "-migrate")
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {
        "pre-install",
        "pre-upgrade",
    }
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["db", "upgrade"]


def test_the_sandbox_acquirer_is_opt_in_and_wired_when_enabled(objects, with_acquirer) -> None:
    assert not [o for o in objects if o["metadata"]["name"].endswith("-acquirer")]
    acquirer = one(with_acquirer, "Service", "-acquirer")
    consumer_env = env_of(one(with_acquirer, "Deployment", "-consumer"))
    port = acquirer["spec"]["ports"][0]["port"]
    assert consumer_env["PAYGATE_SANDBOX_URL"] == (f"http://{acquirer['metadata']['name']}:{port}")


# ---- the dev values: the sandbox and its Alipay simulator -----------------------------------

DEV_VALUES = CHART / "values-dev.yaml"


@pytest.fixture(scope="module")
def dev_objects() -> list[dict[str, Any]]:
    return render(values=(DEV_VALUES,))


def mounts_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}


def test_the_chart_lints_with_the_dev_values() -> None:
    done = run_helm("lint", "--strict", str(CHART), "--values", str(DEV_VALUES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alipay_simulator_is_off_by_default(objects, with_acquirer) -> None:
    for document in objects + with_acquirer:
        assert not document["metadata"]["name"].endswith("-alipay-dev-keys")
        if document["kind"] == "Deployment":
            assert "PAYGATE_ALIPAY_DEV_KEYS_DIR" not in env_of(document)
            assert "alipay-dev-keys" not in mounts_of(document)


def test_the_dev_values_render_valid_kubernetes(dev_objects) -> None:
    for document in dev_objects:
        if document["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_dev_values_pay_alipay_through_the_simulator_with_generated_keys(
    dev_objects, tmp_path, monkeypatch
) -> None:
    import base64

    from paygate.alipay_dev import ALIPAY_KEY_FILE, APP_KEY_FILE, with_dev_keys
    from paygate.production_checks import Uses, unsafe_settings
    from paygate.providers import build_provider
    from paygate.settings import Environment
    from providers.sandbox.alipay import Rsa2Keys

    secret = one(dev_objects, "Secret", "-alipay-dev-keys")
    assert set(secret["data"]) == {ALIPAY_KEY_FILE, APP_KEY_FILE}
    for name, encoded in secret["data"].items():
        Rsa2Keys.of_private(base64.b64decode(encoded).decode())  # a usable RSA key
        (tmp_path / name).write_bytes(base64.b64decode(encoded))

    # The acquirer, the consumer and the facade all read the same Secret at the same path.
    acquirer = one(dev_objects, "Deployment", "-acquirer")
    consumer = one(dev_objects, "Deployment", "-consumer")
    facade = one(dev_objects, "Deployment", "-facade")
    for deployment in (acquirer, consumer, facade):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["alipay-dev-keys"]["secret"]["secretName"] == secret["metadata"]["name"]
        directory = env_of(deployment)["PAYGATE_ALIPAY_DEV_KEYS_DIR"]
        assert mounts_of(deployment)["alipay-dev-keys"] == directory

    # The consumer's settings, with the Secret's files where the pod has them: Alipay goes
    # to the acquirer's /gateway.do, notifications come back to the facade's endpoint.
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"PAYGATE_{name.upper()}", raising=False)
    for name, value in env_of(consumer).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PAYGATE_ALIPAY_DEV_KEYS_DIR", str(tmp_path))
    monkeypatch.delenv(SECRETS_DIR_ENV)
    settings = Settings()
    assert settings.env is Environment.DEVELOPMENT
    assert settings.effective_routes["alipay"] == ["alipay"]
    service = one(dev_objects, "Service", "-acquirer")
    assert settings.alipay_gateway_url == (
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/gateway.do"
    )
    facade_service = one(dev_objects, "Service", "-facade")
    https = next(p for p in facade_service["spec"]["ports"] if p["name"] == "https")
    assert settings.alipay_notify_url == (
        f"https://{facade_service['metadata']['name']}:{https['port']}/v1/notifications/alipay"
    )
    assert build_provider(settings, "alipay").name == "alipay"
    assert with_dev_keys(settings).alipay_public_key == (
        Rsa2Keys.of_private((tmp_path / ALIPAY_KEY_FILE).read_text()).public_pem
    )
    # Switched to production, the consumer and the facade refuse the generated keys.
    production = settings.model_copy(update={"env": Environment.PRODUCTION})
    assert "PAYGATE_ALIPAY_DEV_KEYS_DIR" in {
        item.setting for item in unsafe_settings(production, Uses.PROVIDERS)
    }
    assert "PAYGATE_ALIPAY_DEV_KEYS_DIR" in {
        item.setting for item in unsafe_settings(production, Uses.NOTICES)
    }
