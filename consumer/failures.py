"""Why handling a command failed, as far as retrying it is concerned.

::

    Failure.kind
    ├── TRANSIENT   not the message's fault: the database or broker is unreachable, busy,
    │               restarting or misdeployed (a missing table), a provider is unavailable.
    │               Retried with back-off, without limit: a good message is never
    │               dead-lettered because the system around it is down.
    ├── PERMANENT   the message's own fault, and retrying cannot change it: a value the
    │               database refuses (SQLSTATE class 22, e.g. a NUL in text), a rule the
    │               domain says is broken (a PaygateError that is not retryable).
    │               Dead-lettered at once.
    └── UNKNOWN     anything else (a lost race that the next try resolves, a bug).
                    Dead-lettered after a bounded number of tries.

The verdict comes from the exception and the exceptions it was raised from (``__cause__``,
SQLAlchemy's ``orig``, an implicit ``__context__``): SQLAlchemy wraps the driver's error,
and asyncpg's error is wrapped again by SQLAlchemy's adapter. Evidence that the message is
at fault anywhere in that chain wins over a transient wrapper, and transient evidence wins
over none. When in doubt the answer is UNKNOWN, never PERMANENT: only the bound, not a
guess, may dead-letter a message.

Messages and reasons built here never quote the exception's text, which may hold SQL
parameters; the log line that reports the failure carries the full exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Final

import asyncpg  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError
from sqlalchemy import exc as sa

from domain.errors import ErrorCode, PaygateError
from providers.errors import ProviderError

# Reasons in the dead-letter header ``paygate.error.reason`` (see docs/dead-letters.md).
REASON_DATABASE_REFUSED: Final = "database_refused"
REASON_RULE_VIOLATION: Final = "rule_violation"
REASON_RETRIES_EXHAUSTED: Final = "retries_exhausted"

# SQLSTATE classes (the first two characters) that say the server, not the data, failed:
# connection exception, transaction rollback (serialization failure, deadlock),
# insufficient resources, object not in prerequisite state (lock not available), operator
# intervention (shutdown, statement timeout), system error, and syntax or access rule
# violation (a schema not migrated, a revoked grant: a deployment fault that would refuse
# every message alike, so it must stall the consumer, not empty the topic).
_TRANSIENT_SQLSTATE_CLASSES: Final = frozenset({"08", "40", "53", "55", "57", "58", "42"})
# Single states of class 25 (invalid transaction state, mostly a bug of the caller's) that say
# the server, not the statement, is at fault: read_only_sql_transaction (the connection
# landed on a hot standby after a failover, or the database was made read-only: every write
# of every message fails alike, so it must stall the consumer and end a reconciliation
# pass, not read as one payment's bug), and the server's own session and transaction
# timeouts (the connection is gone; the next try opens another).
_TRANSIENT_SQLSTATES: Final = frozenset({"25006", "25P03", "25P04"})
_DATA_EXCEPTION_CLASS: Final = "22"
_MAX_CHAIN: Final = 16


class FailureKind(Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Failure:
    """A verdict, and what a dead letter would say: a catalogue code, a reason, a message.

    For a TRANSIENT failure, which is never dead-lettered, they only describe it in logs.
    """

    kind: FailureKind
    code: ErrorCode
    reason: str
    message: str


def classify(error: BaseException) -> Failure:
    chain = list(_chain(error))
    for link in chain:
        permanent = _permanent(link)
        if permanent is not None:
            return permanent
    if any(_transient(link) for link in chain):
        return Failure(FailureKind.TRANSIENT, ErrorCode.SERVICE_UNAVAILABLE, "", _what(chain))
    return Failure(
        FailureKind.UNKNOWN, ErrorCode.INTERNAL_ERROR, REASON_RETRIES_EXHAUSTED, _what(chain)
    )


def outage_of(error: BaseException) -> str | None:
    """What ``error`` says is down, to name its outage in the logs (``kafka``, ``provider``,
    ``database``), or None when it is not TRANSIENT."""
    if classify(error).kind is not FailureKind.TRANSIENT:
        return None
    # The drivers' socket errors reach here unwrapped: what is neither Kafka's nor a
    # provider's is the database's.
    for link in _chain(error):
        if isinstance(link, KafkaError):
            return "kafka"
        if isinstance(link, ProviderError):
            return "provider"
        if isinstance(link, PaygateError):
            return "provider" if link.code.value.startswith("provider_") else "a dependency"
    return "database"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every exception behind it, outermost first (a bounded walk)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending and len(seen) < _MAX_CHAIN:
        link = pending.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        orig = getattr(link, "orig", None)
        if isinstance(orig, BaseException):
            pending.append(orig)
        if link.__cause__ is not None:
            pending.append(link.__cause__)
        elif link.__context__ is not None and not link.__suppress_context__:
            pending.append(link.__context__)


def _sqlstate(link: BaseException) -> str | None:
    sqlstate = getattr(link, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) and len(sqlstate) == 5 else None


def _permanent(link: BaseException) -> Failure | None:
    if isinstance(link, PaygateError):
        if link.spec.retryable:
            return None
        return Failure(FailureKind.PERMANENT, link.code, REASON_RULE_VIOLATION, link.message)
    sqlstate = _sqlstate(link)
    refused_by_server = sqlstate is not None and sqlstate.startswith(_DATA_EXCEPTION_CLASS)
    # asyncpg's own DataError (an InterfaceError and a ValueError): a value it cannot encode
    # for its column, refused before it is sent.
    refused_by_driver = (
        isinstance(link, asyncpg.exceptions.InterfaceError)
        and isinstance(link, ValueError)
        and not isinstance(link, asyncpg.exceptions.ClientConfigurationError)
    )
    if refused_by_server or refused_by_driver or isinstance(link, sa.DataError):
        state = f"SQLSTATE {sqlstate}, " if sqlstate else ""
        return Failure(
            FailureKind.PERMANENT,
            ErrorCode.INVALID_REQUEST,
            REASON_DATABASE_REFUSED,
            f"the database refused a value of this command ({state}{type(link).__name__})",
        )
    return None


def _transient(link: BaseException) -> bool:
    if isinstance(link, PaygateError):
        # internal_error is retryable for clients, but here it is a bug until proven not.
        return link.spec.retryable and link.code is not ErrorCode.INTERNAL_ERROR
    if isinstance(link, ProviderError):
        return link.retriable
    sqlstate = _sqlstate(link)
    if sqlstate is not None:
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES
    if isinstance(link, sa.DBAPIError) and link.connection_invalidated:
        return True
    return isinstance(
        link,
        (
            # SQLite's "database is locked" and "no such table" are OperationalErrors too.
            sa.OperationalError,
            sa.InterfaceError,
            sa.DisconnectionError,
            sa.TimeoutError,  # the connection pool's
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.InterfaceError,
            KafkaError,
            OSError,  # ConnectionError and TimeoutError among them
        ),
    )


def _what(chain: list[BaseException]) -> str:
    names = " <- ".join(type(link).__name__ for link in chain[:4])
    states = [state for state in map(_sqlstate, chain) if state]
    return names + (f" (SQLSTATE {states[0]})" if states else "")
