"""A stateful stand-in for the few Stripe API calls the Stripe adapter makes, served to the
official SDK as its HTTP client, whose Search API trails charges as Stripe's does.

stripe-mock (tests/support/stripe_mock.py) checks requests against Stripe's OpenAPI spec but
stores nothing: its search answers a fixture whatever is asked, so it cannot show a charge
that is made and then missing from search. This keeps what it is sent and answers as Stripe
documents: PaymentIntents created (idempotently, by the ``Idempotency-Key`` header) and
retrieved by id at once; searched by metadata only ``hidden_for`` after they were created, on
the test's clock (Stripe: "usually under a minute, up to an hour during outages"); Refunds
created idempotently and listed by PaymentIntent at once. ``refuse_next`` answers that many
next calls with a 429 (refused before processing: nothing created); ``lose_next`` processes
that many next calls but answers them with a 500 (Stripe's ``api_error``: done, the answer
lost). A PaymentIntent keeps the ``capture_method`` it was created with (Stripe's default,
``automatic_async``, when none is sent); ``holds_captures_at_once`` leaves one created to
capture at once in ``requires_capture`` (authorized, not captured), a state Stripe documents
for a manual capture only, which paygate must still never record as an authorization.
A PaymentIntent is canceled (idempotently) as Stripe documents: only from
``requires_payment_method``, ``requires_capture``, ``requires_confirmation``,
``requires_action`` or ``processing``, a hold then released; any other status answers 400
``payment_intent_unexpected_state``.
An idempotency key is bound to the endpoint it was first sent to, whatever that answered
(a refused cancel too): another endpoint's request under it is answered 400
``idempotency_error``, as Stripe does.
``declines_with`` (a ``decline_code``) declines every PaymentIntent created from then on as
Stripe declines a card: HTTP 402, a ``card_error`` (its message ``decline_message``) naming the
PaymentIntent, left in ``requires_payment_method`` with that ``last_payment_error`` (the same
answer again for its key).
Anything else it is sent is a 404, so a test notices a call it did not expect.

Refunds made in the Dashboard (outside paygate) are :meth:`LaggingStripe.refund_outside`;
each PaymentIntent's Charge is rendered as Stripe does (:meth:`LaggingStripe.charge`), with
``amount_refunded`` the sum of its refunds, whoever made them: in a ``charge.refunded``
event, and as the PaymentIntent's ``latest_charge`` when asked with ``expand[]``.
``hold_refunds`` keeps the answer to a refund Stripe has made (it counts in the Charge's
``amount_refunded``) until the test sets ``release_refunds``: a refund in flight.
``refunds_answered`` is the status a new Refund is made in (``succeeded``, or ``pending``
for one that settles later); :meth:`LaggingStripe.fail_refund` fails one afterwards, as the
card network does: ``failed`` with a ``failure_reason``, no longer counted in the Charge's
``amount_refunded``; it returns the Refund as a ``refund.failed`` event renders it.
A refund (paygate's, or one in the Dashboard) of more than is left unrefunded on the charge
is refused as Stripe refuses it (``amount_too_large``, or ``charge_already_refunded`` when
nothing is left): what keeps a refund through paygate from ever going beyond what the payer
paid when paygate counts less refunded outside than Stripe holds.
Every Refund has its ``created``, and :meth:`LaggingStripe.now_unix` is the time, on the
test's clock in Stripe's whole seconds, to stamp an event made of a snapshot taken then
(an event's ``created``): a test that moves the clock between a refund, its failure and
the Charge's readings orders them as Stripe's times would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import stripe

from tests.support.clock import Clock

_SEARCHED_KEY = re.compile(r"^metadata\['(?P<field>[^']+)'\]:'(?P<value>(?:[^'\\]|\\.)*)'$")
_CANCEL_PATH = re.compile(r"^/v1/payment_intents/(?P<id>[^/]+)/cancel$")
# Stripe: "You can cancel a PaymentIntent object when it's in one of these statuses".
_CANCELABLE = frozenset(
    {
        "requires_payment_method",
        "requires_capture",
        "requires_confirmation",
        "requires_action",
        "processing",
    }
)


class LaggingStripe(stripe.HTTPClient):
    name = "lagging-stripe"

    def __init__(self, clock: Clock, *, hidden_for: timedelta) -> None:
        super().__init__()
        self._clock = clock
        self._hidden_for = hidden_for
        self._ids = itertools.count(1)
        self.intents: dict[str, dict[str, Any]] = {}  # by id
        self.created_at: dict[str, datetime] = {}  # by PaymentIntent id
        self.refunds: dict[str, dict[str, Any]] = {}  # by id
        self._by_idempotency_key: dict[str, dict[str, Any]] = {}
        # The endpoint each key was first used on: Stripe keeps a key's first request, its
        # refusals included, and answers a use on another endpoint with an idempotency_error.
        self._endpoint_of_key: dict[str, str] = {}
        self.refuse_next = 0
        self.lose_next = 0
        self.holds_captures_at_once = False
        self.declines_with: str | None = None
        self.decline_message = "Your card was declined."
        self._declined: dict[str, dict[str, Any]] = {}  # by idempotency key
        self.searches_missing_a_charge = 0
        self.hold_refunds = False
        self.refunds_answered = "succeeded"
        self.refund_held = asyncio.Event()
        self.release_refunds = asyncio.Event()

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        status, body = self._answer(method, url, headers, post_data)
        if self.hold_refunds and (method, urlsplit(url).path) == ("post", "/v1/refunds"):
            self.refund_held.set()
            await self.release_refunds.wait()
        if self.lose_next and status == 200:
            self.lose_next -= 1
            status, body = 500, {"error": {"type": "api_error", "message": "answer lost"}}
        return json.dumps(body).encode(), status, {"request-id": f"req_{next(self._ids)}"}

    def _answer(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> tuple[int, dict[str, Any]]:
        if self.refuse_next:
            self.refuse_next -= 1
            return 429, {"error": {"type": "invalid_request_error", "code": "rate_limit"}}
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        form = {k: v[0] for k, v in parse_qs(post_data or "").items()}
        key = headers.get("Idempotency-Key")
        path = parts.path
        if method == "post" and key is not None:
            first = self._endpoint_of_key.setdefault(key, path)
            if first != path:
                return 400, {
                    "error": {
                        "type": "idempotency_error",
                        "message": "Keys for idempotent requests can only be used for the "
                        "same endpoint they were first used for",
                    }
                }
        if (method, path) == ("post", "/v1/payment_intents"):
            if key is not None and key in self._declined:
                return 402, self._declined[key]
            if self.declines_with is not None and (
                key is None or key not in self._by_idempotency_key
            ):
                return 402, self._decline(key, form, self.declines_with)
            return 200, self._once(key, lambda: self._create_intent(form))
        if method == "post" and (cancel := _CANCEL_PATH.match(path)):
            return self._cancel(cancel["id"], key)
        if (method, path) == ("get", "/v1/payment_intents/search"):
            return 200, self._search(query["query"])
        if method == "get" and path.startswith("/v1/payment_intents/"):
            found = self.intents.get(path.rsplit("/", 1)[1])
            if found is None:
                return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
            if "latest_charge" in parse_qs(parts.query).get("expand[0]", []):
                return 200, {**found, "latest_charge": self.charge(found["id"])}
            return 200, found
        if (method, path) == ("post", "/v1/refunds"):
            if key is None or key not in self._by_idempotency_key:
                refused = self._beyond_unrefunded(form)
                if refused is not None:
                    return 400, refused
            return 200, self._once(key, lambda: self._create_refund(form))
        if (method, path) == ("get", "/v1/refunds"):
            data = [
                r for r in self.refunds.values() if r["payment_intent"] == query["payment_intent"]
            ]
            return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/refunds"}
        return 404, {"error": {"type": "invalid_request_error", "message": f"{method} {path}"}}

    def _once(self, key: str | None, create: Any) -> dict[str, Any]:
        """Stripe's idempotency: a key seen before answers its first result again."""
        if key is not None and key in self._by_idempotency_key:
            return self._by_idempotency_key[key]
        made: dict[str, Any] = create()
        if key is not None:
            self._by_idempotency_key[key] = made
        return made

    def _create_intent(self, form: Mapping[str, str]) -> dict[str, Any]:
        intent_id = f"pi_sim{next(self._ids)}"
        capture_method = form.get("capture_method", "automatic_async")
        held = capture_method == "manual" or self.holds_captures_at_once
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "currency": form["currency"],
            "capture_method": capture_method,
            "status": "requires_capture" if held else "succeeded",
            "metadata": _metadata(form),
            "created": int(self._clock().timestamp()),
        }
        self.intents[intent_id] = intent
        self.created_at[intent_id] = self._clock()
        return intent

    def _decline(self, key: str | None, form: Mapping[str, str], code: str) -> dict[str, Any]:
        """Stripe's answer to a declined card: the PaymentIntent it made, waiting for another
        payment method, inside the card error."""
        error = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": code,
            "message": self.decline_message,
        }
        intent = self._create_intent(form)
        intent.update(status="requires_payment_method", last_payment_error=error)
        body = {"error": {**error, "payment_intent": intent}}
        if key is not None:
            self._declined[key] = body
        return body

    def _cancel(self, intent_id: str, key: str | None) -> tuple[int, dict[str, Any]]:
        if key is not None and key in self._by_idempotency_key:
            return 200, self._by_idempotency_key[key]
        intent = self.intents.get(intent_id)
        if intent is None:
            return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
        if intent["status"] not in _CANCELABLE:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "payment_intent_unexpected_state",
                    "message": f"This PaymentIntent's status is {intent['status']}.",
                }
            }
        intent.update(status="canceled", cancellation_reason=None, amount_capturable=0)
        if key is not None:
            self._by_idempotency_key[key] = intent
        return 200, intent

    def _search(self, query: str) -> dict[str, Any]:
        wanted = _SEARCHED_KEY.match(query)
        assert wanted is not None, f"a search this simulator cannot read: {query}"
        field = wanted["field"]
        value = re.sub(r"\\(.)", r"\1", wanted["value"])
        matching = [i for i in self.intents.values() if i["metadata"].get(field) == value]
        indexed = [
            i for i in matching if self._clock() >= self.created_at[i["id"]] + self._hidden_for
        ]
        if len(indexed) < len(matching):
            self.searches_missing_a_charge += 1
        return {"object": "search_result", "data": indexed, "has_more": False, "url": "/search"}

    def _create_refund(self, form: Mapping[str, str]) -> dict[str, Any]:
        refund_id = f"re_sim{next(self._ids)}"
        intent = self.intents[form["payment_intent"]]
        refund = {
            "id": refund_id,
            "object": "refund",
            "status": self.refunds_answered,
            "amount": int(form.get("amount", intent["amount"])),
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "metadata": _metadata(form),
            "created": self.now_unix(),
        }
        self.refunds[refund_id] = refund
        return refund

    def now_unix(self) -> int:
        """The test clock's time in Stripe's timestamps (whole seconds since the epoch)."""
        return int(self._clock().timestamp())

    def unrefunded(self, intent_id: str) -> int:
        """What is left to refund of the PaymentIntent's charge: its amount less its
        refunds that hold money (succeeded or pending; a failed one gave it back)."""
        refunded = sum(
            r["amount"]
            for r in self.refunds.values()
            if r["payment_intent"] == intent_id and r["status"] != "failed"
        )
        return int(self.intents[intent_id]["amount"]) - refunded

    def _beyond_unrefunded(self, form: Mapping[str, str]) -> dict[str, Any] | None:
        """Stripe's refusal of a refund of more than is left unrefunded on the charge
        (``charge_already_refunded`` when nothing is, else ``amount_too_large``, a 400
        ``invalid_request_error`` on ``amount``); None when it is within it. Nothing is
        created, and the refusal is not kept under the key: a request refused in
        validation is not an idempotent result."""
        intent_id = form["payment_intent"]
        left = self.unrefunded(intent_id)
        amount = int(form.get("amount", left))
        if amount <= left:
            return None
        if left <= 0:
            code, message = (
                "charge_already_refunded",
                f"Charge ch_{intent_id[3:]} has already been refunded.",
            )
        else:
            code = "amount_too_large"
            message = (
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            )
        return {
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "param": "amount",
                "message": message,
            }
        }

    def fail_refund(
        self, refund_id: str, reason: str = "expired_or_canceled_card"
    ) -> dict[str, Any]:
        """The card network fails the Refund after Stripe answered it: its money goes back
        to the merchant's balance. The Refund as a ``refund.failed`` event renders it."""
        # A new object: an answer already given (one held in flight, an idempotent replay)
        # stays what Stripe said then, as Stripe replays a key's first response.
        failed = {**self.refunds[refund_id], "status": "failed", "failure_reason": reason}
        self.refunds[refund_id] = failed
        return dict(failed)

    def refund_outside(self, intent_id: str, amount: int) -> str:
        """A refund made by hand in Stripe's Dashboard: no key, no paygate metadata. Its id."""
        if amount > self.unrefunded(intent_id):
            raise ValueError("Stripe's Dashboard refuses a refund beyond what is unrefunded")
        refund_id = f"re_dash{next(self._ids)}"
        intent = self.intents[intent_id]
        self.refunds[refund_id] = {
            "id": refund_id,
            "object": "refund",
            "status": "succeeded",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent_id,
            "metadata": {},
            "created": self.now_unix(),
        }
        return refund_id

    def charge(self, intent_id: str) -> dict[str, Any]:
        """The PaymentIntent's Charge as Stripe renders it (a captured one): its metadata
        copied from the PaymentIntent's, ``amount_refunded`` all its refunds."""
        intent = self.intents[intent_id]
        refunded = intent["amount"] - self.unrefunded(intent_id)
        return {
            "id": f"ch_{intent_id[3:]}",
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": refunded,
            "captured": True,
            "currency": intent["currency"],
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "paid": True,
            "payment_intent": intent_id,
            "refunded": refunded == intent["amount"],
            "status": "succeeded",
        }


def _metadata(form: Mapping[str, str]) -> dict[str, str]:
    return {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")}
