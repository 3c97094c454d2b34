"""``paygate dev``: the whole service on one machine, for trying it out.

Starts a local Kafka broker when ``KAFKA_BOOTSTRAP_SERVERS`` is unset, creates the topics,
then runs the sandbox acquirer (with Alipay's simulator, its test keys generated in
``.cache/alipay-dev``: paygate.alipay_dev), the HTTPS facade and the consumer in this
process, and prints a development API key (kept in ``.cache/dev-api-key``) for the curl
lines. It always runs with ``PAYGATE_ENV=development``: nothing in it is fit for production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import ssl
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from devtools.kafka import LocalKafka
from http_facade.notification_routes import NOTIFICATIONS_PATH
from http_facade.tls import ensure_self_signed_certificate
from paygate.acquirer_service import run_acquirer
from paygate.apikey_dev import DEV_KEY_FILE, ensure_dev_api_key
from paygate.consumer_service import ConsumerService
from paygate.facade_service import FacadeService
from paygate.kafka_security import on_local_broker
from paygate.ops_server import start_ops_server
from paygate.providers import build_providers
from paygate.settings import Environment, Settings
from paygate.topics import ensure_topics
from telemetry.metrics import Metrics

log = logging.getLogger("devtools.dev")

# Where `paygate dev` keeps the Alipay simulator's generated test keys (paygate.alipay_dev),
# unless PAYGATE_ALIPAY_DEV_KEYS_DIR says otherwise.
DEV_ALIPAY_KEYS_DIR: Final = Path(".cache/alipay-dev")
NOTIFY_PATH: Final = NOTIFICATIONS_PATH.format(provider="alipay")


async def run_dev(settings: Settings, stop: asyncio.Event) -> None:
    # The whole point of `paygate dev` is the development defaults (the sandbox, a
    # self-signed certificate, the development fingerprint and API keys).
    settings = settings.model_copy(update={"env": Environment.DEVELOPMENT})
    kafka: LocalKafka | None = None
    if not settings.kafka_bootstrap_servers:
        print("KAFKA_BOOTSTRAP_SERVERS is unset: starting a local Kafka broker ...", flush=True)
        kafka = LocalKafka(work_dir=Path(".cache/kafka-dev"))
        bootstrap = await asyncio.to_thread(kafka.start)
        settings = on_local_broker(settings, bootstrap)
    tasks: list[asyncio.Task[None]] = []
    try:
        await ensure_topics(settings)
        metrics = Metrics()
        settings = settings.model_copy(
            update={"alipay_dev_keys_dir": settings.alipay_dev_keys_dir or DEV_ALIPAY_KEYS_DIR}
        )
        acquirer_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        tasks.append(
            asyncio.create_task(
                run_acquirer(settings, stop, acquirer_ready, notify_ssl=_trusting_facade(settings))
            )
        )
        sandbox_url = await _started(acquirer_ready, tasks)
        settings = settings.model_copy(
            update={
                "sandbox_url": sandbox_url,
                "provider": "sandbox",
                "routes": {"alipay": ["alipay"]},
                "alipay_gateway_url": f"{sandbox_url}/gateway.do",
            }
        )
        # The facade first: the consumer sends its URL with every Alipay trade, for the
        # simulator's notifications.
        facade_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        tasks.append(asyncio.create_task(FacadeService(settings, metrics).run(stop, facade_ready)))
        url = await _started(facade_ready, tasks)
        settings = settings.model_copy(
            update={"alipay_notify_url": f"{_reachable(url)}{NOTIFY_PATH}"}
        )
        consumer = ConsumerService(settings, build_providers(settings, metrics), metrics)
        ops = await start_ops_server(
            metrics, consumer.readiness, settings.metrics_host, settings.metrics_port
        )
        tasks.append(asyncio.create_task(consumer.run(stop)))
        api_key = await ensure_dev_api_key(settings)
        _print_welcome(settings, url, sandbox_url, api_key)
        # Any part ending (a crash, or all of them after Ctrl-C) ends the whole stack.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(*tasks)
        await ops.cleanup()
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 30)
        if kafka is not None:
            await asyncio.to_thread(kafka.stop)


def _trusting_facade(settings: Settings) -> ssl.SSLContext:
    """A client context that trusts the facade's certificate (the self-signed one, made now
    if need be, unless one is configured), for the simulator's notifications."""
    if settings.tls_cert_file is not None:
        cert = settings.tls_cert_file
    else:
        cert, _key = ensure_self_signed_certificate(settings.tls_dir)
    return ssl.create_default_context(cafile=str(cert))


