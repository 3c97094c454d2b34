"""A provider whose status search trails its charges, as Stripe's Search API does (usually a
minute, up to an hour in an incident): the sandbox in process, but ``charge_status`` does
not show a charge until ``hidden_for`` after it was made, on the test's clock. Every other
call (charge, refund, void, retrieval by reference) is the sandbox's own and current."""

from __future__ import annotations

from datetime import datetime, timedelta

from providers.delegating import DelegatingProvider
from providers.port import ChargeOutcome, ChargeRequest, PaymentProvider
from tests.support.clock import Clock


class LaggingSearchProvider(DelegatingProvider):
    """``declared``: the lag the provider admits to (``status_search_lag``); ``hidden_for``:
    how long it really hides a charge (at most ``declared`` for an honest provider)."""

    def __init__(
        self,
        inner: PaymentProvider,
        clock: Clock,
        *,
        hidden_for: timedelta,
        declared: timedelta,
    ) -> None:
        super().__init__(inner)
        self._clock = clock
        self._hidden_for = hidden_for
        self._declared = declared
        self.charged_at: dict[str, datetime] = {}  # by attempt key: when its charge was made
        self.hidden_answers = 0  # status questions answered "none" while a charge existed

    @property
    def status_search_lag(self) -> timedelta:
        return self._declared

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        outcome = await super().charge(request)
        self.charged_at.setdefault(request.attempt_key, self._clock())
        return outcome

    async def charge_status(self, attempt_key: str) -> ChargeOutcome | None:
        made = self.charged_at.get(attempt_key)
        if made is not None and self._clock() < made + self._hidden_for:
            self.hidden_answers += 1
            return None  # not in the search index yet
        return await super().charge_status(attempt_key)
