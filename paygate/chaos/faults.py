"""The faults a chaos run injects: consumer SIGKILLs on a seeded schedule, one broker restart.

(The acquirer's own faults, 503s and hangs, are set on its command line; see harness.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

from paygate.chaos.consumer_pool import ConsumerPool
from paygate.chaos.group_probe import GroupProbe
from paygate.kafka import LocalKafka

log = logging.getLogger("paygate.chaos")

KILL_INTERVAL_S = (1.0, 3.0)
_SUPERVISE_INTERVAL_S = 0.5
# After the feed, kills continue only until --kills is reached, and at most this long per
# kill still missing: consumers that crash at every start can never be killed, and the
# run must end (the verdict then reports too few kills).
_MAX_S_PER_MISSING_KILL = 45.0


async def kill_consumers(
    pool: ConsumerPool,
    rng: random.Random,
    *,
    feed_done: asyncio.Event,
    min_kills: int,
    probe: GroupProbe | None,
) -> None:
    """SIGKILL a random consumer and start another in its place, every 1 to 3 s, while the
    feed runs and until at least ``min_kills`` kills happened.

    With a ``probe``, the 1 to 3 s count from the moment the group has settled after the
    previous kill, so that every kill hits consumers with work in flight (see
    :mod:`paygate.chaos.group_probe`).
    """
    after_kill = False
    give_up_at: float | None = None
    while True:
        if probe is not None:
            await probe.wait_settled(after_kill=after_kill)
        # This sleep is the fault schedule itself (seeded), not a wait for readiness.
        await asyncio.sleep(rng.uniform(*KILL_INTERVAL_S))
        if feed_done.is_set():
            if pool.kills >= min_kills:
                return
            if give_up_at is None:
                missing = min_kills - pool.kills
                give_up_at = time.monotonic() + missing * _MAX_S_PER_MISSING_KILL
            elif time.monotonic() > give_up_at:
                log.error("gave up killing: %d of %d kills", pool.kills, min_kills)
                return
        await pool.kill_one(rng)
        after_kill = True


async def supervise(pool: ConsumerPool, stop: asyncio.Event) -> None:
    """Restart consumers that exit by themselves, until ``stop`` is set."""
    while not stop.is_set():
        await pool.revive_crashed()
        try:
            await asyncio.wait_for(stop.wait(), _SUPERVISE_INTERVAL_S)
        except TimeoutError:
            continue


class BrokerControl:
    """A :class:`LocalKafka` driven from one worker thread.

    ``LocalKafka`` blocks and is not thread-safe; running every call on one dedicated
    thread keeps the event loop free during a restart and guarantees that ``stop`` never
    overlaps a ``restart`` still under way (after a failure, say).
    """

    def __init__(self, kafka: LocalKafka) -> None:
        self._kafka = kafka
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-broker")
        self.restarts = 0
        self.restart_s: float | None = None

    async def start(self) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._kafka.start)

    async def restart_when(self, cue: asyncio.Event) -> None:
        """Restart the broker (SIGTERM, then start on the same ports) once ``cue`` is set."""
        await cue.wait()
        log.info("restarting the broker")
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._kafka.restart)
        self.restart_s = time.monotonic() - started
        self.restarts += 1
        log.info("broker back after %.1f s", self.restart_s)

    async def stop(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._kafka.stop)
        finally:
            self._thread.shutdown(wait=False)
