"""An Alipay-protocol simulator, part of the sandbox service: ``gateway.do`` as Alipay's
open API documents it, RSA2 signatures checked and made, and signed asynchronous
notifications. See docs/sandbox.md ("Alipay") for the test amounts and what they do.
"""

from providers.sandbox.alipay.gateway import AlipaySimulator, add_alipay_routes
from providers.sandbox.alipay.rsa2 import Rsa2Keys
from providers.sandbox.alipay.trades import BEHAVIOURS, TradeBehaviour

__all__ = ["BEHAVIOURS", "AlipaySimulator", "Rsa2Keys", "TradeBehaviour", "add_alipay_routes"]
