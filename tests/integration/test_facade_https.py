"""The facade served for real: TLS on a loopback port, a self-signed certificate, fakes for
Kafka and the payment store, and the real API-key store on SQLite.

What is proven here is the transport: HTTPS works end to end with a client that trusts only
that certificate, plain HTTP gets no HTTP answer, old TLS versions cannot connect, keys are
checked (401) and clients limited (429) on the wire, and a client that stalls or idles is
disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import ssl
import stat
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from prometheus_client import CollectorRegistry

from domain.accounts import AccountRef
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.idempotency import OrderPayment
from domain.money import Money
from domain.payment_view import PaymentView
from domain.payments import CreatePayment, payment_request_id_for
from domain.refund_view import RefundView
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from http_facade.app import build_app
from http_facade.rate_limit import TokenBuckets
from http_facade.server import PARSE_ERROR_BODY, run_facade
from http_facade.tls import ensure_self_signed_certificate, server_ssl_context
from http_facade.tls_reload import CertificateReloader, ReloadOutcome, reload_on_sighup
from persistence.api_key_store import ApiKeyStore
from persistence.engine import create_engine
from persistence.migrate import create_schema
from telemetry.metrics import Metrics
from tests.support.builders import SUCCESS_CARD
from tests.support.memory_vault import memory_vault
from tests.support.result_watch import WatchByWaiting, watch_by_waiting

pytestmark = pytest.mark.integration

BODY = {
    "userId": "user-1",
    "orderId": "order-https-1",
    "amount": "25.00",
    "currency": "EUR",
    "paymentMethod": "card",
    "payerAccount": {"type": "card", "number": SUCCESS_CARD},
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
            client_id=command.client_id,
            idempotency_key=command.idempotency_key,
            status=PaymentStatus.SUCCEEDED,
            amount=command.amount,
            payment_method=command.payment_method,
            payer=AccountRef(command.payer.type, command.payer.ref(b"k").masked, "f" * 64),
            payee=AccountRef(command.payee.type, command.payee.ref(b"k").masked, "e" * 64),
            provider="sandbox",
            provider_reference="sb_1",
            error=None,
            created_at=command.requested_at,
            updated_at=command.requested_at,
        )

    async def publish_refund(self, command: RefundPayment) -> None:
        raise AssertionError("these tests make no refunds")

    async def publish_capture(self, command: CapturePayment) -> None:
        raise AssertionError("these tests make no captures")

    async def publish_cancel(self, command: CancelPayment) -> None:
        raise AssertionError("these tests make no cancels")

    async def get_payment(self, payment_request_id: str) -> PaymentView | None:
        return self.payments.get(payment_request_id)

    async def payment_with_refunds(
        self, payment_request_id: str
    ) -> tuple[PaymentView, list[RefundView]] | None:
        view = self.payments.get(payment_request_id)
        return None if view is None else (view, [])  # these tests make no refunds

    async def order_payments(
        self, order_id: str, client_id: str | None = None
    ) -> list[OrderPayment]:
        return [
            OrderPayment(p.payment_request_id, p.idempotency_key, p.status, key_expired=False)
            for p in self.payments.values()
            if p.order_id == order_id and p.client_id == client_id
        ]

    async def client_order_page(
        self, client_id: str, order_id: str, *, limit: int, starting_after: str | None
    ) -> list[PaymentView]:
        raise AssertionError("these tests list no payments")


class NoRefunds:
    async def get(self, refund_id: str) -> RefundView | None:
        return None

    async def of_payments(self, payment_request_ids: Sequence[str]) -> dict[str, list[RefundView]]:
        return {pid: [] for pid in payment_request_ids}


class NeverFinal:
    async def wait_for_final(
        self, payment_request_id: str, timeout_s: float, *, refusal_event_id: str | None = None
    ) -> bool:
        return False

    def watch(
        self, payment_request_id: str, *, refusal_event_id: str | None = None
    ) -> contextlib.nullcontext[WatchByWaiting]:
        return watch_by_waiting(self.wait_for_final, payment_request_id)


@dataclass
class Served:
    port: int
    cert: Path
    key: Path
    store: RecordingStore
    keys: ApiKeyStore
    api_key: str
    # The listener's own context: what a certificate reload loads into.
    context: ssl.SSLContext

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def session(self) -> aiohttp.ClientSession:
        """A client that trusts the certificate and sends the key, as a real client would."""
        connector = aiohttp.TCPConnector(ssl=self.client_context())
        return aiohttp.ClientSession(connector=connector, headers=self.auth)

    async def open_raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TLS connection to write HTTP to by hand."""
        return await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.client_context(), server_hostname="localhost"
        )


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Starts facades; the defaults are production's, a test passes what it is about."""
    cert, key = ensure_self_signed_certificate(tmp_path / "tls")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    await create_schema(engine)
    keys = ApiKeyStore(engine)
    runners: list[web.AppRunner] = []

    async def start(
        *,
        rate_limiter: TokenBuckets | None = None,
        idle_timeout_s: float = 15.0,
        body_timeout_s: float = 15.0,
    ) -> Served:
        store = RecordingStore()
        app = build_app(
            publisher=store,
            queries=store,
            refunds=NoRefunds(),
            waiter=NeverFinal(),
            metrics=Metrics(CollectorRegistry()),
            account_key=b"facade-test-key",
            vault=memory_vault(b"facade-test-key"),
            # The store itself, uncached: a revoked key must fail on the very next request.
            authenticator=keys,
            rate_limiter=rate_limiter or TokenBuckets(rate_per_s=1000.0, burst=1000),
            body_timeout_s=body_timeout_s,
        )
        context = server_ssl_context(cert, key)
        runner = await run_facade(app, "127.0.0.1", 0, context, idle_timeout_s=idle_timeout_s)
        runners.append(runner)
        issued = await keys.create("client-https")
        return Served(runner.addresses[0][1], cert, key, store, keys, issued.api_key, context)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()
        await engine.dispose()


