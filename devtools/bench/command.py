"""How every bench command runs its coroutine and turns the way it ended into an exit code."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from aiokafka.errors import KafkaError

from devtools.bench.environment import BenchError


def bench_exit_code(run: Coroutine[Any, Any, object]) -> int:
    """Run ``run`` to its end: 1 when it returned False (a bench whose runs failed), or
    when it could not measure (a :class:`BenchError`, or a Kafka error: typically an unreachable
    broker, said without a traceback through aiokafka); 130 when interrupted; else 0."""
    try:
        ok = asyncio.run(run)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except KafkaError as exc:
        print(f"bench failed: Kafka error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted", file=sys.stderr, flush=True)
        return 130
    return 1 if ok is False else 0


def say(*lines: str) -> None:
    """Print ``lines`` at once, flushed: the bench's output is read while it runs."""
    print("\n".join(lines), flush=True)
