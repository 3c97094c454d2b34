"""An in-memory :class:`http_facade.ports.WebhookEndpoints`, for facade tests.

It keeps the real store's rules that the facade relies on: a client sees only its own
endpoints and deliveries, the secret is given once, a deleted endpoint is gone.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from domain.webhook_views import CreatedEndpoint, DeliveryInfo, EndpointInfo
from persistence.webhook_store import new_secret

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class FakeWebhooks:
    endpoints_by_id: dict[str, EndpointInfo] = field(default_factory=dict)
    deliveries_by_id: dict[str, DeliveryInfo] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def create_endpoint(
        self, client_id: str, url: str, enabled_events: Sequence[str], description: str | None
    ) -> CreatedEndpoint:
        info = EndpointInfo(
            id=f"we_{next(self._ids):032x}",
            client_id=client_id,
            url=url,
            description=description,
            enabled_events=sorted(set(enabled_events)),
            created_at=NOW,
        )
        self.endpoints_by_id[info.id] = info
        return CreatedEndpoint(info, new_secret())

    async def endpoints(self, client_id: str) -> list[EndpointInfo]:
        return [e for e in self.endpoints_by_id.values() if e.client_id == client_id]

    async def endpoint(self, client_id: str, endpoint_id: str) -> EndpointInfo | None:
        found = self.endpoints_by_id.get(endpoint_id)
        return found if found is not None and found.client_id == client_id else None

    async def delete_endpoint(self, client_id: str, endpoint_id: str) -> bool:
        if await self.endpoint(client_id, endpoint_id) is None:
            return False
        del self.endpoints_by_id[endpoint_id]
        return True

    def deliver(self, endpoint_id: str, event_type: str, status: str = "failed") -> DeliveryInfo:
        """A delivery the dispatcher made (test set-up)."""
        delivery = DeliveryInfo(
            id=f"whd_{next(self._ids):032x}",
            endpoint_id=endpoint_id,
            event_id=f"evt_{next(self._ids):032x}",
            event_type=event_type,
            status=status,
            attempts=3,
            next_attempt_at=None,
            last_attempt_at=NOW,
            last_status_code=500,
            last_error="the endpoint answered HTTP 500",
            created_at=NOW,
            updated_at=NOW,
        )
        self.deliveries_by_id[delivery.id] = delivery
        return delivery

    async def deliveries(
        self,
        *,
        client_id: str | None,
        endpoint_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[DeliveryInfo]:
        return [
            d
            for d in self.deliveries_by_id.values()
            if self._visible(d, client_id)
            and endpoint_id in (None, d.endpoint_id)
            and status in (None, d.status)
        ][:limit]

    async def retry(
        self, delivery_id: str, *, client_id: str | None, endpoint_id: str | None = None
    ) -> DeliveryInfo | None:
        found = self.deliveries_by_id.get(delivery_id)
        if (
            found is None
            or not self._visible(found, client_id)
            or endpoint_id not in (None, found.endpoint_id)
        ):
            return None
        again = replace(found, status="pending", next_attempt_at=NOW)
        self.deliveries_by_id[delivery_id] = again
        return again

    def _visible(self, delivery: DeliveryInfo, client_id: str | None) -> bool:
        endpoint = self.endpoints_by_id.get(delivery.endpoint_id)
        return endpoint is not None and client_id in (None, endpoint.client_id)
