"""Alipay as a :class:`providers.port.PaymentProvider`, through the official SDK.

Every call is one ``gateway.do`` request built and RSA2-signed by the SDK, sent with aiohttp
(see providers.alipay.signing for why), and answered with a signature the SDK verifies
before anything is read. Each failure answers "could Alipay have acted?":

- could not connect: ProviderUnavailableError, nothing sent;
- no answer in time, connection lost after sending, HTTP 5xx, code 20000 (service
  unavailable), ``ACQ.SYSTEM_ERROR``, or an answer whose signature does not verify:
  outcome unknown (:class:`AlipayAnswerNotVerifiedError` for the last, a ProviderTimeoutError
  otherwise): ask again, never send blindly;
- codes 40001/40002/40006 (a malformed request, a wrong signature, no permission):
  :class:`AlipayRequestRejectedError`, nothing was done and resending cannot help;
- ``ACQ.TRADE_NOT_EXIST`` on a query: None, Alipay has no such trade;
- a precreate refused for the request itself (an amount above Alipay's limit, a forbidden
  word: ``transformers.TRADE_REFUSED_SUB_CODES``): a declined charge, no trade opened.

A charge is a trade whose ``out_trade_no`` is the attempt key, so a resend of the attempt is
the same trade (precreate answers the same QR code) and never a second one. It is answered
``requires_action``: a QR code (``alipay.trade.precreate``) or a redirect to the signed
cashier URL (``alipay.trade.page.pay``, no call: the payer's browser makes it), with the
trade's ``time_expire``. Alipay then notifies paygate (``notify_url``), and
``alipay.trade.query`` answers how it ended; ``alipay.trade.close`` ends it unpaid.
Captures do not exist for these products: Alipay captures at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import aiohttp
from alipay.aop.api.request.AlipayTradeCloseRequest import AlipayTradeCloseRequest
from alipay.aop.api.request.AlipayTradeFastpayRefundQueryRequest import (
    AlipayTradeFastpayRefundQueryRequest,
)
from alipay.aop.api.request.AlipayTradePagePayRequest import AlipayTradePagePayRequest
from alipay.aop.api.request.AlipayTradePrecreateRequest import AlipayTradePrecreateRequest
from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest
from alipay.aop.api.request.AlipayTradeRefundRequest import AlipayTradeRefundRequest

from domain.clock import utc_now
from domain.errors import ErrorCode
from domain.next_action import NextAction, NextActionType
from providers.alipay import transformers as t
from providers.alipay.config import AlipayConfig, AlipayMode
from providers.alipay.signing import AlipaySignatureError, AlipaySigner
from providers.errors import (
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    ProviderRefundStatus,
    RefundOutcome,
    RefundRequest,
)

_FORM: Final = "application/x-www-form-urlencoded;charset=utf-8"


class AlipayRequestRejectedError(ProviderError):
    """Alipay refused the request itself (malformed, wrongly signed): nothing was done."""

    code = ErrorCode.INTERNAL_ERROR


class AlipayAnswerNotVerifiedError(ProviderTimeoutError):
    """An answer whose signature does not verify: it cannot be believed, and the request
    may have been acted on, so the outcome is unknown. Counted apart
    (``answer_unverified``): with a wrong Alipay public key every answer is one."""

    answer_unverified = True


@contextlib.contextmanager
def _translate(name: str) -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL) as e:
        raise ProviderUnavailableError(name, f"could not connect ({type(e).__name__})") from e
    except TimeoutError as exc:
        raise ProviderTimeoutError(name, "Alipay did not answer in time; outcome unknown") from exc
    except aiohttp.ClientError as exc:
        raise ProviderTimeoutError(
            name, f"connection failed after sending ({type(exc).__name__}); outcome unknown"
        ) from exc


class AlipayProvider:
    def __init__(self, config: AlipayConfig, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._config = config
        self._signer = AlipaySigner(config)
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def idempotency_window(self) -> timedelta | None:
        # Alipay's key is the trade's out_trade_no, unique per merchant for good: a trade
        # created again under it is refused (even when closed), never made twice. Refunds
        # go by out_request_no within their trade, kept as long as the trade.
        return None

    @property
    def status_search_lag(self) -> timedelta:
        # charge_status is alipay.trade.query by out_trade_no: a lookup of the trade itself
        # (the record the payment is made on), not a search index, so a paid trade answers
        # paid at once.
        return timedelta(0)

    @property
    def refund_status_lag(self) -> timedelta:
        # refund_status is alipay.trade.fastpay.refund.query by out_request_no within the
        # trade: a lookup of the refund's own record, not a search index.
        return timedelta(0)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> AlipayProvider:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- charges --------------------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        if not request.capture:
            raise UnsupportedOperationError(self.name, "Alipay trades are captured at once")
        t.yuan(request.amount)  # raises PaygateError (not CNY) before any call
        expires_at, expires = t.time_expire(self._clock(), self._config.action_ttl_s)
        subject = request.metadata.get("subject") or f"Payment {request.payment_request_id}"
        if self._config.mode is AlipayMode.PAGE:
            page = AlipayTradePagePayRequest()
            page.biz_content = _content(
                t.trade_content(
                    request.attempt_key, request.amount, subject, expires, "FAST_INSTANT_TRADE_PAY"
                )
            )
            page.notify_url = self._config.notify_url
            page.return_url = self._config.return_url
            url = self._signer.page_url(page)
            action = NextAction.of(NextActionType.REDIRECT_URL, url, expires_at)
            return ChargeOutcome(ChargeStatus.REQUIRES_ACTION, None, next_action=action)
        precreate = AlipayTradePrecreateRequest()
        precreate.biz_content = _content(
            t.trade_content(
                request.attempt_key, request.amount, subject, expires, "FACE_TO_FACE_PAYMENT"
            )
        )
        precreate.notify_url = self._config.notify_url
        answer = await self._call(precreate, "alipay_trade_precreate_response")
        if answer.get("code") != t.SUCCESS:
            refused = t.trade_refused(answer)  # no trade opened, and none ever will be
            if refused is not None:
                return refused
            raise self._unsuccessful(answer, "precreate")
        try:
            action = t.qr_action(answer.get("qr_code"), expires_at)
        except ValueError as exc:
            raise ProviderTimeoutError(self.name, f"unreadable precreate answer: {exc}") from exc
        return ChargeOutcome(ChargeStatus.REQUIRES_ACTION, None, next_action=action)

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        return await self._query({"out_trade_no": attempt_key})

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        return await self._query({"trade_no": provider_reference})

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        close = AlipayTradeCloseRequest()
        close.biz_content = _content({"out_trade_no": attempt_key})
        answer = await self._call(close, "alipay_trade_close_response")
        if answer.get("code") == t.SUCCESS:
            return ChargeOutcome(ChargeStatus.EXPIRED, _str(answer.get("trade_no")))
        if answer.get("sub_code") == t.TRADE_NOT_EXIST:
            # Nobody opened the action, and the trade's time_expire has passed (paygate
            # closes only then): Alipay will take no payment under this key.
            return ChargeOutcome(ChargeStatus.EXPIRED, None)
        if answer.get("sub_code") == "ACQ.TRADE_STATUS_ERROR":
            known = await self.charge_status(attempt_key)  # paid (or closed) meanwhile
            if known is None:
                # A trade too far on to close, yet no trade: the answers disagree, and None
                # would say Alipay never received the charge.
                raise ProviderTimeoutError(
                    self.name, "close answered a trade status error, the query no trade"
                )
            return known
        raise self._unsuccessful(answer, "close")

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        raise UnsupportedOperationError(self.name, "Alipay trades are captured at once")

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        # No Alipay trade is ever only authorized (capture false is refused above), so there
        # is no hold to void; alipay.trade.close ends an unpaid trade, which is close_charge.
        raise UnsupportedOperationError(self.name, "Alipay trades are captured at once")

    async def _query(self, key: dict[str, str]) -> ChargeOutcome | None:
        query = AlipayTradeQueryRequest()
        query.biz_content = _content(key)
        answer = await self._call(query, "alipay_trade_query_response")
        if answer.get("code") != t.SUCCESS:
            if answer.get("sub_code") == t.TRADE_NOT_EXIST:
                return None
            raise self._unsuccessful(answer, "query")
        try:
            return t.charge_outcome(answer, None)
        except ValueError as exc:
            raise ProviderTimeoutError(self.name, f"unreadable query answer: {exc}") from exc

    # -- refunds --------------------------------------------------------------------------

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        refund = AlipayTradeRefundRequest()
        refund.biz_content = _content(
            {
                "trade_no": request.charge_reference,
                "refund_amount": t.yuan(request.amount),
                # Alipay's idempotency key for refunds of one trade.
                "out_request_no": request.refund_key,
                "refund_reason": None if request.reason is None else request.reason.value,
            }
        )
        answer = await self._call(refund, "alipay_trade_refund_response")
        if answer.get("code") == t.SUCCESS:
            if answer.get("fund_change") == t.FUND_MOVED:
                return t.refund_outcome(answer, request.refund_key)
            # Code 10000 says only that the call went through: without fund_change Y (a
            # repeat of a refund made before, or one not made yet) Alipay's refund query
            # says whether the refund was made.
            known = await self.refund_status(request.refund_key, request.charge_reference)
            if known is None:
                return RefundOutcome(ProviderRefundStatus.PENDING, None)
            return known
        if answer.get("code") == t.BUSINESS_FAILURE and (
            answer.get("sub_code") not in t.UNKNOWN_OUTCOME_SUB_CODES
        ):
            return t.refund_failure(answer)
        raise self._unsuccessful(answer, "refund")

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        query = AlipayTradeFastpayRefundQueryRequest()
        query.biz_content = _content({"trade_no": charge_reference, "out_request_no": refund_key})
        answer = await self._call(query, "alipay_trade_fastpay_refund_query_response")
        if answer.get("code") == t.SUCCESS:
            return t.refund_query_outcome(answer, refund_key)
        if answer.get("sub_code") == t.TRADE_NOT_EXIST:
            return None
        raise self._unsuccessful(answer, "refund query")

    # -- the gateway ----------------------------------------------------------------------

    async def _call(self, request: Any, response_name: str) -> dict[str, Any]:
        """Sign, send and verify one gateway request; the verified ``*_response`` object."""
        form = self._signer.signed_form(request)
        with _translate(self.name):
            async with self._client().post(
                self._config.gateway_url, data=form.encode(), headers={"Content-Type": _FORM}
            ) as resp:
                raw = await resp.read()
                status = resp.status
        if status >= 500:
            raise ProviderTimeoutError(self.name, f"HTTP {status}; outcome unknown")
        if status != 200:
            raise AlipayRequestRejectedError(self.name, f"HTTP {status}")
        try:
            return self._signer.verified_answer(raw)
        except AlipaySignatureError as exc:
            raise AlipayAnswerNotVerifiedError(
                self.name, f"{response_name}: {exc}; outcome unknown"
            ) from exc

    def _unsuccessful(self, answer: dict[str, Any], what: str) -> ProviderError:
        code = str(answer.get("code"))
        detail = f"{what}: {code} {answer.get('sub_code') or ''} {answer.get('sub_msg') or ''}"
        if code in t.REQUEST_REFUSED:
            return AlipayRequestRejectedError(self.name, f"request refused ({detail.strip()})")
        return ProviderTimeoutError(self.name, f"{detail.strip()}; outcome unknown")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AlipayProvider is not started: call start() first")
        return self._session


def _content(content: Mapping[str, object]) -> dict[str, object]:
    """biz_content for the SDK, which reads it into the method's model (and serialises it,
    keys sorted, when it signs)."""
    return {key: value for key, value in content.items() if value is not None}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