def _reachable(url: str) -> str:
    """``url`` with a wildcard bind address replaced by loopback, which the certificate names."""
    parts = urlsplit(url)
    if parts.hostname in {"0.0.0.0", "::"}:  # noqa: S104 - compared, not bound
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port}"))
    return url


async def _started(ready: asyncio.Future[str], tasks: list[asyncio.Task[None]]) -> str:
    """Wait for ``ready``; if a task ends first, raise what ended it instead of hanging."""
    waitables: list[asyncio.Future[object]] = [ready, *tasks]  # type: ignore[list-item]
    await asyncio.wait(waitables, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        return ready.result()
    for task in tasks:
        if task.done():
            task.result()  # re-raises the failure
    raise RuntimeError("a part of the stack stopped before it was ready")


def _print_welcome(settings: Settings, url: str, sandbox_url: str, api_key: str) -> None:
    cert = settings.tls_cert_file or settings.tls_dir / "localhost.crt"
    cacert = shlex.quote(str(cert))
    body = (
        '{"userId":"user-1","orderId":"order-1","amount":"10.50","currency":"EUR",'
        '"paymentMethod":"card","payerAccount":{"type":"card","number":"4242424242424242"},'
        '"payeeAccount":{"type":"iban","number":"DE89370400440532013000"}}'
    )
    alipay_body = (
        '{"userId":"user-1","orderId":"order-2","amount":"10.00","currency":"CNY",'
        '"paymentMethod":"alipay","payerAccount":{"type":"wallet","number":"2088102177846880"},'
        '"payeeAccount":{"type":"wallet","number":"2088621955183730"}}'
    )
    print(
        f"""PAYGATE_URL={url}
SANDBOX_URL={sandbox_url}

paygate is running.
  facade   {url}   (TLS; self-signed certificate at {cert})
  sandbox  {sandbox_url}   (the sandbox acquirer; Alipay's simulator at /gateway.do)
  metrics  http://{settings.metrics_host}:{settings.metrics_port}/metrics   (consumer)
           http://{settings.facade_ops_host}:{settings.facade_ops_port}/metrics   (facade)
  kafka    {settings.kafka_bootstrap_servers}
  api key  {api_key}   (client "dev"; also in {DEV_KEY_FILE})

Create a payment and wait up to 10 s for its result:
  export PAYGATE_API_KEY=$(cat {shlex.quote(str(DEV_KEY_FILE))})
  curl --cacert {cacert} -H "Authorization: Bearer $PAYGATE_API_KEY" \\
       -H 'Content-Type: application/json' -H 'Prefer: wait=10' \\
       -H 'Idempotency-Key: demo-1' -d '{body}' {url}/v1/payments

Query it (use the paymentRequestId from the answer):
  curl --cacert {cacert} -H "Authorization: Bearer $PAYGATE_API_KEY" \\
       {url}/v1/payments/<paymentRequestId>

Pay by Alipay: the answer is requires_action with a QR code (nextAction) ...
  curl --cacert {cacert} -H "Authorization: Bearer $PAYGATE_API_KEY" \\
       -H 'Content-Type: application/json' -H 'Prefer: wait=10' \\
       -H 'Idempotency-Key: demo-2' -d '{alipay_body}' {url}/v1/payments
... which the payer "scans": the simulator pays the trade and notifies paygate, and the
payment becomes succeeded (list the trades to find its outTradeNo):
  curl {sandbox_url}/alipay/admin/trades
  curl -X POST {sandbox_url}/alipay/admin/trades/<outTradeNo>/pay

Press Ctrl-C to stop.
""",
        flush=True,
    )
