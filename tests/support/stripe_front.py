"""A loopback front for stripe-mock that answers chosen calls with Stripe's own error bodies.

stripe-mock is stateless and answers every call from its fixtures, so it can never refuse a
call because of a PaymentIntent's state. Real Stripe does: canceling a PaymentIntent that
was captured (say by hand in the Dashboard) or capturing one that was canceled is a 400
``invalid_request_error`` with code ``payment_intent_unexpected_state``, whose body carries
the PaymentIntent as it is (Stripe API reference, "Errors": ``error.payment_intent``).

Every request is forwarded to stripe-mock first, so the SDK's request is still checked
against Stripe's OpenAPI spec (a malformed call fails the test); for a refused call the front
then answers Stripe's error instead of stripe-mock's 200. Nothing else is changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import aiohttp
from aiohttp import web

UNEXPECTED_STATE: Final = "payment_intent_unexpected_state"


def unexpected_state_error(action: str, intent: Mapping[str, Any]) -> dict[str, Any]:
    """Stripe's 400 body for ``action`` ("cancel", "capture") of ``intent`` in a state that
    does not allow it, worded as Stripe words it."""
    status = intent["status"]
    allowed = (
        "requires_payment_method, requires_capture, requires_confirmation, requires_action, "
        "processing"
        if action == "cancel"
        else "requires_capture"
    )
    verb = "cancel this PaymentIntent" if action == "cancel" else "capture this PaymentIntent"
    return {
        "error": {
            "code": UNEXPECTED_STATE,
            "doc_url": "https://stripe.com/docs/error-codes/payment-intent-unexpected-state",
            "message": f"You cannot {verb} because it has a status of {status}. Only a "
            f"PaymentIntent with one of the following statuses may be {action}ed: {allowed}.",
            "payment_intent": dict(intent),
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_front",
            "type": "invalid_request_error",
        }
    }


@contextlib.asynccontextmanager
async def stripe_front(
    stripe_mock_url: str, refusals: Mapping[str, Mapping[str, Any]]
) -> AsyncIterator[str]:
    """Serve on a free loopback port; yield its base URL. ``refusals`` maps a path ending
    (``/cancel``, ``/capture``) of a POST to the 400 body answered for it."""
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("host", "content-length")
        }
        async with session.request(
            request.method, stripe_mock_url + request.path_qs, data=body, headers=headers
        ) as answer:
            payload = await answer.read()
            status = answer.status
            content_type = answer.headers.get("Content-Type", "application/json")
        refusal = next(
            (
                error
                for ending, error in refusals.items()
                if request.method == "POST" and request.path.endswith(ending)
            ),
            None,
        )
        if refusal is not None and status == 200:
            return web.json_response(refusal, status=400, headers={"Request-Id": "req_front"})
        return web.Response(body=payload, status=status, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()
