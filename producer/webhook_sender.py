"""Sends one signed webhook request (Standard Webhooks) to an endpoint, over aiohttp.

Every request carries ``webhook-id`` (the event's stable id), ``webhook-timestamp`` (when
this attempt was signed) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` of
``id.timestamp.body``, made by the ``standardwebhooks`` library with the endpoint's
secret). Invariants:

* **Addresses are checked where the connection is made.** The session's resolver
  (:class:`GuardedResolver`) resolves the host, refuses the whole answer if any address is
  not allowed (:func:`domain.webhook_urls.address_refusal`), and aiohttp connects only to
  the addresses it returned; an IP literal is checked before the request. DNS is not
  cached, so a host that starts resolving to a private address (rebinding) is refused on
  its next attempt.
* **Nothing waits longer than ``timeout_s``**, connection and answer included, and
  redirects are not followed (a 3xx is a failed attempt: following it would send the event
  wherever the receiver points, past the address check).
* The outcome is a value (:class:`SendOutcome`), never an exception: a receiver's fault
  must not look like paygate's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks import Webhook

from domain.clock import utc_now
from domain.webhook_urls import (
    UrlRefusedError,
    address_refusal,
    literal_address,
    parse_endpoint_url,
)

USER_AGENT: Final = "paygate-webhooks/1"


class AddressRefusedError(OSError):
    """The endpoint's host is, or resolves to, an address paygate may not send to."""


@dataclass(frozen=True, slots=True)
class SendOutcome:
    delivered: bool
    status_code: int | None
    error: str | None
    # The attempt was refused by the address policy (counted apart: it is not the
    # receiver being down, and retrying helps only if its DNS changes back).
    refused: bool = False


class GuardedResolver(AbstractResolver):
    """Resolves as ``inner`` does, then refuses an answer with any forbidden address."""

    def __init__(self, inner: AbstractResolver, *, development: bool) -> None:
        self._inner = inner
        self._development = development

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            address = literal_address(answer["host"])
            reason = (
                "unparsable address"
                if address is None
                else address_refusal(address, development=self._development)
            )
            if reason is not None:
                raise AddressRefusedError(f"{host} resolves to a refused address: {reason}")
        return answers

    async def close(self) -> None:
        await self._inner.close()


class WebhookSender:
    def __init__(
        self,
        *,
        development: bool,
        timeout_s: float = 10.0,
        resolver: AbstractResolver | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """``clock`` stamps and signs each attempt: receivers refuse a timestamp more than
        minutes away from theirs, so it is the wall clock, never a schedule's."""
        self._clock = clock
        self._development = development
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        resolver = GuardedResolver(
            self._resolver if self._resolver is not None else aiohttp.ThreadedResolver(),
            development=self._development,
        )
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers={"User-Agent": USER_AGENT}
        )

    async def stop(self) -> None:
        """Safe to call twice."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, *, url: str, secret: str, event_id: str, payload: str) -> SendOutcome:
        if self._session is None:
            raise RuntimeError("WebhookSender.start() was not called")
        try:
            target = parse_endpoint_url(url, development=self._development)
        except UrlRefusedError as exc:
            return SendOutcome(False, None, str(exc), refused=True)
        literal = literal_address(target.host)
        if literal is not None:
            reason = address_refusal(literal, development=self._development)
            if reason is not None:
                return SendOutcome(False, None, reason, refused=True)
        body = payload.encode()
        now = self._clock()
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(event_id, now, body),
        }
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefusedError) or _refused(exc):
                return SendOutcome(False, None, str(exc.os_error), refused=True)
            return SendOutcome(False, None, f"connection failed: {exc}")
        except TimeoutError:
            return SendOutcome(False, None, f"no answer within {self._timeout.total}s")
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            return SendOutcome(False, None, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return SendOutcome(True, status, None)
        return SendOutcome(False, status, f"the endpoint answered HTTP {status}")


def _refused(exc: BaseException) -> bool:
    cause: Any = exc.__cause__
    return isinstance(cause, AddressRefusedError)
