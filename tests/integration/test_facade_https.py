"""The facade served for real: TLS on a loopback port, a self-signed certificate, the fakes.

What is proven here is the transport: HTTPS works end to end with a client that trusts only
that certificate, plain HTTP gets no HTTP answer, and old TLS versions cannot connect.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from prometheus_client import CollectorRegistry

from domain.accounts import AccountRef
from domain.commands import CreatePayment, payment_request_id_for
from domain.idempotency import OrderPayment
from domain.money import Money
from domain.payment import PaymentView
from domain.status import PaymentStatus
from http_facade.app import build_app
from http_facade.server import run_facade
from http_facade.tls import ensure_self_signed_certificate, server_ssl_context
from paygate.metrics import Metrics

pytestmark = pytest.mark.integration

CARD = "4242424242424242"
BODY = {
    "userId": "user-1",
    "orderId": "order-https-1",
    "amount": "25.00",
    "currency": "EUR",
    "paymentMethod": "card",
    "payerAccount": {"type": "card", "number": CARD},
    "payeeAccount": {"type": "bank_account", "number": "acct_merchant_0001"},
}


class RecordingStore:
    """Publisher and queries in one fake: a published command becomes a stored payment,
    the way the real pipeline would make it one a moment later."""

    def __init__(self) -> None:
        self.published: list[CreatePayment] = []
        self.payments: dict[str, PaymentView] = {}

    async def publish_create_payment(self, command: CreatePayment) -> None:
        self.published.append(command)
        self.payments[command.payment_request_id] = PaymentView(
            payment_request_id=command.payment_request_id,
            order_id=command.order_id,
            user_id=command.user_id,
            idempotency_key=command.idempotency_key,
            status=PaymentStatus.SUCCEEDED,
            amount=command.amount,
            payment_method=command.payment_method,
            payer=AccountRef(command.payer.type, command.payer.masked, "f" * 64),
            payee=AccountRef(command.payee.type, command.payee.masked, "e" * 64),
            provider="sandbox",
            provider_reference="sb_1",
            error=None,
            created_at=command.requested_at,
            updated_at=command.requested_at,
        )

    async def get_payment(self, payment_request_id: str) -> PaymentView | None:
        return self.payments.get(payment_request_id)

    async def order_payments(self, order_id: str) -> list[OrderPayment]:
        return [
            OrderPayment(p.payment_request_id, p.idempotency_key, p.status, key_expired=False)
            for p in self.payments.values()
            if p.order_id == order_id
        ]


class NeverFinal:
    async def wait_for_final(self, payment_request_id: str, timeout_s: float) -> bool:
        return False


@dataclass
class Served:
    port: int
    cert: Path
    key: Path
    store: RecordingStore

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    cert, key = ensure_self_signed_certificate(tmp_path / "tls")
    store = RecordingStore()
    app = build_app(
        publisher=store,
        queries=store,
        waiter=NeverFinal(),
        metrics=Metrics(CollectorRegistry()),
        account_key=b"facade-test-key",
    )
    runner = await run_facade(app, "127.0.0.1", 0, server_ssl_context(cert, key))
    try:
        port = runner.addresses[0][1]
        yield Served(port, cert, key, store)
    finally:
        await runner.cleanup()


async def test_post_then_get_over_https(served: Served) -> None:
    connector = aiohttp.TCPConnector(ssl=served.client_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            f"{served.base}/v1/payments", json=BODY, headers={"Idempotency-Key": "k-1"}
        ) as created:
            assert created.status == 202
            accepted = await created.json()
            location = created.headers["Location"]
        payment_id = payment_request_id_for("order-https-1", "k-1")
        assert accepted["paymentRequestId"] == payment_id
        assert location == f"/v1/payments/{payment_id}"

        async with session.get(f"{served.base}{location}") as fetched:
            assert fetched.status == 200
            payment = await fetched.json()
            text = json.dumps(payment)
    assert payment["amount"] == "25.00"
    assert payment["payerAccount"] == {"type": "card", "number": "****4242"}
    assert CARD not in text
    assert [c.amount for c in served.store.published] == [Money(2500, "EUR")]


async def test_localhost_name_is_valid_too(served: Served) -> None:
    connector = aiohttp.TCPConnector(ssl=served.client_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"https://localhost:{served.port}/healthz") as response,
    ):
        assert response.status == 200


async def test_untrusting_client_is_refused(served: Served) -> None:
    # The system trust store does not know the self-signed certificate.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{served.base}/healthz")


async def test_plain_http_gets_no_http_answer(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"http://127.0.0.1:{served.port}/healthz")

    # The same at the byte level: whatever comes back (nothing, or a TLS alert record)
    # is not an HTTP status line.
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=10)
        except ConnectionResetError:
            answer = b""
    finally:
        writer.close()
    assert not answer.startswith(b"HTTP/")
    assert served.store.published == []


@pytest.mark.parametrize(
    "client_ciphers",
    [
        pytest.param(None, id="client-default-policy"),
        # Security level 0 lets this OpenSSL really offer TLS 1.1, so the refusal
        # proven is the server's, not the client's own.
        pytest.param("DEFAULT:@SECLEVEL=0", id="client-offers-tls1.1"),
    ],
)
async def test_tls_1_1_client_cannot_connect(served: Served, client_ciphers: str | None) -> None:
    context = served.client_context()
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1 itself; that is the point of this test.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    if client_ciphers is not None:
        context.set_ciphers(client_ciphers)
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
            await session.get(f"{served.base}/healthz")
    assert served.store.published == []


async def test_tls_1_2_client_connects_with_a_modern_suite(served: Served) -> None:
    context = served.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", served.port, ssl=context, server_hostname="localhost"
    )
    try:
        ssl_object: Any = writer.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.2"
        cipher_name = ssl_object.cipher()[0]
        assert cipher_name.startswith("ECDHE-")
        assert "GCM" in cipher_name or "CHACHA20" in cipher_name
        assert ssl_object.selected_alpn_protocol() in (None, "http/1.1")
    finally:
        writer.close()
        await writer.wait_closed()


def test_certificate_is_made_once_and_reused(tmp_path: Path) -> None:
    cert, key = ensure_self_signed_certificate(tmp_path)
    first = (cert.read_bytes(), key.read_bytes())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    again = ensure_self_signed_certificate(tmp_path)
    assert again == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == first


def test_certificate_names_localhost_and_loopback(tmp_path: Path) -> None:
    cert, _ = ensure_self_signed_certificate(tmp_path)
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(days=365) <= lifetime <= timedelta(days=366)


def test_certificate_near_expiry_is_replaced(tmp_path: Path) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=400)
    cert, key = ensure_self_signed_certificate(tmp_path, now=long_ago)
    stale = cert.read_bytes()
    ensure_self_signed_certificate(tmp_path)
    assert cert.read_bytes() != stale
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    assert certificate.not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_mismatched_pair_is_replaced(tmp_path: Path) -> None:
    cert, key = ensure_self_signed_certificate(tmp_path)
    other = tmp_path / "other"
    other_cert, _ = ensure_self_signed_certificate(other)
    cert.write_bytes(other_cert.read_bytes())  # a key beside someone else's certificate
    ensure_self_signed_certificate(tmp_path)
    server_ssl_context(cert, key)  # loads only if the pair matches


async def test_run_facade_refuses_to_serve_without_tls() -> None:
    app = web.Application()
    with pytest.raises(TypeError, match="HTTPS only"):
        await run_facade(app, "127.0.0.1", 0, None)  # type: ignore[arg-type]
