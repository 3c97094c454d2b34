"""The sandbox service over HTTP, as a :class:`providers.port.PaymentProvider`.

Every aiohttp exception and HTTP status is translated here, most specific first, into what
paygate can act on. Each mapping answers "could the sandbox have charged?":

- could not connect (refused, DNS, TLS, connect timeout): ProviderUnavailableError, not sent;
- 503: ProviderUnavailableError, the sandbox failed before processing, with its
  Retry-After (if any) as ``retry_after``;
- 429: ProviderRateLimitedError with Retry-After (both seconds or an HTTP-date, bounded:
  see :mod:`providers.retry_after`);
- no answer in time, connection lost after sending, another 5xx, or a 200 whose body cannot
  be read: ProviderTimeoutError, outcome unknown;
- 409: PaygateError(idempotency_conflict);
- 422 (a refund, capture or void the charge does not allow): PaygateError with the sandbox's
  catalogue code (refund_exceeds_captured, currency_mismatch, payment_not_refundable, ...);
  nothing was refunded or captured;
- another 4xx: SandboxRequestRejectedError, not charged and not worth resending;
- 200: a ChargeOutcome or RefundOutcome; a decline or failed refund carries its catalogue
  error.

Only 503 is the sandbox's documented "failed before processing". A 500, 502 or 504 may come
from a crash or a proxy after the charge was recorded, so it is treated like a timeout:
marking such a payment failed could hide a real charge.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Final, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from domain.errors import ErrorCode, PaygateError
from providers.errors import (
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    RefundOutcome,
    RefundRequest,
)
from providers.retry_after import parse_retry_after
from providers.sandbox.transformers import (
    PROVIDER_NAME,
    capture_body,
    charge_body,
    outcome_from_body,
    refund_body,
    refund_outcome_from_body,
)

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"

_T = TypeVar("_T")


class SandboxRequestRejectedError(ProviderError):
    """The sandbox refused the request as malformed (4xx): nothing charged, and sending the
    same request again cannot succeed, so it is neither retriable nor in doubt."""

    code = ErrorCode.INTERNAL_ERROR


@contextlib.contextmanager
def _translate_client_errors() -> Iterator[None]:
    try:
        yield
    except (
        aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake
        aiohttp.ConnectionTimeoutError,
        aiohttp.ServerFingerprintMismatch,
        aiohttp.InvalidURL,
        aiohttp.NonHttpUrlClientError,
    ) as exc:
        # Raised before a byte of the request left: certainly not charged.
        raise ProviderUnavailableError(
            PROVIDER_NAME, f"could not connect to the sandbox ({type(exc).__name__})"
        ) from exc
    except TimeoutError as exc:  # the total timeout, or aiohttp's socket read timeout
        raise ProviderTimeoutError(
            PROVIDER_NAME, "the sandbox did not answer in time; outcome unknown"
        ) from exc
    except aiohttp.ClientError as exc:
        raise ProviderTimeoutError(
            PROVIDER_NAME,
            f"the connection failed after the request was sent ({type(exc).__name__}); "
            "outcome unknown",
        ) from exc


def _error_detail(payload: object) -> Mapping[str, object]:
    error = payload.get("error") if isinstance(payload, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _error_summary(payload: object) -> str:
    """The sandbox's own error code and message; it never puts account numbers in them."""
    error = _error_detail(payload)
    if not error:
        return "no error detail"
    return f"{error.get('code')}: {error.get('message')}"


def _decode(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        return None


def _raise_for_status(status: int, headers: Mapping[str, str], payload: object) -> None:
    """Raise for every status but 200; the order goes from most to least specific."""
    if status == 200:
        return
    detail = f"HTTP {status} ({_error_summary(payload)})"
    if status == 409:
        raise PaygateError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "the idempotency key was already used with different parameters at the sandbox",
        )
    if status == 422:
        _raise_refusal(detail, payload)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        raise ProviderRateLimitedError(PROVIDER_NAME, detail, retry_after=retry_after)
    if status == 503:
        unavailable = ProviderUnavailableError(PROVIDER_NAME, detail)
        unavailable.retry_after = retry_after  # RFC 9110 lets a 503 say when to come back
        raise unavailable
    if status >= 500:
        raise ProviderTimeoutError(PROVIDER_NAME, f"{detail}; outcome unknown")
    raise SandboxRequestRejectedError(PROVIDER_NAME, f"request rejected: {detail}")


def _raise_refusal(detail: str, payload: object) -> None:
    """422: the sandbox refused a refund or capture before doing anything, with a catalogue
    code. Its message is the sandbox's own and never holds account data."""
    error = _error_detail(payload)
    try:
        code = ErrorCode(str(error.get("code")))
    except ValueError:
        raise SandboxRequestRejectedError(PROVIDER_NAME, f"request rejected: {detail}") from None
    param = error.get("param")
    raise PaygateError(
        code,
        str(error.get("message") or "the sandbox refused the request"),
        param=param if isinstance(param, str) else None,
    )


