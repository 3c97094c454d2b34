"""The e2e stack's handle and the HTTP helpers its tests share."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from paygate.settings import Environment, Settings
from tests.support.builders import PAYEE_IBAN
from tests.support.child_env import child_environment
from tests.support.processes import ServiceProcess


class Stack:
    """The running processes; two facades stand for instances behind a load balancer."""

    def __init__(
        self,
        url: str,
        cert: Path,
        processes: list[ServiceProcess],
        *,
        second_url: str,
        api_key: str,
        other_api_key: str,
    ) -> None:
        self.url = url
        self.second_url = second_url
        self.cert = cert
        self.processes = processes
        self.api_key = api_key
        # Another client's key, for isolation tests.
        self.other_api_key = other_api_key

    def session(
        self, url: str | None = None, *, with_key: bool = True, other_client: bool = False
    ) -> aiohttp.ClientSession:
        context = ssl.create_default_context(cafile=str(self.cert))
        key = self.other_api_key if other_client else self.api_key
        headers = {"Authorization": f"Bearer {key}"} if with_key else {}
        return aiohttp.ClientSession(
            base_url=url or self.url, connector=aiohttp.TCPConnector(ssl=context), headers=headers
        )


def isolated_settings(
    kafka_bootstrap: str, work: Path, database_url: str, prefix: str, **overrides: Any
) -> Settings:
    """Settings for one stack of processes: its own topics and group on the shared broker,
    its own certificate, ledger and ports (0: any free port), plus ``overrides``.

    In development mode: the processes run on the sandbox, a self-signed certificate and
    the development fingerprint key, which production refuses to start with.
    """
    suffix = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "env": Environment.DEVELOPMENT,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "commands_topic": f"{prefix}.commands.{suffix}",
        "results_topic": f"{prefix}.results.{suffix}",
        "dlq_topic": f"{prefix}.dlq.{suffix}",
        "consumer_group": f"{prefix}-{suffix}",
        "database_url": database_url,
        "tls_dir": work / "tls",
        "http_port": 0,
        "acquirer_port": 0,
        "acquirer_ledger": work / "ledger.db",
        "metrics_port": 0,
        # Two facades run side by side: each ops listener on a port of its own.
        "facade_ops_port": 0,
        "provider_timeout_s": 5,
    }
    fields.update(overrides)
    return Settings(**fields)


def create_api_key(env: dict[str, str], client: str) -> str:
    """A key for the stack, issued the way an operator would: ``paygate apikey create``."""
    done = subprocess.run(
        [sys.executable, "-m", "paygate.cli", "apikey", "create", "--client", client],
        env=child_environment(env),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    api_key: str = json.loads(done.stdout)["apiKey"]
    return api_key


def payment_body(card: str) -> dict[str, object]:
    return {
        "userId": "user-e2e",
        "orderId": f"order-{uuid.uuid4().hex[:12]}",
        "amount": "25.00",
        "currency": "EUR",
        "paymentMethod": "card",
        "payerAccount": {"type": "card", "number": card},
        "payeeAccount": {"type": "iban", "number": PAYEE_IBAN},
    }


async def poll_final(session: aiohttp.ClientSession, payment_id: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(f"/v1/payments/{payment_id}") as response:
            if response.status == 200:
                body = await response.json()
                if body["status"] in ("succeeded", "failed"):
                    return body
            else:
                assert response.status == 404  # still queued
        await asyncio.sleep(0.1)
    raise AssertionError(f"{payment_id} was not final within {timeout_s}s")