@pytest.fixture
async def served(serve: Serve) -> Served:
    return await serve()


async def test_post_then_get_over_https(served: Served) -> None:
    async with served.session() as session:
        async with session.post(
            f"{served.base}/v1/payments", json=BODY, headers={"Idempotency-Key": "k-1"}
        ) as created:
            assert created.status == 202
            accepted = await created.json()
            location = created.headers["Location"]
        payment_id = payment_request_id_for("order-https-1", "k-1", client_id="client-https")
        assert accepted["paymentRequestId"] == payment_id
        assert location == f"/v1/payments/{payment_id}"

        async with session.get(f"{served.base}{location}") as fetched:
            assert fetched.status == 200
            payment = await fetched.json()
            text = json.dumps(payment)
    assert payment["amount"] == "25.00"
    assert payment["payerAccount"] == {"type": "card", "number": "****4242"}
    assert SUCCESS_CARD not in text
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


# --- API keys and the rate limit, on the wire ---------------------------------------------


async def _unauthorized(served: Served, headers: dict[str, str]) -> None:
    connector = aiohttp.TCPConnector(ssl=served.client_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{served.base}/v1/payments", json=BODY, headers=headers) as response,
    ):
        assert response.status == 401
        body = await response.json()
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert body["error"]["code"] == "authentication_failed"
    assert body["error"]["category"] == "authentication"
    assert served.store.published == []


async def test_absent_key_is_401(served: Served) -> None:
    await _unauthorized(served, {})


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer pgk_0123456789abcdef_" + "0" * 64, id="unknown"),
        pytest.param("Bearer not-a-key", id="malformed"),
        pytest.param("Token {key}", id="wrong-scheme"),
        pytest.param("Bearer {key}0", id="wrong"),
    ],
)
async def test_bad_key_is_401(served: Served, authorization: str) -> None:
    await _unauthorized(served, {"Authorization": authorization.format(key=served.api_key)})


async def test_revoked_key_is_401_on_the_next_request(served: Served) -> None:
    async with served.session() as session, session.get(f"{served.base}/v1/payments/pay_x") as ok:
        assert ok.status == 404  # authenticated: the payment just does not exist
    key_id = served.api_key.split("_")[1]
    assert await served.keys.revoke(key_id) is not None
    await _unauthorized(served, served.auth)


