"""What may be shown of webhook endpoints and deliveries (never an endpoint's secret, but
once, at creation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    id: str
    client_id: str
    url: str
    description: str | None
    enabled_events: list[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    """A new endpoint; ``secret`` is the only time its signing secret is shown."""

    endpoint: EndpointInfo
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
