"""``gateway.do`` as Alipay's open API documents it, and the notifications Alipay sends.

Requests: form (or query) parameters ``app_id``, ``method``, ``charset``, ``sign_type``
(RSA2 only), ``timestamp``, ``version``, ``biz_content`` (JSON), optional ``notify_url``
and ``return_url``, and ``sign``: SHA256withRSA over every other parameter, sorted, as
``k=v&...``, checked against the app's public key. A missing or wrong signature is answered
``40002 isv.invalid-signature`` and changes nothing.

Answers: ``{"<method with _ for .>_response": {...}, "sign": "..."}``, the signature made
with the simulator's ("Alipay's") private key over the exact text of the response object,
as the SDK expects. Methods:

- ``alipay.trade.precreate``: opens the trade (``out_trade_no`` once per app: a resend
  answers the same trade and QR code), answers ``qr_code``; a total above 100,000,000.00
  yuan opens none (``ACQ.TOTAL_FEE_EXCEED``), and so does a ``precreate_system_error``
  amount (``ACQ.SYSTEM_ERROR``, every time);
- ``alipay.trade.page.pay``: a GET (or POST) from the payer's browser; opens the trade and
  answers an HTML cashier page;
- ``alipay.trade.query``: ``trade_status`` and amounts; ``ACQ.TRADE_NOT_EXIST``;
- ``alipay.trade.close``: closes an unpaid trade; ``ACQ.TRADE_STATUS_ERROR`` once paid;
- ``alipay.trade.refund``: once per ``out_request_no``, within what was paid; the refund
  that returns the rest closes the trade (``TRADE_CLOSED``, its payment date kept), which
  is notified;
- ``alipay.trade.fastpay.refund.query``: the refund of an ``out_request_no``; a request
  received and not made (``refund_not_made_at_first``) without ``refund_status``, as Alipay
  documents a refund not made, and made by the next call under the same ``out_request_no``.

A trade that is paid or closed is notified: a form POST to the trade's ``notify_url``,
signed over every parameter but ``sign`` and ``sign_type``, sent again (up to
``notify_attempts`` times) until the receiver answers exactly ``success``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
from aiohttp import web

from domain.clock import utc_now
from providers.sandbox.alipay import rsa2
from providers.sandbox.alipay.trades import (
    Refund,
    Trade,
    TradeBehaviour,
    Trades,
    TradeStatus,
    behaviour_for,
)

log = logging.getLogger("paygate.sandbox.alipay")

_BEIJING = timezone(timedelta(hours=8))  # Alipay speaks Beijing time
_TIME = "%Y-%m-%d %H:%M:%S"
SIMULATOR: web.AppKey[AlipaySimulator] = web.AppKey("alipay_simulator")
# Alipay's range of a trade's total_amount is [0.01, 100000000] yuan; above it, precreate
# and page.pay answer ACQ.TOTAL_FEE_EXCEED and open no trade.
MAX_TRADE_FEN = 100_000_000_00


@dataclass
class SentNotification:
    out_trade_no: str
    trade_status: str
    answer: str | None  # what the receiver said (None: no answer)


@dataclass
class AlipaySimulator:
    """``alipay_keys``: the simulator's own pair (it signs with the private key; apps
    verify with the public one). ``apps``: each app id's public key (PEM)."""

    alipay_keys: rsa2.Rsa2Keys
    apps: Mapping[str, str]
    pay_delay_s: float = 1.0
    notify_attempts: int = 3
    notify_retry_s: float = 0.2
    # How notifications' HTTPS is checked: None is the default (verified against the
    # system's CAs); a dev stack passes a context that trusts its self-signed certificate.
    notify_ssl: ssl.SSLContext | bool | None = None
    clock: Callable[[], datetime] = utc_now
    trades: Trades = field(default_factory=Trades)
    notifications: list[SentNotification] = field(default_factory=list)
    # The method of every request whose signature verified, in order (tests count calls).
    requests: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self._private = self.alipay_keys.private_key()
        self._app_keys = {app: rsa2.load_public_key(pem) for app, pem in self.apps.items()}

    async def start(self) -> None:
        if self._session is None:
            connector = (
                None if self.notify_ssl is None else aiohttp.TCPConnector(ssl=self.notify_ssl)
            )
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=5), connector=connector
            )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- the gateway ----------------------------------------------------------------------

    async def gateway(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        method = params.get("method", "")
        response_name = method.replace(".", "_") + "_response"
        refused = self._check_request(params)
        if refused is not None:
            return self._answer(response_name, refused)
        self.requests.append(method)
        try:
            content = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            content = None
        if not isinstance(content, dict):
            return self._answer(response_name, _error("40004", "ACQ.INVALID_PARAMETER"))
        app_id = params["app_id"]
        if method == "alipay.trade.page.pay":
            return self._cashier(app_id, content, params)
        handler = {
            "alipay.trade.precreate": self._precreate,
            "alipay.trade.query": self._query,
            "alipay.trade.close": self._close,
            "alipay.trade.refund": self._refund,
            "alipay.trade.fastpay.refund.query": self._refund_query,
        }.get(method)
        if handler is None:
            return self._answer(response_name, _error("40004", "isv.invalid-method"))
        return self._answer(response_name, handler(app_id, content, params))

    def _check_request(self, params: dict[str, str]) -> dict[str, Any] | None:
        key = self._app_keys.get(params.get("app_id", ""))
        if key is None:
            return _error("40002", "isv.invalid-app-id")
        if params.get("sign_type") != "RSA2" or params.get("charset", "utf-8") != "utf-8":
            return _error("40002", "isv.invalid-signature-type")
        signature = params.get("sign", "")
        if not signature or not rsa2.verify(
            key, rsa2.sign_content(params, leave_out=("sign",)), signature
        ):
            return _error("40002", "isv.invalid-signature")
        return None

    def _answer(self, response_name: str, content: dict[str, Any]) -> web.Response:
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        signature = rsa2.sign(self._private, body)
        text = f'{{"{response_name}":{body},"sign":"{signature}"}}'
        return web.Response(text=text, content_type="application/json", charset="utf-8")

    def _open(
        self, app_id: str, content: dict[str, Any], params: dict[str, str]
    ) -> Trade | dict[str, Any]:
        out_trade_no = content.get("out_trade_no")
        fen = _fen(content.get("total_amount"))
        if not isinstance(out_trade_no, str) or not out_trade_no or fen is None or fen <= 0:
            return _error("40004", "ACQ.INVALID_PARAMETER")
        if fen > MAX_TRADE_FEN and self.trades.find(app_id, out_trade_no, None) is None:
            return _error("40004", "ACQ.TOTAL_FEE_EXCEED")  # no trade is opened
        if behaviour_for(fen) is TradeBehaviour.PRECREATE_SYSTEM_ERROR:
            return _error("40004", "ACQ.SYSTEM_ERROR")  # no trade is opened, every time
        now = self.clock()
        trade, made = self.trades.open(
            app_id,
            out_trade_no,
            fen,
            str(content.get("subject") or ""),
            params.get("notify_url"),
            now,
            _expiry(content.get("time_expire")),
        )
        if not made and trade.total_fen != fen:
            return _error("40004", "ACQ.CONTEXT_INCONSISTENT")
        if made:
            self._after_opening(trade)
        return trade

    def _precreate(
        self, app_id: str, content: dict[str, Any], params: dict[str, str]
    ) -> dict[str, Any]:
        trade = self._open(app_id, content, params)
        if isinstance(trade, dict):
            return trade
        return {
            **_ok(),
            "out_trade_no": trade.out_trade_no,
            "qr_code": f"https://qr.alipay.com/{trade.trade_no}",
        }

    def _cashier(
        self, app_id: str, content: dict[str, Any], params: dict[str, str]
    ) -> web.Response:
        trade = self._open(app_id, content, params)
        if isinstance(trade, dict):
            return web.Response(status=400, text=html.escape(str(trade.get("sub_code"))))
        page = (
            "<html><body><h1>Alipay cashier (simulated)</h1>"
            f"<p>trade {html.escape(trade.trade_no)}: {_yuan(trade.total_fen)} CNY, "
            f"{trade.status.value}</p></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    def _query(self, app_id: str, content: dict[str, Any], _p: dict[str, str]) -> dict[str, Any]:
        trade = self._find(app_id, content)
        if trade is None:
            return _error("40004", "ACQ.TRADE_NOT_EXIST")
        answer = {
            **_ok(),
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": trade.status.value,
            "total_amount": _yuan(trade.total_fen),
        }
        if trade.paid_at is not None:
            answer["send_pay_date"] = trade.paid_at.astimezone(_BEIJING).strftime(_TIME)
            answer["buyer_user_id"] = trade.buyer_id
        return answer

    def _close(self, app_id: str, content: dict[str, Any], _p: dict[str, str]) -> dict[str, Any]:
        trade = self._find(app_id, content)
        if trade is None:
            return _error("40004", "ACQ.TRADE_NOT_EXIST")
        if not self.trades.close(trade) and trade.status is not TradeStatus.TRADE_CLOSED:
            return _error("40004", "ACQ.TRADE_STATUS_ERROR")
        return {**_ok(), "trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}

    def _refund(self, app_id: str, content: dict[str, Any], _p: dict[str, str]) -> dict[str, Any]:
        trade = self._find(app_id, content)
        request_no = content.get("out_request_no") or (trade.out_trade_no if trade else None)
        fen = _fen(content.get("refund_amount"))
        if trade is None:
            return _error("40004", "ACQ.TRADE_NOT_EXIST")
        if fen is None or fen <= 0 or not isinstance(request_no, str):
            return _error("40004", "ACQ.INVALID_PARAMETER")
        done = trade.refunds.get(request_no)
        if done is not None:
            if done.amount_fen != fen:
                return _error("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
            return {**_ok(), **_refund_fields(trade, done.amount_fen), "fund_change": "N"}
        if trade.status is not TradeStatus.TRADE_SUCCESS:
            return _error("40004", "ACQ.TRADE_STATUS_ERROR")
        if trade.behaviour is TradeBehaviour.REFUND_FAILS:
            return _error("40004", "ACQ.SELLER_BALANCE_NOT_ENOUGH")
        if trade.refunded_fen + fen > trade.total_fen:
            return _error("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
        unmade = trade.unmade_refunds.get(request_no)
        if unmade is not None and unmade.amount_fen != fen:
            return _error("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
        if unmade is None and trade.behaviour is TradeBehaviour.REFUND_NOT_MADE_AT_FIRST:
            # Received, not made: code 10000 only says the call went through, and without
            # fund_change Y the refund query tells (here: no refund_status, not made).
            trade.unmade_refunds[request_no] = Refund(request_no, fen, self.clock())
            return {**_ok(), **_refund_fields(trade, 0), "fund_change": "N"}
        trade.unmade_refunds.pop(request_no, None)
        trade.refunds[request_no] = Refund(request_no, fen, self.clock())
        if (
            self.trades.close_refunded(trade)
            and trade.behaviour is not TradeBehaviour.NOTIFICATION_LOST
        ):
            self._spawn(self._notify(trade))
        return {**_ok(), **_refund_fields(trade, fen), "fund_change": "Y"}

    def _refund_query(
        self, app_id: str, content: dict[str, Any], _p: dict[str, str]
    ) -> dict[str, Any]:
        trade = self._find(app_id, content)
        if trade is None:
            return _error("40004", "ACQ.TRADE_NOT_EXIST")
        request_no = str(content.get("out_request_no"))
        refund = trade.refunds.get(request_no)
        unmade = trade.unmade_refunds.get(request_no)
        if refund is None and unmade is not None:
            # A request received and not made: its fields without refund_status, which
            # Alipay documents as "not made; call the refund again with this out_request_no".
            return {
                **_ok(),
                "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no,
                "out_request_no": unmade.out_request_no,
                "total_amount": _yuan(trade.total_fen),
                "refund_amount": _yuan(unmade.amount_fen),
            }
        if refund is None:
            # Alipay answers success with no refund fields for a refund it never made.
            return {**_ok(), "trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
        return {
            **_ok(),
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "out_request_no": refund.out_request_no,
            "total_amount": _yuan(trade.total_fen),
            "refund_amount": _yuan(refund.amount_fen),
            "refund_status": "REFUND_SUCCESS",
        }

    def _find(self, app_id: str, content: dict[str, Any]) -> Trade | None:
        trade_no = content.get("trade_no")
        out_trade_no = content.get("out_trade_no")
        return self.trades.find(
            app_id,
            out_trade_no if isinstance(out_trade_no, str) else None,
            trade_no if isinstance(trade_no, str) else None,
        )

    # -- what the payer and Alipay do afterwards --------------------------------------------

    def _after_opening(self, trade: Trade) -> None:
        behaviour = trade.behaviour
        if behaviour in (
            TradeBehaviour.PAYS_AT_ONCE,
            TradeBehaviour.NOTIFICATION_LOST,
            TradeBehaviour.NOTIFIED_TWICE,
            TradeBehaviour.REFUND_FAILS,
            TradeBehaviour.REFUND_NOT_MADE_AT_FIRST,
        ):
            self._spawn(self._pay_later(trade, 0.0))
        elif behaviour is TradeBehaviour.PAYS_AFTER_DELAY:
            self._spawn(self._pay_later(trade, self.pay_delay_s))
        elif behaviour is TradeBehaviour.CLOSED:
            self.trades.close(trade)
            self._spawn(self._notify(trade))

    def pay(self, trade: Trade, buyer_id: str = "2088102177846880") -> bool:
        """The payer pays (a test, for trades that wait); notifies as the behaviour says."""
        if not self.trades.pay(trade, self.clock(), buyer_id):
            return False
        if trade.behaviour is not TradeBehaviour.NOTIFICATION_LOST:
            self._spawn(self._notify(trade))
        if trade.behaviour is TradeBehaviour.NOTIFIED_TWICE:
            self._spawn(self._notify(trade))
        return True

    async def _pay_later(self, trade: Trade, delay_s: float) -> None:
        # The payer's own pace, not a synchronisation: tests wait for the notification.
        await asyncio.sleep(delay_s)
        self.pay(trade)

    async def _notify(self, trade: Trade) -> None:
        if not trade.notify_url or self._session is None:
            return
        params = self.notification(trade)
        for attempt in range(self.notify_attempts):
            answer: str | None = None
            try:
                async with self._session.post(trade.notify_url, data=params) as resp:
                    answer = (await resp.text()).strip()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("notification not delivered: %s", type(exc).__name__)
            self.notifications.append(
                SentNotification(trade.out_trade_no, params["trade_status"], answer)
            )
            if answer == "success":
                return
            if attempt + 1 < self.notify_attempts:
                await asyncio.sleep(self.notify_retry_s)  # Alipay's retry schedule, shortened

    def notification(self, trade: Trade) -> dict[str, str]:
        """The signed form Alipay posts for ``trade`` as it is now."""
        now = self.clock().astimezone(_BEIJING).strftime(_TIME)
        params = {
            "notify_time": now,
            "notify_type": "trade_status_sync",
            "notify_id": uuid.uuid4().hex,
            "app_id": trade.app_id,
            "auth_app_id": trade.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": trade.status.value,
            "total_amount": _yuan(trade.total_fen),
            "subject": trade.subject,
            "gmt_create": trade.created_at.astimezone(_BEIJING).strftime(_TIME),
        }
        if trade.paid_at is not None:
            params["gmt_payment"] = trade.paid_at.astimezone(_BEIJING).strftime(_TIME)
            params["receipt_amount"] = _yuan(trade.total_fen)
            params["buyer_id"] = trade.buyer_id or ""
        if trade.refunds:
            params["refund_fee"] = _yuan(trade.refunded_fen)
            last = max(refund.at for refund in trade.refunds.values())
            params["gmt_refund"] = last.astimezone(_BEIJING).strftime(_TIME)
        params["sign"] = rsa2.sign(
            self._private, rsa2.sign_content(params, leave_out=("sign", "sign_type"))
        )
        return params

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait until every payment and notification under way is done (tests, chaos)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _admin_pay(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR]
    found = [t for t in simulator.trades.all() if t.out_trade_no == request.match_info["key"]]
    if not found:
        return web.json_response({"error": "no such trade"}, status=404)
    paid = simulator.pay(found[0])
    return web.json_response({"paid": paid, "status": found[0].status.value})


async def _admin_trades(request: web.Request) -> web.Response:
    trades = request.app[SIMULATOR].trades.all()
    return web.json_response(
        {
            "trades": [
                {
                    "outTradeNo": t.out_trade_no,
                    "tradeNo": t.trade_no,
                    "status": t.status.value,
                    "totalAmount": _yuan(t.total_fen),
                    "behaviour": t.behaviour.value,
                    "refundedAmount": _yuan(t.refunded_fen),
                }
                for t in trades
            ]
        }
    )


async def _gateway(request: web.Request) -> web.Response:
    return await request.app[SIMULATOR].gateway(request)


def add_alipay_routes(app: web.Application, simulator: AlipaySimulator) -> None:
    """Serve ``simulator`` from ``app``: ``/gateway.do`` and its admin endpoints."""
    app[SIMULATOR] = simulator

    async def lifecycle(app: web.Application) -> Any:
        await app[SIMULATOR].start()
        yield
        await app[SIMULATOR].stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("GET", "/gateway.do", _gateway)
    app.router.add_route("POST", "/gateway.do", _gateway)
    app.router.add_post("/alipay/admin/trades/{key}/pay", _admin_pay)
    app.router.add_get("/alipay/admin/trades", _admin_trades)


def _ok() -> dict[str, Any]:
    return {"code": "10000", "msg": "Success"}


def _error(code: str, sub_code: str) -> dict[str, Any]:
    msg = {"40002": "Invalid Arguments", "40004": "Business Failed"}.get(code, "Failed")
    return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_code}


def _refund_fields(trade: Trade, fen: int) -> dict[str, Any]:
    return {
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "refund_fee": _yuan(trade.refunded_fen),
        "send_back_fee": _yuan(fen),
    }


def _fen(text: object) -> int | None:
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        return None
    fen = value.scaleb(2)
    if not value.is_finite() or fen != fen.to_integral_value():
        return None
    return int(fen)


def _yuan(fen: int) -> str:
    return format(Decimal(fen).scaleb(-2), ".2f")


def _expiry(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, _TIME).replace(tzinfo=_BEIJING)
    except ValueError:
        return None


__all__ = ["SIMULATOR", "AlipaySimulator", "SentNotification", "add_alipay_routes"]
