"""A provider's own word about a charge, received by us (a signed notification), as the
provider port's types: which attempt, what the provider says it came to, for how much; the
notification as it arrived; and how each provider posts notifications and wants them
answered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from domain.money import Money
from providers.port import ChargeOutcome, RefundOutcome


@dataclass(frozen=True, slots=True)
class ChargeNotice:
    """``attempt_key`` is the key the charge was sent under (Alipay's out_trade_no);
    ``outcome`` is None for news that finishes nothing (the trade still waits).
    ``refunded_as_of``: when the provider made the reading of the refunded total in
    ``outcome`` (Stripe's event ``created``, Unix seconds by Stripe's clock); None when the
    provider says no time (domain.failed_refund_netting)."""

    provider: str
    attempt_key: str
    outcome: ChargeOutcome | None
    amount: Money
    refunded_as_of: int | None = None


@dataclass(frozen=True, slots=True)
class RefundNotice:
    """A provider's word that a refund paygate sent failed, possibly after it answered it
    succeeded (Stripe's ``refund.failed``). ``refund_id`` is the id paygate sent the refund
    under (its metadata), ``outcome`` the failure (status FAILED, the provider's reference
    of the refund, its reason), ``amount`` what the refund was for, ``charge_reference``
    the provider's reference of the charge it refunds (Stripe's PaymentIntent; None when
    it names none). Metadata is anyone's to write on the provider's account: the charge is
    what binds the notice to the payment, where paygate's refund has no reference yet."""

    provider: str
    refund_id: str
    outcome: RefundOutcome
    amount: Money
    charge_reference: str | None


@dataclass(frozen=True, slots=True)
class OutsideRefundFailedNotice:
    """A provider's word that a refund made outside paygate (by hand in its dashboard: a
    Stripe Refund without paygate's metadata) failed, its money back in the merchant's
    balance. ``provider_reference`` is the provider's id of that refund, ``amount`` what it
    was for, ``charge_reference`` the charge it refunded (Stripe's PaymentIntent), which
    names the payment. ``made_at`` and ``failed_at``: when the provider made the refund
    (Stripe's Refund ``created``) and failed it (the ``refund.failed`` event's
    ``created``), Unix seconds by its clock; None when not said
    (domain.failed_refund_netting)."""

    provider: str
    provider_reference: str
    amount: Money
    charge_reference: str
    made_at: int | None = None
    failed_at: int | None = None


# What a provider's notification may say: about a charge, or about a refund.
ProviderNotice = ChargeNotice | RefundNotice | OutsideRefundFailedNotice


@dataclass(frozen=True, slots=True)
class ReceivedNotification:
    """A notification as the facade received it, before anything in it is trusted.

    ``body`` is the raw body, byte for byte: what a signature over the body (Stripe's)
    covers, so it is never re-encoded. ``headers`` are the request's (the facade passes
    aiohttp's case-insensitive mapping; :meth:`header` looks a name up in any case).
    ``form`` holds the body's fields when it is a form (Alipay's), else nothing."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        found = self.headers.get(name)
        if found is not None:
            return found
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class NotificationTerms:
    """How one provider posts its notifications and wants them answered.

    ``media_type``: the body's content type the provider sends (anything else is refused
    415 before a byte is read as the provider's). ``acknowledgement`` and its
    ``acknowledgement_type``: the 2xx answer after which the provider does not send the
    notification again (Alipay: exactly the text ``success``; Stripe: any 2xx, a small
    JSON body). ``signature_param``: what a refusal of the notification names as the
    field at fault; ``attempt_key_param``: what a refusal of its charge (another amount,
    trade or provider than the payment's) names.

    ``account_wide``: the provider sends every event of the merchant's account to the one
    endpoint (Stripe), not only those of charges paygate made with this endpoint's address
    (Alipay's ``notify_url``). A notification naming an attempt key no payment here has is
    then another system's on the same account (another paygate environment, say), not
    one to hear again: it is acknowledged and logged, since answering an error would only
    make the provider resend it for days. paygate writes every attempt before sending it
    (write-ahead), so a charge of its own never precedes its attempt's row."""

    media_type: str
    acknowledgement: str
    acknowledgement_type: str
    signature_param: str
    attempt_key_param: str
    account_wide: bool = False


class RefusalReason(StrEnum):
    """Why a notification was refused: a small fixed set, the label of
    ``paygate_provider_notifications_refused_total`` (never anything of the payload)."""

    SIGNATURE = "signature"  # unsigned, forged, another secret's, older than the tolerance
    ACCOUNT = "account"  # genuine, but another account's, mode's or app's
    UNREADABLE = "unreadable"  # signed, but not a notification paygate can read
    MISMATCH = "mismatch"  # not the attempt's amount, trade or provider
    UNKNOWN_PAYMENT = "unknown_payment"  # no payment has its trade (Alipay: 404)
    MEDIA_TYPE = "media_type"  # not the provider's content type (415)


class NoticeRefusedError(Exception):
    """A notification that is not the provider's (unsigned, forged, another app) or cannot
    be read: refused, nothing changes. ``reason`` says which, for the refusals' counter."""

    def __init__(self, message: str, reason: RefusalReason = RefusalReason.UNREADABLE) -> None:
        super().__init__(message)
        self.reason = reason


class NoticeResult(StrEnum):
    RECORDED = "recorded"  # the payment moved on
    ALREADY = "already"  # it had: a replay, or the reconciler was first
    IGNORED = "ignored"  # nothing to record (the trade still waits for its payer)
    MISMATCH = "mismatch"  # another amount, another trade, another provider: refused
    UNKNOWN = "unknown"  # no such payment or attempt
    BUSY = "busy"  # another worker holds the payment: ask the provider to send it again
    # Money taken under a key the payment does not stand on: handed to the stray-charge
    # sweep (durably), which asks the provider and reverses it; acknowledged.
    STRAY = "stray"