async def test_the_key_never_reaches_the_logs(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    secret = served.api_key.rsplit("_", 1)[1]
    with caplog.at_level(logging.DEBUG):
        async with served.session() as session:
            async with session.post(
                f"{served.base}/v1/payments", json=BODY, headers={"Idempotency-Key": "k-log"}
            ) as created:
                assert created.status == 202
            async with session.get(
                f"{served.base}/v1/payments/pay_x",
                headers={"Authorization": f"Bearer {served.api_key}0"},
            ) as refused:
                assert refused.status == 401
    lines = [vars(r) for r in caplog.records if r.name == "paygate.http"]
    assert [(line["status"], line.get("client_id")) for line in lines] == [
        (202, "client-https"),
        (401, None),
    ]
    assert secret not in caplog.text
    assert secret not in json.dumps(lines, default=str)


async def test_over_the_rate_limit_is_429_with_retry_after(serve: Serve) -> None:
    # A bucket of two that refills once a minute: the third request is over the limit.
    served = await serve(rate_limiter=TokenBuckets(rate_per_s=1 / 60, burst=2))
    async with served.session() as session:
        for _ in range(2):
            async with session.get(f"{served.base}/v1/payments/pay_x") as response:
                assert response.status == 404
        async with session.get(f"{served.base}/v1/payments/pay_x") as response:
            assert response.status == 429
            body = await response.json()
            retry_after = response.headers["Retry-After"]
        async with session.get(f"{served.base}/healthz") as probe:
            assert probe.status == 200
    assert body["error"]["code"] == "rate_limited"
    assert retry_after.isdigit()
    assert int(retry_after) >= 1


# --- slow and idle clients are disconnected -----------------------------------------------

# How long a test waits for the server to hang up: ten times the bounds under test (1 s),
# so a slow machine does not fail the test; reaching it means the server never hung up
# (aiohttp's own default, over an hour, would; so would production's 15 s).
_HANG_UP_WITHIN_S = 10


async def _until_hang_up(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        async with asyncio.timeout(_HANG_UP_WITHIN_S):
            while chunk := await reader.read(65536):
                received += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass  # a close without TLS close_notify is a hang-up too
    return received


async def test_a_client_stalling_in_its_headers_is_disconnected(serve: Serve) -> None:
    served = await serve(idle_timeout_s=1.0)
    reader, writer = await served.open_raw()
    try:
        writer.write(b"GET /v1/payments/pay_x HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n")
        await writer.drain()
        assert await _until_hang_up(reader) == b""  # no answer: the request never completed
    finally:
        writer.close()


async def test_a_client_stalling_in_its_body_gets_408_and_is_disconnected(serve: Serve) -> None:
    served = await serve(body_timeout_s=1.0)
    reader, writer = await served.open_raw()
    try:
        writer.write(
            b"POST /v1/payments HTTP/1.1\r\nHost: localhost\r\n"
            b"Authorization: Bearer " + served.api_key.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
            b'{"userId": "u'
        )
        await writer.drain()
        answer = await _until_hang_up(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in answer
    assert b'"code": "request_timeout"' in answer
    assert served.store.published == []


async def test_an_idle_keep_alive_connection_is_closed(serve: Serve) -> None:
    served = await serve(idle_timeout_s=1.0)
    reader, writer = await served.open_raw()
    try:
        # One complete request on a keep-alive connection, then nothing.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        answer = await _until_hang_up(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" not in answer  # it was kept alive, then closed for idling


async def test_a_connection_that_never_sends_a_request_is_closed(serve: Serve) -> None:
    served = await serve(idle_timeout_s=1.0)
    reader, writer = await served.open_raw()
    try:
        assert await _until_hang_up(reader) == b""
    finally:
        writer.close()


# --- a renewed certificate is served without a restart ------------------------------------

# Bounded wait for the background reload; reaching it means the reload never happened.
_RELOAD_WITHIN_S = 10


def _fingerprint_of_file(cert: Path) -> str:
    return x509.load_pem_x509_certificate(cert.read_bytes()).fingerprint(hashes.SHA256()).hex()


def _fingerprint_of_peer(writer: asyncio.StreamWriter) -> str:
    ssl_object: ssl.SSLObject = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _renewed_pair(directory: Path) -> tuple[Path, Path]:
    """Another valid localhost pair (certificate B), made beside the served one."""
    return ensure_self_signed_certificate(directory)


def _install(cert: bytes, key: bytes, served: Served) -> None:
    """Put a pair in place the way renewal tools do: each file replaced whole."""
    for path, data in ((served.key, key), (served.cert, cert)):
        staged = path.with_name(path.name + ".new")
        staged.write_bytes(data)
        os.replace(staged, path)


async def _open_trusting(
    served: Served, *certs: Path
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = ssl.create_default_context(cadata="".join(c.read_text() for c in certs))
    return await asyncio.open_connection(
        "127.0.0.1", served.port, ssl=context, server_hostname="localhost"
    )


async def _get_healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One request on a kept-alive connection; the status line of its answer."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(_RELOAD_WITHIN_S):
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *([0-9]+)\r$", head)
        assert length is not None, head
        await reader.readexactly(int(length.group(1)))
    assert b"Connection: close" not in head
    return head.split(b"\r\n", 1)[0]


async def _until_reloaded(reloader: CertificateReloader, reloads: int) -> None:
    for _ in range(_RELOAD_WITHIN_S * 50):
        if reloader.reloads >= reloads:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no reload within {_RELOAD_WITHIN_S}s")


async def test_a_renewed_certificate_reaches_new_connections_and_spares_open_ones(
    served: Served, tmp_path: Path
) -> None:
    cert_a = _fingerprint_of_file(served.cert)
    renewed_cert, renewed_key = _renewed_pair(tmp_path / "renewed")
    cert_b = _fingerprint_of_file(renewed_cert)
    assert cert_a != cert_b

    async with CertificateReloader(
        served.context, served.cert, served.key, interval_s=3600
    ) as reloader:
        old_reader, old_writer = await _open_trusting(served, served.cert, renewed_cert)
        try:
            assert _fingerprint_of_peer(old_writer) == cert_a
            assert await _get_healthz(old_reader, old_writer) == b"HTTP/1.1 200 OK"

            _install(renewed_cert.read_bytes(), renewed_key.read_bytes(), served)
            assert await reloader.reload_if_changed() is ReloadOutcome.RELOADED
            assert await reloader.reload_if_changed() is ReloadOutcome.UNCHANGED

            new_reader, new_writer = await _open_trusting(served, served.cert, renewed_cert)
            try:
                assert _fingerprint_of_peer(new_writer) == cert_b
                assert await _get_healthz(new_reader, new_writer) == b"HTTP/1.1 200 OK"
            finally:
                new_writer.close()
            # The connection opened before the reload still answers, on certificate A.
            assert await _get_healthz(old_reader, old_writer) == b"HTTP/1.1 200 OK"
            assert _fingerprint_of_peer(old_writer) == cert_a
        finally:
            old_writer.close()

    # A client that trusts only the new certificate now connects.
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(renewed_cert)))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{served.base}/healthz") as response,
    ):
        assert response.status == 200


def _mismatched(served: Served, renewed: tuple[Path, Path]) -> tuple[bytes, bytes]:
    return renewed[0].read_bytes(), served.key.read_bytes()  # B's certificate, A's key


def _half_written_certificate(served: Served, renewed: tuple[Path, Path]) -> tuple[bytes, bytes]:
    cert = renewed[0].read_bytes()
    return cert[: len(cert) // 2], renewed[1].read_bytes()


def _half_written_key(served: Served, renewed: tuple[Path, Path]) -> tuple[bytes, bytes]:
    key = renewed[1].read_bytes()
    return renewed[0].read_bytes(), key[: len(key) // 2]


def _empty_files(served: Served, renewed: tuple[Path, Path]) -> tuple[bytes, bytes]:
    return b"", b""


@pytest.mark.parametrize(
    "bad_pair",
    [_mismatched, _half_written_certificate, _half_written_key, _empty_files],
    ids=["mismatched-key", "half-written-certificate", "half-written-key", "empty-files"],
)
async def test_a_pair_that_does_not_load_is_logged_and_the_old_certificate_kept(
    served: Served,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    bad_pair: Callable[[Served, tuple[Path, Path]], tuple[bytes, bytes]],
) -> None:
    cert_a = _fingerprint_of_file(served.cert)
    trusted_a = tmp_path / "a.crt"  # the served file is about to be overwritten
    trusted_a.write_bytes(served.cert.read_bytes())
    renewed = _renewed_pair(tmp_path / "renewed")
    secret_key_line = renewed[1].read_text().splitlines()[1]
    async with CertificateReloader(
        served.context, served.cert, served.key, interval_s=3600
    ) as reloader:
        _install(*bad_pair(served, renewed), served)
        with caplog.at_level(logging.INFO, logger="paygate.http.tls"):
            assert await reloader.reload_if_changed() is ReloadOutcome.REJECTED
            # The same bad files are not reported again at every check.
            assert await reloader.reload_if_changed() is ReloadOutcome.UNCHANGED
        reader, writer = await _open_trusting(served, trusted_a, renewed[0])
        try:
            assert _fingerprint_of_peer(writer) == cert_a
            assert await _get_healthz(reader, writer) == b"HTTP/1.1 200 OK"
        finally:
            writer.close()

        # Once the renewal is complete, it loads.
        _install(renewed[0].read_bytes(), renewed[1].read_bytes(), served)
        assert await reloader.reload_if_changed() is ReloadOutcome.RELOADED
        reader, writer = await _open_trusting(served, renewed[0])
        try:
            assert _fingerprint_of_peer(writer) == _fingerprint_of_file(renewed[0])
        finally:
            writer.close()
    refusals = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in refusals] == [
        "TLS certificate pair refused; keeping the current certificate"
    ]
    assert vars(refusals[0])["reason"]
    assert secret_key_line not in caplog.text


async def test_the_background_check_picks_up_a_renewal(served: Served, tmp_path: Path) -> None:
    renewed_cert, renewed_key = _renewed_pair(tmp_path / "renewed")
    async with CertificateReloader(
        served.context, served.cert, served.key, interval_s=0.05
    ) as reloader:
        assert reloader.reloads == 1  # the pair it started with
        _install(renewed_cert.read_bytes(), renewed_key.read_bytes(), served)
        await _until_reloaded(reloader, 2)
    _reader, writer = await _open_trusting(served, renewed_cert)
    try:
        assert _fingerprint_of_peer(writer) == _fingerprint_of_file(renewed_cert)
    finally:
        writer.close()


async def test_sighup_checks_at_once(served: Served, tmp_path: Path) -> None:
    renewed_cert, renewed_key = _renewed_pair(tmp_path / "renewed")
    # An interval no test waits for: only the signal can trigger this reload.
    async with CertificateReloader(
        served.context, served.cert, served.key, interval_s=3600
    ) as reloader:
        undo = reload_on_sighup(reloader)
        try:
            _install(renewed_cert.read_bytes(), renewed_key.read_bytes(), served)
            os.kill(os.getpid(), signal.SIGHUP)
            await _until_reloaded(reloader, 2)
        finally:
            undo()
    _reader, writer = await _open_trusting(served, renewed_cert)
    try:
        assert _fingerprint_of_peer(writer) == _fingerprint_of_file(renewed_cert)
    finally:
        writer.close()


# --- CR/LF in what a client sends never becomes a header of the answer --------------------

# Every header the facade may answer with; anything else would be one it did not earn.
_ANSWER_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "date",
        "server",
        "connection",
        "strict-transport-security",
        "cache-control",
        "x-content-type-options",
        "x-request-id",
        "location",
        "www-authenticate",
    }
)
_GENERATED_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_PAYMENT_LOCATION = re.compile(r"/v1/payments/pay_[0-9a-f]{32}")
_GENERATED = "generated"


