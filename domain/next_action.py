"""What the payer must do before a ``requires_action`` payment can finish.

Invariant: a next action names exactly one target, the one its type calls for (a URL for
``redirect_url``, QR code content for ``qr_code``), and carries when the provider stops
waiting for the payer. After ``expires_at`` the payment can only end ``succeeded`` (the payer
acted just in time), ``failed`` or ``expired``, as the provider says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class NextActionType(StrEnum):
    REDIRECT_URL = "redirect_url"
    QR_CODE = "qr_code"


@dataclass(frozen=True, slots=True)
class NextAction:
    type: NextActionType
    expires_at: datetime
    url: str | None = None
    qr_code: str | None = None

    def __post_init__(self) -> None:
        wants_url = self.type is NextActionType.REDIRECT_URL
        if wants_url != (self.url is not None) or wants_url == (self.qr_code is not None):
            raise ValueError(f"a {self.type.value} next action carries exactly its own target")
        if self.expires_at.tzinfo is None:
            raise ValueError("a next action's expiry is an aware UTC time")

    @property
    def target(self) -> str:
        """The URL or the QR code content, whichever the type carries."""
        target = self.url if self.type is NextActionType.REDIRECT_URL else self.qr_code
        assert target is not None  # __post_init__
        return target

    @classmethod
    def of(cls, type_: NextActionType, target: str, expires_at: datetime) -> NextAction:
        if type_ is NextActionType.REDIRECT_URL:
            return cls(type_, expires_at, url=target)
        return cls(type_, expires_at, qr_code=target)

    def expired_at(self, now: datetime) -> bool:
        return now >= self.expires_at
