"""The simulator's trades and refunds, and the test amounts that choose what the payer (and
Alipay) do. In memory: like the sandbox's unavailable-first counters, a restart forgets.

The fen of a trade's amount pick its behaviour (``10.01`` pays at once, ``10.03`` never):
a test or a chaos run chooses an outcome by choosing an amount, as card tests choose a
number. docs/sandbox.md shows the same table; a unit test keeps the two in step.

Every change of a trade is a check and a write with no ``await`` between them, hence atomic
on the event loop: of a payment and a close racing, exactly one lands.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class TradeBehaviour(StrEnum):
    WAITS = "waits"  # the test pays it (POST /alipay/admin/trades/{out_trade_no}/pay)
    PAYS_AT_ONCE = "pays_at_once"
    PAYS_AFTER_DELAY = "pays_after_delay"  # after the simulator's pay_delay_s
    NEVER_PAYS = "never_pays"
    NOTIFICATION_LOST = "notification_lost"  # pays at once; the notification is never sent
    NOTIFIED_TWICE = "notified_twice"  # pays at once; the notification is sent twice
    CLOSED = "closed"  # Alipay closes the trade unpaid at once (and notifies TRADE_CLOSED)
    REFUND_FAILS = "refund_fails"  # pays at once; every refund is refused
    # Pays at once; the first refund call under each out_request_no is received but not made
    # (answered without fund_change Y; the refund query shows it without refund_status); a
    # call again under the same out_request_no makes it.
    REFUND_NOT_MADE_AT_FIRST = "refund_not_made_at_first"
    # precreate answers ACQ.SYSTEM_ERROR every time and opens no trade: the same answer of
    # unknown outcome for ever (what a sub code paygate does not know reads as, too).
    PRECREATE_SYSTEM_ERROR = "precreate_system_error"


# By the fen of the amount (its last two digits). Unlisted fen: WAITS.
BEHAVIOURS: Final = MappingProxyType(
    {
        1: TradeBehaviour.PAYS_AT_ONCE,
        2: TradeBehaviour.PAYS_AFTER_DELAY,
        3: TradeBehaviour.NEVER_PAYS,
        4: TradeBehaviour.NOTIFICATION_LOST,
        5: TradeBehaviour.NOTIFIED_TWICE,
        6: TradeBehaviour.CLOSED,
        7: TradeBehaviour.REFUND_FAILS,
        8: TradeBehaviour.REFUND_NOT_MADE_AT_FIRST,
        9: TradeBehaviour.PRECREATE_SYSTEM_ERROR,
    }
)


def behaviour_for(amount_fen: int) -> TradeBehaviour:
    return BEHAVIOURS.get(amount_fen % 100, TradeBehaviour.WAITS)


class TradeStatus(StrEnum):
    WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
    TRADE_SUCCESS = "TRADE_SUCCESS"
    TRADE_CLOSED = "TRADE_CLOSED"


@dataclass
class Refund:
    out_request_no: str
    amount_fen: int
    at: datetime


@dataclass
class Trade:
    app_id: str
    out_trade_no: str
    trade_no: str
    total_fen: int
    subject: str
    notify_url: str | None
    behaviour: TradeBehaviour
    created_at: datetime
    expires_at: datetime | None
    status: TradeStatus = TradeStatus.WAIT_BUYER_PAY
    paid_at: datetime | None = None
    buyer_id: str | None = None
    refunds: dict[str, Refund] = field(default_factory=dict)
    # Refund requests received and not made, by out_request_no (REFUND_NOT_MADE_AT_FIRST):
    # the query answers them without refund_status; a call again makes them.
    unmade_refunds: dict[str, Refund] = field(default_factory=dict)

    @property
    def refunded_fen(self) -> int:
        return sum(refund.amount_fen for refund in self.refunds.values())


class Trades:
    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Trade] = {}
        self._by_trade_no: dict[str, Trade] = {}

    def find(self, app_id: str, out_trade_no: str | None, trade_no: str | None) -> Trade | None:
        if trade_no:
            trade = self._by_trade_no.get(trade_no)
            return trade if trade is not None and trade.app_id == app_id else None
        if out_trade_no:
            return self._by_key.get((app_id, out_trade_no))
        return None

    def open(
        self,
        app_id: str,
        out_trade_no: str,
        total_fen: int,
        subject: str,
        notify_url: str | None,
        now: datetime,
        expires_at: datetime | None,
    ) -> tuple[Trade, bool]:
        """The trade of ``out_trade_no`` (made now unless it exists); True if made now."""
        existing = self._by_key.get((app_id, out_trade_no))
        if existing is not None:
            return existing, False
        trade = Trade(
            app_id=app_id,
            out_trade_no=out_trade_no,
            trade_no=now.strftime("%Y%m%d") + "22" + uuid.uuid4().hex[:18],
            total_fen=total_fen,
            subject=subject,
            notify_url=notify_url,
            behaviour=behaviour_for(total_fen),
            created_at=now,
            expires_at=expires_at,
        )
        self._by_key[(app_id, out_trade_no)] = trade
        self._by_trade_no[trade.trade_no] = trade
        return trade, True

    def pay(self, trade: Trade, now: datetime, buyer_id: str) -> bool:
        """The payer pays: only a trade still waiting, before its expiry."""
        if trade.status is not TradeStatus.WAIT_BUYER_PAY:
            return False
        if trade.expires_at is not None and now >= trade.expires_at:
            return False
        trade.status, trade.paid_at, trade.buyer_id = TradeStatus.TRADE_SUCCESS, now, buyer_id
        return True

    def close(self, trade: Trade) -> bool:
        """Close an unpaid trade; False if it was paid (or closed) already."""
        if trade.status is not TradeStatus.WAIT_BUYER_PAY:
            return False
        trade.status = TradeStatus.TRADE_CLOSED
        return True

    def close_refunded(self, trade: Trade) -> bool:
        """Close a paid trade once its refunds return all of it, as Alipay does (the trade
        then reads TRADE_CLOSED with its payment date); False otherwise."""
        if trade.status is not TradeStatus.TRADE_SUCCESS or trade.refunded_fen < trade.total_fen:
            return False
        trade.status = TradeStatus.TRADE_CLOSED
        return True

    def all(self) -> list[Trade]:
        return list(self._by_key.values())