@dataclass
class RawAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        assert len(values) <= 1, self.headers
        return values[0] if values else None


async def _send_raw(served: Served, request: bytes) -> RawAnswer:
    """Writes ``request`` as is (``{key}`` becomes the API key) and reads the one answer."""
    reader, writer = await served.open_raw()
    try:
        writer.write(request.replace(b"{key}", served.api_key.encode()))
        await writer.drain()
        received = await _until_hang_up(reader)
    finally:
        writer.close()
    head, separator, body = received.partition(b"\r\n\r\n")
    assert separator, received
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert re.fullmatch(r"HTTP/[0-9.]+ [0-9]{3} [A-Za-z ]+", status_line), status_line
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon, line
        assert re.fullmatch(r"[A-Za-z0-9-]+", name), line
        headers.append((name.lower(), value.strip()))
    answer = RawAnswer(int(status_line.split(" ")[1]), headers, body)
    # Exactly one answer: its declared length is all that came, nothing smuggled after it.
    assert answer.header("content-length") == str(len(body)), received
    return answer


def _assert_nothing_injected(answer: RawAnswer) -> None:
    names = {name for name, _ in answer.headers}
    assert names <= _ANSWER_HEADERS, names - _ANSWER_HEADERS
    for name, value in answer.headers:
        assert "cookie" not in value.lower(), (name, value)
        assert "x=1" not in value, (name, value)
    location = answer.header("location")
    assert location is None or _PAYMENT_LOCATION.fullmatch(location), location
    if answer.header("x-request-id") is None:
        # Answered by aiohttp's parser, not the application: plain text, never markup, so
        # the excerpt of the refused line it quotes cannot become a page.
        assert (answer.header("content-type") or "").startswith("text/plain")


