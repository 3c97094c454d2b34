"""Alipay's official SDK, used for what it does well: request models, RSA2 (SHA256withRSA)
signatures on requests, and verifying the signatures of answers and notifications.

Why the SDK does not send the requests itself: its transport (``WebUtils.do_post``) is
blocking ``http.client`` and connects to port 80 or 443 whatever the gateway URL says (it
drops the URL's port), so it can neither run on the event loop nor reach a gateway on
another port. The adapter therefore lets the SDK build and sign the whole form
(``DefaultAlipayClient.sdk_execute``) and sends it with aiohttp; the answer's signature is
checked by the SDK's own parser, ``DefaultAlipayClient.__parse_response``, which cuts the
signed ``*_response`` object out of the raw text exactly as Alipay signed it. That method is
private, hence the exact pin of ``alipay-sdk-python`` in pyproject.toml; a test calls it with
a wrong key, so an SDK upgrade that moves it fails loudly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.exception.Exception import AopException, ResponseException
from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa

from providers.alipay.config import AlipayConfig


class AlipaySignatureError(Exception):
    """An answer or a notification whose signature is missing, malformed or wrong."""


def _body(pem: str) -> str:
    """A key as the SDK wants it: the base64 body; it adds the PEM markers itself."""
    lines = [line.strip() for line in pem.strip().splitlines()]
    return "".join(line for line in lines if line and not line.startswith("-----"))


class AlipaySigner:
    def __init__(self, config: AlipayConfig) -> None:
        sdk_config = AlipayClientConfig()
        sdk_config.server_url = config.gateway_url
        sdk_config.app_id = config.app_id
        sdk_config.app_private_key = _body(config.app_private_key.get_secret_value())
        sdk_config.alipay_public_key = _body(config.alipay_public_key)
        sdk_config.sign_type = "RSA2"
        sdk_config.charset = "utf-8"
        sdk_config.format = "json"
        self._client = DefaultAlipayClient(alipay_client_config=sdk_config)
        self._public_key = sdk_config.alipay_public_key

    def signed_form(self, request: Any) -> str:
        """The request's every parameter, signed, URL-encoded as a form body."""
        return str(self._client.sdk_execute(request))

    def page_url(self, request: Any) -> str:
        """The signed gateway URL a payer opens (page.pay)."""
        return str(self._client.page_execute(request, http_method="GET"))

    def verified_answer(self, raw: bytes) -> dict[str, Any]:
        """The ``*_response`` object of a gateway answer, after the SDK verified its
        signature; raises :class:`AlipaySignatureError` otherwise."""
        try:
            content = self._client._DefaultAlipayClient__parse_response(raw)
        except (AopException, ResponseException, ValueError, TypeError) as exc:
            raise AlipaySignatureError(f"answer not verified: {type(exc).__name__}") from exc
        try:
            answer = json.loads(content)
        except ValueError as exc:
            raise AlipaySignatureError("verified answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise AlipaySignatureError("verified answer is not an object")
        return answer

    def verify_notification(self, params: Mapping[str, str]) -> bool:
        return verify_notification(params, self._public_key)


def verify_notification(params: Mapping[str, str], alipay_public_key: str) -> bool:
    """Whether an asynchronous notification is signed by Alipay's key: every parameter but
    ``sign`` and ``sign_type``, sorted, joined as ``k=v&...``, RSA2 (Alipay's rule)."""
    sign = params.get("sign")
    if not sign or params.get("sign_type") != "RSA2":
        return False
    content = get_sign_content({k: v for k, v in params.items() if k not in ("sign", "sign_type")})
    try:
        return bool(verify_with_rsa(_body(alipay_public_key), content.encode("utf-8"), sign))
    except Exception:  # the rsa package raises VerificationError, binascii.Error, ...
        return False
