"""The facades' shared rate limit, on the shared ``metadata`` so ``create_schema`` makes it.

One token bucket per client, in the database every facade instance and worker uses, so a
client's limit is the same whatever their number (see :mod:`persistence.rate_limit_store`).
Times are seconds since the epoch as floats, from the facades' clocks: the bucket is
arithmetic on them, which a float column keeps the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, String, Table

from persistence.tables import metadata

rate_limit_buckets = Table(
    "rate_limit_buckets",
    metadata,
    Column("client_id", String(64), primary_key=True),
    # Tokens left as of ``as_of``; refilled on the next take by the time gone by.
    Column("tokens", Float, nullable=False),
    Column("as_of", Float, nullable=False),
)
