"""What the Alipay adapter needs: the app's identity and keys, the gateway, where Alipay
notifies us, and which product a payment uses."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import SecretStr


class AlipayMode(StrEnum):
    # Face-to-face: alipay.trade.precreate answers a QR code for the payer to scan.
    QR = "qr"
    # Web: alipay.trade.page.pay is a signed URL on the gateway that the payer opens.
    PAGE = "page"


@dataclass(frozen=True, slots=True)
class AlipayConfig:
    """``app_private_key``: the app's RSA private key (PKCS#1 PEM, or its base64 body as
    Alipay's console shows it); ``alipay_public_key``: Alipay's public key (X.509 PEM, or
    its body). ``action_ttl_s``: how long the payer has, sent as the trade's expiry."""

    app_id: str
    app_private_key: SecretStr
    alipay_public_key: str
    gateway_url: str
    notify_url: str | None = None
    return_url: str | None = None
    mode: AlipayMode = AlipayMode.QR
    timeout_s: float = 15.0
    action_ttl_s: float = 900.0
    name: str = "alipay"

    def __post_init__(self) -> None:
        if not self.gateway_url.endswith("/gateway.do"):
            raise ValueError("the Alipay gateway URL ends with /gateway.do")
        if not 60 <= self.action_ttl_s <= 15 * 24 * 3600:
            raise ValueError("action_ttl_s must be between one minute and 15 days")
