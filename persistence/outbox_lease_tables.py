"""The outbox relay's lease, on the shared ``metadata`` so ``create_schema`` makes it too.

Every consumer process runs an outbox relay over the same store; only the one that holds
this lease publishes (see :mod:`persistence.outbox_lease`). A row per lease, by name; the
relay's lease is the only one today.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table

from persistence.tables import metadata

outbox_lease = Table(
    "outbox_lease",
    metadata,
    Column("name", String(32), primary_key=True),
    # Which relay holds it: host, process id and a random suffix, for people to read.
    Column("holder", String(128), nullable=False),
    # Past this instant any relay may take the lease over; its holder renews it before then.
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
