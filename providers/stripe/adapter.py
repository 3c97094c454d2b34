"""Stripe, through its Python SDK, as a :class:`providers.port.PaymentProvider`.

A charge is one PaymentIntent, created and confirmed in a single call whose Stripe
idempotency key is the attempt key; Stripe answers the same key with the same result for
24 hours, so resending an attempt never charges twice. The attempt key is also stored in
the PaymentIntent's metadata, which is how :meth:`StripeProvider.charge_status` finds it
again (Stripe's Search API).

Every SDK exception is translated here, in :func:`_translate_stripe_errors`, by
:func:`providers.stripe.transformers.error_from_stripe` (which documents each mapping);
the SDK never retries on its own (``max_network_retries=0``): whether and when to resend
is paygate's decision, made from the error's ``retriable`` and ``outcome_unknown``.

Limitation of :meth:`StripeProvider.charge_status`: Stripe's search index is eventually
consistent (usually under a minute, up to an hour during Stripe incidents), so a very
recent PaymentIntent may not be found yet and ``None`` comes back. That is safe for the
command handler, which then resends under the same idempotency key (Stripe answers with
the first result) -- but only while Stripe still keeps that key
(:attr:`StripeProvider.idempotency_window`, domain.resend_window): an older attempt is left
pending for an operator. An unseen attempt that cannot be re-sent at all is abandoned only
after ``PAYGATE_ABANDON_AFTER_S`` plus that lag, and the stray-charge sweep takes a "no
charge" as final only once the key's last possible charge is older than it
(:attr:`StripeProvider.status_search_lag`, domain.search_lag; see docs/providers.md).
Search is not offered to Stripe accounts in India.

Refunds are Stripe Refunds of the charge's PaymentIntent, created with the refund key as
idempotency key and in the metadata; :meth:`StripeProvider.refund_status` lists the
PaymentIntent's refunds and matches that metadata (a list, not a search: no index lag).
Authorize-only charges use ``capture_method=manual``, and only a PaymentIntent created so is
ever read as authorized: one asked to capture at once that waits for a capture is not final,
wherever it is read (transformers.held_for_a_capture_at_once). :meth:`StripeProvider.capture`
captures them (``amount_to_capture``: Stripe releases the rest) with the capture key as
idempotency key, and :meth:`StripeProvider.cancel` voids them with the cancel key. Stripe
cancels an uncaptured PaymentIntent on its own when its hold ends (cancellation reason
``automatic``): :meth:`StripeProvider.charge_by_reference` then reports it ``EXPIRED``.

Amounts go to Stripe in Stripe's own scale, not ISO 4217's (:mod:`providers.stripe.amounts`);
one Stripe cannot take exactly is refused before any call. The PaymentIntent or Refund that
Stripe answers with must restate the amount asked (its ``amount``, read back through the
same rules); an answer for another amount is read as an unknown outcome, never as the
answer to this request. A capture's answer has no such field (``amount_received`` counts
what the PaymentIntent collected in all), so only its status is read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta

import aiohttp
import stripe
from pydantic import SecretStr

from domain.errors import PaygateError
from providers.errors import ProviderError, ProviderTimeoutError, UnsupportedOperationError
from providers.port import (
    CancelRequest,
    CaptureRequest,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    RefundOutcome,
    RefundRequest,
)
from providers.stripe.amounts import check_answered_amount
from providers.stripe.refund_transformers import (
    capture_params,
    find_refund,
    outcome_from_refund,
    refund_error_from_stripe,
    refund_params,
)
from providers.stripe.transformers import (
    PROVIDER_NAME,
    StripePaymentPendingError,
    charge_params,
    error_from_stripe,
    outcome_from_card_error,
    outcome_from_intent,
    outcome_from_search,
    search_query_for,
)

# A PaymentIntent that Stripe does not know (retrieve of an unknown id).
_RESOURCE_MISSING = "resource_missing"


def _field(obj: object, name: str) -> object:
    """A field of an SDK object, None when absent (the SDK raises AttributeError)."""
    return getattr(obj, name, None)


@contextlib.contextmanager
def _translate_stripe_errors(
    translate: Callable[[stripe.StripeError], ProviderError | PaygateError] = error_from_stripe,
) -> Iterator[None]:
    try:
        yield
    except stripe.StripeError as exc:
        raise translate(exc) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The SDK wraps errors of sending the request, not of reading the answer's body:
        # those come through raw, after Stripe has received the request.
        raise ProviderTimeoutError(
            PROVIDER_NAME,
            f"reading Stripe's answer failed ({type(exc).__name__}); outcome unknown",
        ) from exc
    except ValueError as exc:  # from the transformers: an answer without id, status or amount
        raise ProviderTimeoutError(
            PROVIDER_NAME, f"unreadable answer from Stripe ({exc}); outcome unknown"
        ) from exc


class StripeProvider:
    """Charges Stripe payment methods (payer account type ``token``, such as pm_card_visa).

    ``api_base`` replaces Stripe's API address (stripe-mock in the tests). ``timeout_s`` is
    the whole call; half of it, at most, goes to connecting, so that a slow connect (not
    sent: ProviderUnavailableError) is told apart from a slow answer (ProviderTimeoutError).
    ``http_client`` replaces the SDK's aiohttp client; the unit tests pass a fake one.
    """

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        api_base: str | None = None,
        timeout_s: float = 10.0,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self._api_base = api_base
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=timeout_s / 2)
        self._given_http_client = http_client
        self._http_client: stripe.HTTPClient | None = None
        self._client: stripe.StripeClient | None = None

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def idempotency_window(self) -> timedelta | None:
        # Stripe prunes an idempotency key once it is at least 24 hours old; a request
        # under it after that is a new request.
        return timedelta(hours=24)

    @property
    def status_search_lag(self) -> timedelta:
        # charge_status is a Search API query: Stripe documents its index as usually current
        # within a minute but up to an hour behind during outages. An outage can run past
        # its hour and the hour counts from when Stripe's indexing resumes, not from the
        # charge: twice the documented bound. Waiting longer costs only more questions of a
        # few keys; too short leaves a late charge unseen for good.
        return timedelta(hours=2)

    @property
    def refund_status_lag(self) -> timedelta:
        # refund_status lists the PaymentIntent's Refunds (a list, not the Search API): a
        # Refund created shows at once.
        return timedelta(0)

    async def start(self) -> None:
        if self._client is not None:
            return
        http_client = self._given_http_client or stripe.AIOHTTPClient(timeout=self._timeout)
        self._http_client = http_client
        self._client = stripe.StripeClient(
            self._api_key.get_secret_value(),
            base_addresses={"api": self._api_base} if self._api_base else {},
            http_client=http_client,
            max_network_retries=0,
        )

    async def stop(self) -> None:
        http_client, self._http_client, self._client = self._http_client, None, None
        if http_client is not None and http_client is not self._given_http_client:
            await http_client.close_async()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> StripeProvider:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        params = charge_params(request)  # raises PaygateError before any call
        with _translate_stripe_errors():
            try:
                intent = await self._stripe().v1.payment_intents.create_async(
                    params=params, options={"idempotency_key": request.attempt_key}
                )
            except stripe.CardError as exc:
                return outcome_from_card_error(exc)
            check_answered_amount(
                request.amount, _field(intent, "amount"), _field(intent, "currency")
            )
            outcome = outcome_from_intent(intent)
        if request.capture and outcome.status is ChargeStatus.AUTHORIZED:
            # Asked to capture at once, yet only authorized: the money is not taken, so this
            # is not final for the charge asked for. outcome_from_intent already says so of a
            # PaymentIntent without capture_method=manual (held_for_a_capture_at_once), which
            # is what every status read sees too; this guards an answer that contradicts the
            # request.
            raise StripePaymentPendingError(
                PROVIDER_NAME,
                f"PaymentIntent {outcome.provider_reference} waits for a capture; outcome unknown",
                intent_id=outcome.provider_reference or "",
                status="requires_capture",
            )
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        """The PaymentIntent created under ``attempt_key``, found by its metadata; None when
        Stripe's search finds none (see the module docstring on search lag)."""
        with _translate_stripe_errors():
            found = await self._stripe().v1.payment_intents.search_async(
                params={"query": search_query_for(attempt_key), "limit": 10}
            )
            return outcome_from_search(found.data)

    async def charge_by_reference(self, provider_reference: str) -> ChargeOutcome | None:
        with _translate_stripe_errors():
            try:
                # The charge expanded: its amount_refunded is what was refunded of it in all
                # (by paygate, or by hand in the Dashboard); the PaymentIntent does not say.
                intent = await self._stripe().v1.payment_intents.retrieve_async(
                    provider_reference, params={"expand": ["latest_charge"]}
                )
            except stripe.InvalidRequestError as exc:
                if exc.code == _RESOURCE_MISSING:
                    return None
                raise
            return outcome_from_intent(intent)

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        params = capture_params(request)  # raises PaygateError before any call
        with _translate_stripe_errors():
            intent = await self._stripe().v1.payment_intents.capture_async(
                request.charge_reference,
                params=params,
                options={"idempotency_key": request.capture_key},
            )
            return outcome_from_intent(intent)

    async def close_charge(self, attempt_key: str) -> ChargeOutcome | None:
        # paygate sends Stripe only confirmed card payments that need no payer action.
        raise UnsupportedOperationError(self.name, "payer actions are not supported")

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        """Cancel the PaymentIntent (a void of its authorization), the cancel key as the
        idempotency key, so a re-sent cancel is answered as the first was."""
        with _translate_stripe_errors():
            intent = await self._stripe().v1.payment_intents.cancel_async(
                request.charge_reference,
                options={"idempotency_key": request.cancel_key},
            )
            return outcome_from_intent(intent)

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        params = refund_params(request)  # raises PaygateError before any call
        with _translate_stripe_errors(refund_error_from_stripe):
            refund = await self._stripe().v1.refunds.create_async(
                params=params, options={"idempotency_key": request.refund_key}
            )
            check_answered_amount(
                request.amount, _field(refund, "amount"), _field(refund, "currency")
            )
            return outcome_from_refund(refund)

    async def refund_status(self, refund_key: str, charge_reference: str) -> RefundOutcome | None:
        """The refund created under ``refund_key``, found among the PaymentIntent's refunds
        by its metadata; None if Stripe has none (it never received the refund)."""
        with _translate_stripe_errors():
            page = await self._stripe().v1.refunds.list_async(
                params={"payment_intent": charge_reference, "limit": 100}
            )
            refunds = [refund async for refund in page.auto_paging_iter()]
            found = find_refund(refunds, refund_key)
            return None if found is None else outcome_from_refund(found)

    def _stripe(self) -> stripe.StripeClient:
        if self._client is None:
            raise RuntimeError("StripeProvider is not started: call start() first")
        return self._client
