"""Delivers queued webhooks: claims due deliveries, sends them, records each outcome.

Where it runs: every consumer process runs one (``PAYGATE_WEBHOOKS_DISPATCH``, on by
default), next to the outbox relay; ``paygate webhooks run`` runs one alone, for an estate
that wants deliveries off the consumer's hosts. Several may run at once: each attempt is
owned by the dispatcher that claimed it (:meth:`persistence.webhook_store.WebhookStore.claim_due`).

Invariants:

* **At least once.** A delivery is pending until an attempt is answered 2xx; a failed
  attempt is scheduled again by the :class:`domain.webhook_retry.RetryPolicy` (exponential
  back-off with jitter, for a day by default) and marked failed only when its window is
  over. A dispatcher that dies mid-attempt leaves a claim that expires after ``lease``;
  another then sends the delivery again (same ``webhook-id``: the receiver dedupes).
* **A receiver never slows payments.** The dispatcher shares nothing with the command
  pipeline but the database writer queue, for one short write per attempt; attempts run
  as tasks, at most ``max_in_flight`` at once, at most ``per_endpoint`` per endpoint, each
  bounded by the sender's timeout; so a slow or dead endpoint holds at most
  ``per_endpoint`` places, and the others' deliveries go on (no head-of-line blocking).
* The claim's lease outlasts an attempt (the sender's timeout) with room to record it.
* **A signing secret is clear only for its attempt**: opened (decrypted) just before the
  request is signed, never logged. One that does not open (its data key retired or
  unknown, its row altered) fails the attempt like an unreachable receiver, so it is
  retried while an operator restores the key, and counted as ``secret_unavailable``.
  The delivery's error (``lastError``, which the endpoint's client reads) is
  :data:`CANNOT_SIGN`, the same whatever the cause: the catalogue code and the data
  key's id are for operators, in the log, not for clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final, Protocol

from domain.clock import utc_now
from domain.errors import PaygateError
from domain.webhook_retry import RetryPolicy
from persistence.webhook_store import DueDelivery
from producer.webhook_sender import SendOutcome
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.webhooks")

CANNOT_SIGN: Final = (
    "the delivery could not be signed: paygate cannot read the endpoint's signing secret "
    "at the moment; it is retried"
)


class DeliveryQueue(Protocol):
    async def claim_due(
        self,
        limit: int,
        *,
        per_endpoint: int,
        in_flight: Mapping[str, int],
        lease: timedelta,
    ) -> list[DueDelivery]: ...

    async def record_attempt(
        self,
        delivery: DueDelivery,
        *,
        delivered: bool,
        status_code: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> bool: ...

    async def secret_of(self, delivery: DueDelivery) -> str | None:
        """None: the delivery is no longer this attempt's to send (endpoint deleted, claim
        taken over); nothing is signed."""
        ...


class Sender(Protocol):
    async def send(self, *, url: str, secret: str, event_id: str, payload: str) -> SendOutcome: ...


class WebhookDispatcher:
    def __init__(
        self,
        queue: DeliveryQueue,
        sender: Sender,
        metrics: Metrics,
        *,
        policy: RetryPolicy | None = None,
        max_in_flight: int = 32,
        per_endpoint: int = 4,
        lease: timedelta = timedelta(seconds=60),
        poll_s: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if max_in_flight < 1 or per_endpoint < 1:
            raise ValueError("max_in_flight and per_endpoint must be at least 1")
        self._queue = queue
        self._sender = sender
        self._metrics = metrics
        self._policy = policy or RetryPolicy()
        self._max_in_flight = max_in_flight
        self._per_endpoint = per_endpoint
        self._lease = lease
        self._poll_s = poll_s
        self._clock = clock
        self._uniform = uniform
        self._in_flight: dict[asyncio.Task[None], str] = {}
        # A counter's series exists from its first increment; one born at 1 shows no
        # increase() to the alert on deliveries that gave up, so each is born at 0 here.
        for result in ("delivered", "failed", "refused_address", "gave_up", "secret_unavailable"):
            metrics.webhook_attempts.labels(result)
        self._wakeup = asyncio.Event()

    def notify(self) -> None:
        """New deliveries may be due: look now rather than at the next poll."""
        self._wakeup.set()

    async def dispatch_once(self) -> int:
        """Claim what is due (up to the free places), send it, and wait for those attempts;
        return how many were made. (Tests drive the dispatcher with it, step by step.)"""
        started = await self._start_due()
        if started:
            await asyncio.gather(*started)
        return len(started)

    async def run(self) -> None:
        """Dispatch until cancelled; a failing pass is logged and retried with a back-off."""
        backoff = 0.1
        try:
            while True:
                self._wakeup.clear()
                try:
                    await self._start_due()
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook dispatch failed; retrying in %.1fs", backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                wakeup = asyncio.ensure_future(self._wakeup.wait())
                try:
                    # Wake when told, when an attempt ends (a place is free), or at the poll.
                    await asyncio.wait(
                        {wakeup, *self._in_flight},
                        timeout=self._poll_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    # Also when the dispatcher is cancelled (the service stopping): a
                    # waiter left pending outlives its stopped service, and is destroyed
                    # pending when it is collected ("Task was destroyed but it is pending").
                    # Not awaited: a cancellation of this task arriving meanwhile would be
                    # taken for the waiter's own and swallowed; the loop ends it next turn.
                    wakeup.cancel()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Cancel the attempts under way (their claims expire, another dispatcher sends
        them again); safe to call twice."""
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _start_due(self) -> list[asyncio.Task[None]]:
        free = self._max_in_flight - len(self._in_flight)
        if free <= 0:
            return []
        due = await self._queue.claim_due(
            free,
            per_endpoint=self._per_endpoint,
            in_flight=Counter(self._in_flight.values()),
            lease=self._lease,
        )
        started = []
        for delivery in due:
            task = asyncio.create_task(self._attempt(delivery), name=f"webhook-{delivery.id}")
            self._in_flight[task] = delivery.endpoint_id
            task.add_done_callback(self._in_flight.pop)
            started.append(task)
        return started

    async def _attempt(self, delivery: DueDelivery) -> None:
        began = time.monotonic()
        sent = await self._send(delivery)
        if sent is None:
            # Its endpoint was deleted (the delete failed the delivery) or another
            # dispatcher took it over: nothing to send or record here.
            log.info(
                "webhook delivery not sent: its endpoint was deleted or its claim taken over",
                extra={"delivery": delivery.id, "endpoint": delivery.endpoint_id},
            )
            return
        outcome, unopened = sent
        self._metrics.webhook_attempt_seconds.observe(time.monotonic() - began)
        attempts = delivery.attempts + 1
        next_at = (
            None
            if outcome.delivered
            else self._policy.next_attempt(
                created_at=delivery.created_at,
                failed_at=self._clock(),
                attempts=attempts,
                uniform=self._uniform,
            )
        )
        try:
            recorded = await self._queue.record_attempt(
                delivery,
                delivered=outcome.delivered,
                status_code=outcome.status_code,
                error=outcome.error,
                next_attempt_at=next_at,
            )
        except Exception:
            # The claim expires and the delivery is sent again: at least once.
            log.exception("could not record a webhook attempt", extra={"delivery": delivery.id})
            return
        result = (
            "secret_unavailable" if unopened and next_at is not None else _result(outcome, next_at)
        )
        self._metrics.webhook_attempts.labels(result).inc()
        if not recorded:
            log.warning(
                "webhook attempt not recorded: its claim was taken over",
                extra={"delivery": delivery.id},
            )
        elif result == "gave_up":
            log.warning(
                "webhook delivery failed for good",
                extra={"delivery": delivery.id, "attempts": attempts, "error": outcome.error},
            )

    async def _send(self, delivery: DueDelivery) -> tuple[SendOutcome, bool] | None:
        """The attempt's outcome, and whether it failed because the secret did not open;
        None if the delivery is no longer to be sent (see DeliveryQueue.secret_of)."""
        try:
            secret = await self._queue.secret_of(delivery)
        except PaygateError as exc:
            # The code and message name the data key, never the secret (vault.errors): an
            # operator's lead, logged here only; the client reads the stable message.
            log.error(
                "webhook signing secret does not open",
                extra={
                    "delivery": delivery.id,
                    "endpoint": delivery.endpoint_id,
                    "error": f"{exc.code.value}: {exc.message}",
                },
            )
            return SendOutcome(False, None, CANNOT_SIGN), True
        if secret is None:
            return None
        outcome = await self._sender.send(
            url=delivery.url, secret=secret, event_id=delivery.event_id, payload=delivery.payload
        )
        return outcome, False


def _result(outcome: SendOutcome, next_at: datetime | None) -> str:
    if outcome.delivered:
        return "delivered"
    if next_at is None:
        return "gave_up"
    return "refused_address" if outcome.refused else "failed"
