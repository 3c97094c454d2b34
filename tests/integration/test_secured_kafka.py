"""paygate against a secured broker: SASL_SSL with SCRAM and mutual TLS, as a company
cluster requires, and a refused login or certificate ending the start at once."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from domain.status import PaymentStatus
from http_facade.result_events import ResultRecord
from http_facade.result_feed import KafkaResultFeed
from paygate.kafka_login import KafkaLoginError, check_kafka_login
from paygate.kafka_security import kafka_client_options
from paygate.settings import Settings
from paygate.topics import ensure_topics
from producer.kafka_producer import KafkaProducer
from providers.sandbox import InProcessSandboxProvider
from schemas.payments import PaymentMessages
from tests.integration.conftest import SecureKafka
from tests.support.builders import encoded_command
from tests.support.child_env import child_environment
from tests.support.consumer_run import running_consumer
from tests.support.processes import environment_of

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()


def _isolated(tmp_path: Path, **connection: object) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return Settings.model_validate(
        {
            "env": "development",
            "commands_topic": f"secure.commands.{suffix}",
            "results_topic": f"secure.results.{suffix}",
            "dlq_topic": f"secure.commands.dlq.{suffix}",
            "consumer_group": f"secure-consumer-{suffix}",
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}",
            # The consumer a test starts binds no port another process may hold.
            "metrics_port": 0,
            "http_port": 0,
            "facade_ops_port": 0,
            "acquirer_port": 0,
            **connection,
        }
    )


def sasl_ssl_settings(
    kafka: SecureKafka, tmp_path: Path, *, password: str | None = None
) -> Settings:
    secret = tmp_path / "kafka-password"  # as a Kubernetes secret is mounted
    secret.write_text((password or kafka.user.password) + "\n")
    return _isolated(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=kafka.broker.sasl_ssl_bootstrap_servers,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=kafka.user.mechanism,
        kafka_sasl_username=kafka.user.name,
        kafka_sasl_password_file=secret,
        kafka_ssl_ca_file=kafka.pki.ca_file,
    )


def mtls_settings(kafka: SecureKafka, tmp_path: Path) -> Settings:
    return _isolated(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=kafka.broker.mtls_bootstrap_servers,
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=kafka.pki.ca_file,
        kafka_ssl_cert_file=kafka.pki.client_cert_file,
        kafka_ssl_key_file=kafka.pki.client_key_file,
    )


@pytest.mark.parametrize("listener", ["sasl_ssl", "mtls"])
async def test_a_payment_goes_end_to_end_over_the_secured_listener(
    secure_kafka: SecureKafka, tmp_path: Path, listener: str
):
    make = sasl_ssl_settings if listener == "sasl_ssl" else mtls_settings
    settings = make(secure_kafka, tmp_path)
    await ensure_topics(settings)  # `paygate topics`: the admin client
    kafka = kafka_client_options(settings)
    # The facade's two Kafka clients: the result feed and the command producer.
    feed = await KafkaResultFeed.open(kafka, settings.results_topic)
    try:
        key, value, record = encoded_command()
        async with KafkaProducer(kafka, client_id="paygate-facade") as producer:
            await producer.send_and_wait(settings.commands_topic, value, key=key.decode())
        # The consumer: its group consumer, and the outbox relay's producer.
        async with running_consumer(settings, InProcessSandboxProvider()):
            records: list[ResultRecord] = []
            deadline = time.monotonic() + 60
            while not records and time.monotonic() < deadline:
                records = list(await feed.next_batch())
    finally:
        await feed.close()
    assert len(records) == 1
    assert records[0].value is not None
    event = MESSAGES.decode_result(records[0].value)
    assert event.order_id == record["orderId"]
    assert event.status is PaymentStatus.SUCCEEDED


def test_a_wrong_password_ends_the_consumer_at_start_with_one_clear_message(
    secure_kafka: SecureKafka, tmp_path: Path
):
    settings = sasl_ssl_settings(secure_kafka, tmp_path, password="not-the-password")
    # A hot retry loop would outlive this bound (start-up retries last 120 s).
    finished = subprocess.run(
        [sys.executable, "-m", "paygate.cli", "consumer"],
        env=child_environment(environment_of(settings)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 1
    assert "refused the SASL login of user 'paygate-consumer' with SCRAM-SHA-512" in finished.stderr
    assert "PAYGATE_KAFKA_SASL_PASSWORD_FILE" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert "not-the-password" not in finished.stderr + finished.stdout


async def test_a_broker_certificate_from_another_ca_is_refused_naming_the_ca_setting(
    secure_kafka: SecureKafka, tmp_path: Path
):
    from devtools.kafka.certificates import make_local_pki

    stranger = make_local_pki(tmp_path / "other-ca")
    settings = sasl_ssl_settings(secure_kafka, tmp_path).model_copy(
        update={"kafka_ssl_ca_file": stranger.ca_file}
    )
    with pytest.raises(
        KafkaLoginError, match=r"CERTIFICATE_VERIFY_FAILED.*PAYGATE_KAFKA_SSL_CA_FILE"
    ):
        await check_kafka_login(kafka_client_options(settings))


async def test_mutual_tls_without_a_client_certificate_is_refused(
    secure_kafka: SecureKafka, tmp_path: Path
):
    settings = mtls_settings(secure_kafka, tmp_path).model_copy(
        update={"kafka_ssl_cert_file": None, "kafka_ssl_key_file": None}
    )
    with pytest.raises(KafkaLoginError, match="PAYGATE_KAFKA_SSL_CERT_FILE"):
        await check_kafka_login(kafka_client_options(settings))
