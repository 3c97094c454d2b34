"""Every writer-queue write declares the rows it locks (persistence.lock_order), so its batch
takes them first, in the one order; the few that lock nothing of that order say why.

An operation that locks a row it does not declare takes that lock in the middle of its
batch, after all the batch's declared ones, and two processes' batches can then wait on
each other (a refund's claim did: tests/integration/test_refund_claim_lock_order.py; so did
a rate-limit take: tests/integration/test_rate_limit_lock_order.py). Read from the source,
so a new write without its locks fails here before it deadlocks anywhere.

Every ``.run(...)`` of a writer queue (a receiver named ``writes`` or ``_writes``) in the
project's packages passes ``locks=`` (never the literal ``None``), or is listed below:

* the sweeps whose rows are chosen by a query, which skip rows others hold (``SKIP
  LOCKED``) and so never wait on a row lock;
* the writes of tables outside the order (the outbox and its lease, the vault's data keys,
  a new token, a new or deleted webhook endpoint's row), which lock no order, bucket,
  endpoint, vault client, payment, refund or attempt. What they lock only they lock, so
  they cannot close a cycle with the order's locks; between themselves a deadlock is
  broken by the database and the writer queue runs the aborted operations again
  (persistence.group_commit). The vault's writes of existing tokens were listed here until
  two processes' deletes of a client's tokens deadlocked
  (tests/integration/test_vault_lock_order.py): they declare their client now.

Checking every package, not only those that import the payment tables, is what keeps the
rate limiter's declaration (a bucket's advisory lock) from being dropped unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = (
    "consumer",
    "devtools",
    "domain",
    "http_facade",
    "paygate",
    "persistence",
    "producer",
    "providers",
    "schemas",
    "telemetry",
    "vault",
)
_SWEEPS = {
    ("persistence/payment_store.py", "expire_idempotency_keys"),
    ("persistence/stray_store.py", "mark_own_charges"),
    ("persistence/webhook_store.py", "prune"),
    ("vault/rows.py", "delete_expired"),
}
_OUTSIDE_THE_ORDER = {
    ("persistence/outbox.py", "enqueue"),
    ("persistence/outbox.py", "mark_published"),
    ("persistence/outbox.py", "prune"),
    ("persistence/outbox_lease.py", "acquire"),
    ("persistence/outbox_lease.py", "release"),
    # Deleted endpoints' rows, which no other write changes (a delete sets deleted_at).
    ("persistence/webhook_secrets.py", "erase_deleted"),
    # The data keys' rows: one per write, written by ``paygate keys`` alone, one at a time;
    # a retire locks its key's row first and waits on nothing after it.
    ("vault/rows.py", "add_key"),
    ("vault/rows.py", "rewrap_key"),
    ("vault/rows.py", "retire_key"),
    # (A new token's insert declares its client's vault lock, shared, which a shred of the
    # client takes exclusive: tests/integration/test_vault_shred_race.py. It then reads its
    # data key's row FOR KEY SHARE, which only a retire of that key (holding nothing else)
    # waits on or makes it wait on (persistence.vault_key_guard; a webhook secret's write
    # reads it alike, and a new endpoint's declares RowLocks(): nothing). The writes of
    # existing tokens declare their client: tests/integration/test_vault_lock_order.py.)
}
_ALLOWED = _SWEEPS | _OUTSIDE_THE_ORDER


def _modules() -> list[Path]:
    return sorted(path for package in _PACKAGES for path in (_ROOT / package).rglob("*.py"))


def _is_writer_queue_run(call: ast.Call) -> bool:
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr != "run":
        return False
    receiver = func.value
    name = (
        receiver.attr
        if isinstance(receiver, ast.Attribute)
        else receiver.id
        if isinstance(receiver, ast.Name)
        else None
    )
    return name in {"writes", "_writes"}


def _declares(call: ast.Call) -> bool:
    return any(
        keyword.arg == "locks"
        and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is None)
        for keyword in call.keywords
    )


def _undeclared_runs(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    module = str(path.relative_to(_ROOT))
    found: list[str] = []
    for method in ast.walk(tree):
        if not isinstance(method, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for call in ast.walk(method):
            if (
                isinstance(call, ast.Call)
                and _is_writer_queue_run(call)
                and not _declares(call)
                and (module, method.name) not in _ALLOWED
            ):
                found.append(f"{module}:{call.lineno} ({method.name})")
    return found


def test_every_write_declares_its_locks() -> None:
    modules = _modules()
    assert any(path.name == "rate_limit_store.py" for path in modules)
    undeclared = sorted({line for path in modules for line in _undeclared_runs(path)})
    assert undeclared == []


def test_the_rate_limiters_take_is_checked() -> None:
    # It imports none of the payment tables: a check of only the modules that do let its
    # declaration go unwatched.
    path = _ROOT / "persistence" / "rate_limit_store.py"
    source = path.read_text().replace(", locks=RowLocks.of(buckets=[client_id])", "")
    assert "locks=" not in source.split("async def take", 1)[1]
    tree = ast.parse(source)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert any(_is_writer_queue_run(call) and not _declares(call) for call in calls)


def test_the_writes_left_undeclared_exist() -> None:
    # An allowance for a method that no longer exists would let a new one of that name
    # through unchecked.
    for module, method in _ALLOWED:
        tree = ast.parse((_ROOT / module).read_text())
        names = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        }
        assert method in names, f"{module} has no {method}"