def _parsed(parse: Callable[[object], _T], payload: object) -> _T:
    try:
        return parse(payload)
    except ValueError as exc:
        # A 200 means the sandbox processed the call; we just cannot read how it went.
        raise ProviderTimeoutError(
            PROVIDER_NAME, f"unreadable answer from the sandbox ({exc}); outcome unknown"
        ) from exc


def _is_unknown(status: int, payload: object) -> bool:
    """Only the sandbox's own "not found" says it never received the thing; a bare 404 (a
    wrong base URL, a proxy) says nothing about it."""
    return status == 404 and _error_detail(payload).get("code") == ErrorCode.NOT_FOUND.value


class SandboxHttpProvider:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        connect_timeout_s: float | None = None,
        name: str = PROVIDER_NAME,
    ) -> None:
        # Another name (sandbox-2, ...) tells a second acquirer apart in routes and attempts.
        self._name = name
        self._base_url = URL(base_url)
        # A connect timeout shorter than the total lets a slow connect be told apart (not
        # sent, ProviderUnavailableError) from a slow answer (ProviderTimeoutError).
        connect = connect_timeout_s if connect_timeout_s is not None else timeout_s / 2
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect)
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def idempotency_window(self) -> timedelta | None:
        # The acquirer's ledger keys its charges and refunds by idempotency key and never
        # prunes them (providers.sandbox.ledger): a key is honoured for ever.
        return None

    @property
    def status_search_lag(self) -> timedelta:
        # charge_status reads the ledger row of the key, the row the charge itself writes
        # (providers.sandbox.ledger): read-your-writes.
        return timedelta(0)

    @property
    def refund_status_lag(self) -> timedelta:
        # refund_status reads the refund's own ledger row, as charge_status reads a charge's.
        return timedelta(0)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, raise_for_status=False)

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> SandboxHttpProvider:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        status, headers, payload = await self._send(
            "POST", ("v1", "charges"), body=charge_body(request), key=request.attempt_key
        )
        _raise_for_status(status, headers, payload)
        return _parsed(outcome_from_body, payload)

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        status, headers, payload = await self._send("GET", ("v1", "charges", attempt_key))
        if _is_unknown(status, payload):
            return None
        _raise_for_status(status, headers, payload)
        return _parsed(outcome_from_body, payload)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        path = ("v1", "charges", "by-id", provider_reference)
        status, headers, payload = await self._send("GET", path)
        if _is_unknown(status, payload):
            return None
        _raise_for_status(status, headers, payload)
        return _parsed(outcome_from_body, payload)

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        path = ("v1", "charges", request.charge_reference, "capture")
        status, headers, payload = await self._send(
            "POST", path, body=capture_body(request), key=request.capture_key
        )
        _raise_for_status(status, headers, payload)
        return _parsed(outcome_from_body, payload)

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        status, headers, payload = await self._send("POST", ("v1", "charges", attempt_key, "close"))
        if _is_unknown(status, payload):
            return None
        _raise_for_status(status, headers, payload)
        return _parsed(outcome_from_body, payload)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        path = ("v1", "charges", request.charge_reference, "cancel")
        status, headers, payload = await self._send("POST", path, body={}, key=request.cancel_key)
        _raise_for_status(status, headers, payload)
        return _parsed(outcome_from_body, payload)

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        status, headers, payload = await self._send(
            "POST", ("v1", "refunds"), body=refund_body(request), key=request.refund_key
        )
        _raise_for_status(status, headers, payload)
        return _parsed(refund_outcome_from_body, payload)

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        # The sandbox finds a refund by its key alone; charge_reference is for providers
        # that list refunds per charge (Stripe).
        status, headers, payload = await self._send("GET", ("v1", "refunds", refund_key))
        if _is_unknown(status, payload):
            return None
        _raise_for_status(status, headers, payload)
        return _parsed(refund_outcome_from_body, payload)

    async def _send(
        self,
        method: str,
        segments: tuple[str, ...],
        *,
        body: dict[str, object] | None = None,
        key: str | None = None,
    ) -> tuple[int, Mapping[str, str], object]:
        # Each segment is quoted with safe="" so that a "/" in a key or id stays inside it.
        path = "/".join(quote(segment, safe="") for segment in segments)
        url = self._base_url.joinpath(path, encoded=True)
        headers = {} if key is None else {IDEMPOTENCY_HEADER: key}
        with _translate_client_errors():
            async with self._client().request(
                method, url, json=body, headers=headers, allow_redirects=False
            ) as resp:
                payload = _decode(await resp.read())
                return resp.status, resp.headers, payload

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("SandboxHttpProvider is not started: call start() first")
        return self._session
