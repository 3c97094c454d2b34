"""Which webhook endpoint URLs and addresses paygate may send to (server-side request
forgery).

A client chooses the URL, and paygate's dispatcher sends to it from inside the estate, so
an endpoint must not reach what only paygate can reach: private networks, loopback,
link-local addresses (the cloud metadata service at 169.254.169.254 among them), or any
other address that is not globally routable. Invariants:

* Outside development a URL must be ``https`` and every address its host resolves to must
  be global (:func:`address_refusal`); an IP literal is judged the same way.
* In development, ``http`` and loopback addresses are allowed, so tests and a laptop can
  run a receiver on 127.0.0.1; private and link-local addresses are still refused.
* The check is made when the endpoint is registered *and* on every delivery, on the
  addresses the connection will use (the dispatcher resolves, checks, and connects to what
  it checked), so a DNS answer that changes later (rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

MAX_URL_LENGTH: Final = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class EndpointUrl:
    url: str
    scheme: str
    host: str
    port: int


class UrlRefusedError(ValueError):
    """The URL (or an address it resolves to) may not be sent to; the message says why."""


def parse_endpoint_url(url: str, *, development: bool) -> EndpointUrl:
    """The URL's parts, if its form is acceptable; raises :class:`UrlRefusedError`."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefusedError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urlsplit's message quotes the bad port or host, which may be any text the client
        # sent (an account number too): the message names the parts to look at instead.
        raise UrlRefusedError(
            "the URL is malformed: look at its host, its port (a number from 0 to 65535) "
            "and its brackets"
        ) from None
    allowed = ("https", "http") if development else ("https",)
    if parts.scheme not in allowed:
        raise UrlRefusedError("the URL must use https")
    if parts.username is not None or parts.password is not None:
        raise UrlRefusedError("the URL may not carry credentials")
    if not parts.hostname:
        raise UrlRefusedError("the URL has no host")
    if parts.fragment:
        raise UrlRefusedError("the URL may not have a fragment")
    default_port = 443 if parts.scheme == "https" else 80
    return EndpointUrl(url, parts.scheme, parts.hostname, port or default_port)


def literal_address(host: str) -> IPAddress | None:
    """The host as an IP address, if it is one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_refusal(address: IPAddress, *, development: bool) -> str | None:
    """Why paygate may not connect to ``address``; None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:10.0.0.1 reaches 10.0.0.1: judge the address it maps to.
        return address_refusal(address.ipv4_mapped, development=development)
    if address.is_loopback:
        return None if development else f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address (cloud metadata lives there)"
    if address.is_private:
        return f"{address} is a private address"
    if not address.is_global or address.is_multicast:
        return f"{address} is not a globally routable unicast address"
    return None
