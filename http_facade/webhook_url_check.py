"""The server-side-request-forgery check of an endpoint URL, made when it is registered.

The form of the URL and every address its host resolves to are judged by
:mod:`domain.webhook_urls`; a refusal is ``400 webhook_url_refused`` and nothing is
registered. The dispatcher makes the same check again on every delivery
(:mod:`producer.webhook_sender`), so what is checked here is a first answer to the client,
not the only guard.
"""

from __future__ import annotations

import asyncio
import socket

from domain.errors import ErrorCode, PaygateError
from domain.webhook_urls import (
    UrlRefusedError,
    address_refusal,
    literal_address,
    parse_endpoint_url,
)
from http_facade.ports import HostResolver

# A registration waits at most this long for DNS: a resolver that hangs must not hold the
# request (and its connection) for the system resolver's own timeouts.
RESOLVE_TIMEOUT_S = 5.0


async def resolve_host(host: str, port: int) -> list[str]:
    """The system resolver's answer for ``host`` (every address family)."""
    answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(answer[4][0]) for answer in answers]


class EndpointUrlCheck:
    def __init__(self, *, development: bool, resolver: HostResolver = resolve_host) -> None:
        self._development = development
        self._resolver = resolver

    async def check(self, url: str) -> str:
        """``url`` if paygate may send to it; raises ``webhook_url_refused`` otherwise."""
        try:
            target = parse_endpoint_url(url, development=self._development)
        except UrlRefusedError as exc:
            raise _refused(str(exc)) from None
        literal = literal_address(target.host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                answers = await asyncio.wait_for(
                    self._resolver(target.host, target.port), RESOLVE_TIMEOUT_S
                )
            except (OSError, TimeoutError, ValueError):
                # ValueError: a host IDNA cannot encode, or one the resolver refuses to ask.
                answers = []
            if not answers:
                raise _refused(f"the host {target.host} does not resolve (in time)")
            addresses = [a for a in map(literal_address, answers) if a is not None]
        for address in addresses:
            reason = address_refusal(address, development=self._development)
            if reason is not None:
                raise _refused(f"the host {target.host} is refused: {reason}")
        return url


def _refused(reason: str) -> PaygateError:
    return PaygateError(ErrorCode.WEBHOOK_URL_REFUSED, reason, param="url")
