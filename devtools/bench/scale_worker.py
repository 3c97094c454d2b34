"""One consumer process of a scale-out run: ``python -m devtools.bench.scale_worker JSON``.

JSON holds the settings that differ from the environment's (topics, group, database). It
runs :class:`~paygate.consumer_service.ConsumerService` with the bench's instant provider,
as production runs a consumer process, until SIGTERM; then it prints one JSON line: when
its provider was first called (wall clock, comparable across the run's processes), the
CPU it spent from then to the SIGTERM, and how many calls it made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

from devtools.bench.provider import BenchProvider
from paygate.consumer_service import ConsumerService
from paygate.settings import Settings
from providers.registry import Providers
from providers.routing import Router
from telemetry.metrics import Metrics


async def run(overrides: dict[str, Any]) -> dict[str, Any]:
    # The bench's commands name clear accounts, vaulted at first read (as in devtools.bench.main).
    settings = Settings().model_copy(update={"accept_clear_account_numbers": True, **overrides})
    provider = BenchProvider(delay_s=0.0)
    stop = asyncio.Event()
    stopped_cpu: list[float] = []

    def on_term() -> None:
        stopped_cpu.append(time.process_time())
        stop.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
    service = ConsumerService(
        settings, Providers.of(provider), Metrics(), Router.catch_all(provider.name)
    )
    await service.run(stop)
    first_cpu = provider.first_call_cpu
    return {
        "first_call_wall": provider.first_call_wall,
        "cpu_s": None if first_cpu is None or not stopped_cpu else stopped_cpu[0] - first_cpu,
        "calls": provider.calls,
    }


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    report = asyncio.run(run(json.loads(sys.argv[1])))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
