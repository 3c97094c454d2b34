"""The event id of a rise of a payment's refunded total by refunds made outside paygate is
never the id of an earlier rise to the same total (domain.events.outside_refund_event_id)."""

from __future__ import annotations

import uuid

from domain import events
from domain.events import outside_refund_event_id


def test_a_total_reached_again_after_a_failure_has_an_id_of_its_own():
    first = outside_refund_event_id("pay_1", 300)
    # Taken back to 0 by a failure of 300, then raised to 300 again.
    again = outside_refund_event_id("pay_1", 300, 300)
    assert again != first
    # A second fall and rise to the same total: another id again.
    assert outside_refund_event_id("pay_1", 300, 600) not in {first, again}


def test_before_any_failure_the_id_is_the_one_named_by_the_total_alone():
    # Ids already written (on the topic, in webhook deliveries) stay what they were.
    named_before = uuid.uuid5(events._EVENT_ID_NAMESPACE, "pay_1:refunded-outside:300")
    assert outside_refund_event_id("pay_1", 300, 0) == str(named_before)
    assert outside_refund_event_id("pay_1", 300) != outside_refund_event_id("pay_1", 301)
    assert outside_refund_event_id("pay_1", 300) != outside_refund_event_id("pay_2", 300)
