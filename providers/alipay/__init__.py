"""Alipay through its official SDK (``alipay-sdk-python``): face-to-face QR and web redirect
payments that finish later, queries, refunds and closing unpaid trades.
"""

from providers.alipay.adapter import AlipayProvider
from providers.alipay.config import AlipayConfig, AlipayMode
from providers.alipay.signing import AlipaySigner, verify_notification

__all__ = ["AlipayConfig", "AlipayMode", "AlipayProvider", "AlipaySigner", "verify_notification"]
