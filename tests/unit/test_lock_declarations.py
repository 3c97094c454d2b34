"""Every writer-queue operation of a module that writes payment or refund rows declares the
rows it locks (persistence.lock_order), so its batch takes them first, in the one order.

An operation that locks a row it does not declare takes that lock in the middle of its
batch, after all the batch's declared ones, and two processes' batches can then wait on
each other (a refund's claim did: tests/integration/test_refund_claim_lock_order.py). Read
from the source, so a new write without its locks fails here before it deadlocks anywhere.
Only the sweeps whose rows are chosen by a query, which skip rows others hold (``SKIP
LOCKED``) and so never wait on a row lock, go undeclared.
"""

from __future__ import annotations

import ast
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
_ROW_TABLES = {"payments", "refunds", "provider_attempts", "stray_charges"}
# (module, method): the SKIP LOCKED sweeps of persistence.lock_order.
_SWEEPS = {
    ("persistence/payment_store.py", "expire_idempotency_keys"),
    ("persistence/stray_store.py", "mark_own_charges"),
}


def _writes_row_tables(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "persistence.tables"
        and any(alias.name in _ROW_TABLES for alias in node.names)
        for node in ast.walk(tree)
    )


def _undeclared_runs(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    if not _writes_row_tables(tree):
        return []
    module = str(path.relative_to(_ROOT))
    found: list[str] = []
    for method in ast.walk(tree):
        if not isinstance(method, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for call in ast.walk(method):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "run"
                and isinstance(call.func.value, ast.Attribute)
                and call.func.value.attr == "_writes"
                and not any(keyword.arg == "locks" for keyword in call.keywords)
                and (module, method.name) not in _SWEEPS
            ):
                found.append(f"{module}:{call.lineno} ({method.name})")
    return found


def test_every_write_of_a_row_module_declares_its_locks() -> None:
    modules = sorted((_ROOT / "persistence").glob("*.py"))
    assert any(path.name == "refund_store.py" for path in modules)
    undeclared = [line for path in modules for line in _undeclared_runs(path)]
    assert undeclared == []


def test_the_sweeps_left_undeclared_exist() -> None:
    # An allowance for a method that no longer exists would let a new one of that name
    # through unchecked.
    for module, method in _SWEEPS:
        tree = ast.parse((_ROOT / module).read_text())
        names = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        }
        assert method in names, f"{module} has no {method}"
