"""Hand-written fakes of the consumer's ports (consumer/ports.py), in memory.

One :class:`FakeDatabase` holds the rows the fakes share, as the SQL stores share one
database: payments (whose claim covers a payment's attempts *and* its capture), refunds, the
outbox. Each fake applies the rules of its SQL store that a handler can observe:

* claims as persistence.claims states them (see tests.support.fake_claims): taken only when
  free or expired, every write of the holder checked against the row's current token;
* write-ahead: a begin records the payment and its open attempt (or the refund and its
  reservation, or the move to ``capturing``) and claims it for the caller;
* a finish moves a row only along the allowed transitions and only for the claim's holder,
  queues its event in the same step, and releases the claim;
* order protection, key resolution and refund rules through the same pure domain rules.

What they add for tests: every call is recorded (``calls``), and :meth:`before` runs
another worker's move just before the handler's next call of a method, so an interleaving
("the claim is taken over during the back-off") is a fixed order of steps, not a timing.
SQL itself (locks, batches, rollbacks) is the integration tests' business.

One module per port (fake_payment_store, fake_refund_store, fake_capture_store,
fake_stray_records) over fake_database; tests import them from here.
"""

from tests.support.fake_capture_store import FakeCaptureStore
from tests.support.fake_database import LEASE, FakeDatabase, FakePaymentRow, FakeRefundRow
from tests.support.fake_payment_store import FakePaymentStore
from tests.support.fake_refund_store import FakeRefundStore
from tests.support.fake_stray_records import FakeStrayRecords, Reversal

__all__ = [
    "LEASE",
    "FakeCaptureStore",
    "FakeDatabase",
    "FakePaymentRow",
    "FakePaymentStore",
    "FakeRefundRow",
    "FakeRefundStore",
    "FakeStrayRecords",
    "Reversal",
]