_GET = b"GET %s HTTP/1.1\r\nHost: localhost\r\n%sConnection: close\r\n\r\n"
_AUTH = b"Authorization: Bearer {key}\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "request_id"),
    [
        # CR LF ends the header line: Set-Cookie is a request header of its own, which
        # nothing echoes; the plain request id before it is echoed as it is.
        pytest.param(
            _GET % (b"/healthz", b"X-Request-Id: a\r\nSet-Cookie: x=1\r\n"), 200, "a", id="crlf"
        ),
        pytest.param(
            _GET % (b"/healthz", b"X-Request-Id: a\rSet-Cookie: x=1\r\n"), 400, None, id="cr"
        ),
        pytest.param(
            _GET % (b"/healthz", b"X-Request-Id: a\nSet-Cookie: x=1\r\n"), 400, None, id="lf"
        ),
        pytest.param(
            _GET % (b"/healthz", b"X-Request-Id: a\r\n Set-Cookie: x=1\r\n"),
            400,
            None,
            id="obs-fold-space",
        ),
        pytest.param(
            _GET % (b"/healthz", b"X-Request-Id: a\r\n\tSet-Cookie: x=1\r\n"),
            400,
            None,
            id="obs-fold-tab",
        ),
        pytest.param(
            _GET % (b"/healthz", b"X-Request-Id: a%0d%0aSet-Cookie:%20x=1\r\n"),
            200,
            _GENERATED,
            id="percent-encoded-request-id",
        ),
        pytest.param(
            _GET % (b"/healthz", b"X-Request-Id: a\xc2\x85Set-Cookie: x=1\r\n"),
            200,
            _GENERATED,
            id="unicode-next-line-request-id",
        ),
        pytest.param(
            _GET % (b"/v1/payments/pay_x%0d%0aSet-Cookie:%20x=1", _AUTH),
            404,
            _GENERATED,
            id="percent-encoded-path",
        ),
        pytest.param(
            b"POST /v1/payments/pay_x%0d%0aSet-Cookie:%20x=1/refunds HTTP/1.1\r\n"
            b"Host: localhost\r\n" + _AUTH + b"Idempotency-Key: r-1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n"
            b"\r\n{}",
            404,
            _GENERATED,
            id="percent-encoded-refund-path",
        ),
        pytest.param(
            _GET % (b"/v1/payments/a\rSet-Cookie: x=1", _AUTH), 400, None, id="cr-in-path"
        ),
        # No version before the CR LF: whatever aiohttp makes of it, it is refused.
        pytest.param(
            _GET % (b"/v1/payments/a\r\nSet-Cookie: x=1", _AUTH),
            None,
            _GENERATED,
            id="crlf-in-path",
        ),
        pytest.param(
            b"POST /v1/payments HTTP/1.1\r\nHost: localhost\r\n"
            + _AUTH
            + b"Idempotency-Key: k\rSet-Cookie: x=1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
            400,
            None,
            id="cr-in-idempotency-key",
        ),
    ],
)
async def test_cr_lf_in_a_request_injects_no_header(
    served: Served, request_bytes: bytes, status: int | None, request_id: str | None
) -> None:
    answer = await _send_raw(served, request_bytes)
    if status is None:
        assert 400 <= answer.status < 500
    else:
        assert answer.status == status
    _assert_nothing_injected(answer)
    echoed = answer.header("x-request-id")
    if request_id == _GENERATED:
        assert echoed is not None
        assert _GENERATED_REQUEST_ID.fullmatch(echoed), echoed
    else:
        assert echoed == request_id
    assert served.store.published == []


