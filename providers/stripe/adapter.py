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
the first result); the reconciler abandons an unseen attempt only after
``PAYGATE_ABANDON_AFTER_S``, which must therefore stay well above that lag (see
docs/providers.md). Search is not offered to Stripe accounts in India.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp
import stripe
from pydantic import SecretStr

from providers.errors import ProviderTimeoutError
from providers.port import ChargeOutcome, ChargeRequest
from providers.stripe.transformers import (
    PROVIDER_NAME,
    charge_params,
    error_from_stripe,
    outcome_from_card_error,
    outcome_from_intent,
    outcome_from_search,
    search_query_for,
)


@contextlib.contextmanager
def _translate_stripe_errors() -> Iterator[None]:
    try:
        yield
    except stripe.StripeError as exc:
        raise error_from_stripe(exc) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The SDK wraps errors of sending the request, not of reading the answer's body:
        # those come through raw, after Stripe has received the request.
        raise ProviderTimeoutError(
            PROVIDER_NAME,
            f"reading Stripe's answer failed ({type(exc).__name__}); outcome unknown",
        ) from exc
    except ValueError as exc:  # from the transformers: an answer without id or status
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
            return outcome_from_intent(intent)

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        """The PaymentIntent created under ``attempt_key``, found by its metadata; None when
        Stripe's search finds none (see the module docstring on search lag)."""
        with _translate_stripe_errors():
            found = await self._stripe().v1.payment_intents.search_async(
                params={"query": search_query_for(attempt_key), "limit": 10}
            )
            return outcome_from_search(found.data)

    def _stripe(self) -> stripe.StripeClient:
        if self._client is None:
            raise RuntimeError("StripeProvider is not started: call start() first")
        return self._client
