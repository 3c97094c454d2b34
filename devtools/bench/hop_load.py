"""The hops bench's load: ``POST /v1/payments`` with ``Prefer: wait``, open loop.

Request i starts at ``start + i / rate`` in a task of its own, whatever the answers before
it are doing, so a slow answer never delays the next request (no coordinated omission):
the offered rate is the rate. The connection pool is unbounded for the same reason: a
pool limit would hold requests back in the client, where no hop could see it. How late
each task actually started (the client's own lag) is kept, so a report can say whether
the generator kept its schedule.

Every request is a new order (``{run}-{i}``), so a new payment, whose order id keys its
command and result records and finds its row in the store.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import aiohttp

from devtools.bench.rest_request import payment_body

NO_ANSWER = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """One request: its order, when it was sent and answered (epoch seconds, the marks the
    hops start and end on), how late it started (seconds), and its HTTP status."""

    order_id: str
    sent: float
    answered: float
    start_lag_s: float
    http_status: int

    @property
    def completed(self) -> bool:
        """200: the payment's final result came within the wait (a 202 did not)."""
        return self.http_status == 200


def _insecure_tls() -> ssl.SSLContext:
    # The stack's certificate is self-signed for development (vegeta runs -insecure too);
    # the handshake and the encryption still happen, only the chain is not checked.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def open_loop(
    url: str,
    api_key: str,
    *,
    run_id: str,
    rate_per_s: float,
    count: int,
    wait_s: int,
    timeout_s: float,
) -> list[Answer]:
    """Send ``count`` payments at ``rate_per_s``; every answer, in the order sent."""
    headers = {"Authorization": f"Bearer {api_key}", "Prefer": f"wait={wait_s}"}
    connector = aiohttp.TCPConnector(ssl=_insecure_tls(), limit=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int, due: float) -> Answer:
            order_id = f"{run_id}-{index}"
            start_lag_s = max(0.0, loop.time() - due)
            sent = time.time()
            try:
                async with session.post(
                    f"{url}/v1/payments", json=payment_body(order_id), headers=headers
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                return Answer(order_id, sent, time.time(), start_lag_s, NO_ANSWER)
            return Answer(order_id, sent, time.time(), start_lag_s, status)

        start = loop.time()
        tasks: list[asyncio.Task[Answer]] = []
        for index in range(count):
            due = start + index / rate_per_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, due)))
        return list(await asyncio.gather(*tasks))
