"""The webhook receiver and sender the webhook tests share, as pytest fixtures.

Registered for every test by ``pytest_plugins`` in tests/conftest.py. A module whose
attempts must give up sooner (a receiver that does not answer in time) overrides
``sender_timeout_s``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from producer.webhook_sender import WebhookSender
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A running receiver that verifies every request; set its ``secret`` to the
    endpoint's."""
    receiver = await WebhookReceiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def sender_timeout_s() -> float:
    return 2.0


@pytest.fixture
async def sender(sender_timeout_s: float) -> AsyncIterator[WebhookSender]:
    """A started sender that may post to this machine (development addresses)."""
    sender = WebhookSender(development=True, timeout_s=sender_timeout_s)
    await sender.start()
    yield sender
    await sender.stop()