async def test_an_encoded_crlf_idempotency_key_is_opaque_text(served: Served) -> None:
    """``%0d%0a`` is three printable characters each: a valid key, used as is and
    reflected nowhere; the Location is derived from it, not built from it."""
    key = "k%0d%0aSet-Cookie:%20x=1"
    body = json.dumps({**BODY, "orderId": "order-encoded-key"}).encode()
    answer = await _send_raw(
        served,
        b"POST /v1/payments HTTP/1.1\r\nHost: localhost\r\n"
        + _AUTH
        + b"Idempotency-Key: "
        + key.encode()
        + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body,
    )
    assert answer.status == 202, answer.body
    _assert_nothing_injected(answer)
    payment_id = payment_request_id_for("order-encoded-key", key, client_id="client-https")
    assert answer.header("location") == f"/v1/payments/{payment_id}"
    assert key.encode() not in answer.body
    assert [c.idempotency_key for c in served.store.published] == [key]


async def test_a_malformed_authorization_line_keeps_the_key_out_of_the_logs(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp refuses the line and logs the parser's message, which quotes it.
    secret = served.api_key.rsplit("_", 1)[1]
    with caplog.at_level(logging.DEBUG):
        answer = await _send_raw(
            served, _GET % (b"/v1/payments/pay_x", b"Authorization: Bearer {key}\rX: 1\r\n")
        )
    assert answer.status == 400
    _assert_nothing_injected(answer)
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r.getMessage() for r in refused] == ["malformed HTTP request refused: BadHttpMessage"]
    assert secret not in caplog.text
    assert all(r.exc_info is None for r in refused)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/payments/4242 4242 4242 4242 HTTP/1.1\r\nHost: localhost\r\n",
        b"GET /v1/payments?card=4242424242424242\x7f HTTP/1.1\r\nHost: localhost\r\n",
        b"GET /v1/payments HTTP/1.1\r\nHost: localhost\r\nX-Note: 4242424242424242\x01\r\n",
    ],
    ids=["spaces-in-the-path", "a-del-in-the-query", "a-control-in-a-header"],
)
async def test_a_request_aiohttp_cannot_parse_is_answered_without_quoting_it(
    served: Served, head: bytes
) -> None:
    # aiohttp's own 400 body is the parser's message, which quotes the line it refused:
    # a number typed into a URL went back out in clear.
    answer = await _send_raw(served, head + b"Connection: close\r\n\r\n")
    assert answer.status == 400
    assert answer.body == PARSE_ERROR_BODY.encode()
    assert b"4242" not in answer.body


async def _oversize_chunks() -> AsyncIterator[bytes]:
    # No Content-Length: the cap must hold for a body whose size is only known as it comes.
    for _ in range(17):
        yield b" " * 4096


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_an_oversize_body_is_413_and_publishes_nothing(
    served: Served, streamed: bool
) -> None:
    body: bytes | AsyncIterator[bytes] = (
        _oversize_chunks() if streamed else json.dumps({**BODY, "pad": "x" * 70_000}).encode()
    )
    async with (
        served.session() as session,
        session.post(
            f"{served.base}/v1/payments",
            data=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": "k-big"},
        ) as response,
    ):
        assert response.status == 413
        error = (await response.json())["error"]
    assert (error["code"], error["category"]) == ("request_too_large", "invalid_request")
    assert served.store.published == []
