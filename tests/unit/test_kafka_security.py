"""The Kafka connection settings: what every client is given, and bad ones refused at start."""

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from devtools.kafka.certificates import LocalPki, make_local_pki
from paygate.kafka_security import KafkaSettingsError, kafka_client_options
from paygate.settings import Settings

pytestmark = pytest.mark.unit

BROKERS = "broker-1:9093,broker-2:9093"


def settings(**values: object) -> Settings:
    return Settings.model_validate({"KAFKA_BOOTSTRAP_SERVERS": BROKERS, **values})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return make_local_pki(tmp_path_factory.mktemp("pki"))


def problems_of(**values: object) -> list[str]:
    with pytest.raises(KafkaSettingsError) as refused:
        kafka_client_options(settings(**values))
    return refused.value.problems


def test_plaintext_by_default_is_just_the_brokers():
    assert kafka_client_options(settings()) == {
        "bootstrap_servers": BROKERS,
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_with_scram_and_a_password_file(pki: LocalPki, tmp_path: Path):
    secret = tmp_path / "password"
    secret.write_text("s3cret-from-a-mounted-file\n")  # as `echo` writes it
    options = kafka_client_options(
        settings(
            kafka_security_protocol="sasl_ssl",
            kafka_sasl_mechanism="scram-sha-512",
            kafka_sasl_username="paygate-consumer",
            kafka_sasl_password_file=secret,
            kafka_ssl_ca_file=pki.ca_file,
        )
    )
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": BROKERS,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "paygate-consumer",
        "sasl_plain_password": "s3cret-from-a-mounted-file",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1  # the given CA only, not the system's store


def test_mutual_tls_loads_the_client_certificate_and_hostname_check_can_be_off(pki: LocalPki):
    options = kafka_client_options(
        settings(
            kafka_security_protocol="SSL",
            kafka_ssl_ca_file=pki.ca_file,
            kafka_ssl_cert_file=pki.client_cert_file,
            kafka_ssl_key_file=pki.client_key_file,
            kafka_ssl_check_hostname=False,
        )
    )
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert not context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED  # the certificate is still verified
    assert "sasl_mechanism" not in options


def test_password_from_the_environment_is_accepted():
    options = kafka_client_options(
        settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        )
    )
    assert options["sasl_plain_password"] == "p"


def test_the_password_never_shows_in_the_options_repr_or_the_settings_repr(tmp_path: Path):
    values = {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": "u",
        "kafka_sasl_password": "hunter2-very-secret",
    }
    options = kafka_client_options(settings(**values))
    assert "hunter2" not in repr(options)
    assert "hunter2" not in str(options)
    assert "hunter2" not in repr(settings(**values))


def test_a_missing_ca_file_is_named():
    assert problems_of(kafka_security_protocol="SSL", kafka_ssl_ca_file="/nonexistent/ca.pem") == [
        "PAYGATE_KAFKA_SSL_CA_FILE=/nonexistent/ca.pem: no such file"
    ]


def test_a_ca_file_without_a_certificate_is_named(tmp_path: Path):
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    [problem] = problems_of(kafka_security_protocol="SSL", kafka_ssl_ca_file=junk)
    assert problem.startswith(f"PAYGATE_KAFKA_SSL_CA_FILE={junk} holds no usable certificate")


def test_an_unknown_mechanism_is_refused_naming_the_setting():
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="GSSAPI")


def test_an_unknown_protocol_is_refused_naming_the_setting():
    with pytest.raises(ValidationError, match="kafka_security_protocol"):
        settings(kafka_security_protocol="TLS")


def test_sasl_without_mechanism_user_or_password_lists_each_setting():
    problems = problems_of(kafka_security_protocol="SASL_SSL")
    assert [p.split(" ")[0] for p in problems] == [
        "PAYGATE_KAFKA_SASL_MECHANISM",
        "PAYGATE_KAFKA_SASL_USERNAME",
        "PAYGATE_KAFKA_SASL_PASSWORD_FILE",
    ]


def test_two_sources_of_one_password_are_refused(tmp_path: Path):
    secret = tmp_path / "password"
    secret.write_text("a")
    assert problems_of(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password="b",
        kafka_sasl_password_file=secret,
    ) == ["set PAYGATE_KAFKA_SASL_PASSWORD or PAYGATE_KAFKA_SASL_PASSWORD_FILE, not both"]


def test_an_empty_or_missing_password_file_is_named(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    login = {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": "u",
    }
    assert problems_of(**login, kafka_sasl_password_file=empty) == [
        f"PAYGATE_KAFKA_SASL_PASSWORD_FILE={empty} is empty"
    ]
    assert problems_of(**login, kafka_sasl_password_file=tmp_path / "absent") == [
        f"PAYGATE_KAFKA_SASL_PASSWORD_FILE={tmp_path / 'absent'}: no such file"
    ]


def test_a_client_certificate_without_its_key_is_refused(pki: LocalPki):
    assert problems_of(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=pki.ca_file,
        kafka_ssl_cert_file=pki.client_cert_file,
    ) == [
        "set both PAYGATE_KAFKA_SSL_CERT_FILE and PAYGATE_KAFKA_SSL_KEY_FILE (mutual TLS), "
        "or neither"
    ]


def test_a_key_that_does_not_match_the_certificate_is_named(pki: LocalPki, tmp_path: Path):
    other = make_local_pki(tmp_path / "other")
    [problem] = problems_of(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=pki.ca_file,
        kafka_ssl_cert_file=pki.client_cert_file,
        kafka_ssl_key_file=other.client_key_file,
    )
    assert problem.startswith(f"PAYGATE_KAFKA_SSL_CERT_FILE={pki.client_cert_file} and ")


def test_tls_or_sasl_settings_with_a_protocol_that_ignores_them_are_refused(pki: LocalPki):
    # A forgotten PAYGATE_KAFKA_SECURITY_PROTOCOL would otherwise connect in plaintext.
    assert problems_of(kafka_ssl_ca_file=pki.ca_file, kafka_sasl_username="u") == [
        "PAYGATE_KAFKA_SSL_CA_FILE is set, but PAYGATE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
        "uses no TLS",
        "PAYGATE_KAFKA_SASL_USERNAME is set, but PAYGATE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
        "does not log in with SASL",
    ]


def test_the_refusal_exits_non_zero_with_every_problem_in_its_message():
    with pytest.raises(SystemExit) as refused:
        kafka_client_options(settings(kafka_security_protocol="SASL_SSL"))
    message = str(refused.value.code)
    assert message.startswith("paygate cannot connect to Kafka with these settings:")
    assert "PAYGATE_KAFKA_SASL_MECHANISM" in message
    assert "PAYGATE_KAFKA_SASL_USERNAME" in message


async def test_the_login_check_gives_no_verdict_on_an_unreachable_broker():
    from paygate.kafka_login import check_kafka_login

    # Nobody listens on port 1: waiting for the broker is start_with_retry's business.
    await check_kafka_login({"bootstrap_servers": "127.0.0.1:1", "security_protocol": "PLAINTEXT"})


def test_a_broker_a_developer_tool_started_itself_is_reached_in_plaintext(pki: LocalPki):
    from paygate.kafka_security import on_local_broker

    company = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
        kafka_ssl_ca_file=pki.ca_file,
    )
    assert kafka_client_options(on_local_broker(company, "127.0.0.1:9092")) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
