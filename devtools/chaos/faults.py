"""The faults a chaos run injects: consumer SIGKILLs and zombie episodes on a seeded
schedule, one broker restart.

(The acquirer's own faults, 503s and hangs, are set on its command line; see harness. The
copies sent without their order's key are part of the feed; see feed_plan.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

from devtools.chaos.consumer_pool import ConsumerPool
from devtools.chaos.group_probe import GroupProbe
from devtools.chaos.zombie import Zombies
from devtools.kafka import LocalKafka

log = logging.getLogger("devtools.chaos")

KILL_INTERVAL_S = (1.0, 3.0)
_SUPERVISE_INTERVAL_S = 0.5
# After the feed, faults continue only until --kills and --zombies are reached, and at most
# this long per fault still missing: consumers that crash at every start can never be
# killed, and the run must end (the verdict then reports too few kills or zombies).
_MAX_S_PER_MISSING_FAULT = 90.0


async def inject_faults(
    pool: ConsumerPool,
    rng: random.Random,
    *,
    feed_done: asyncio.Event,
    min_kills: int,
    probe: GroupProbe | None,
    zombies: Zombies | None = None,
    min_zombies: int = 0,
) -> None:
    """One fault every 1 to 3 s while the feed runs, and until at least ``min_kills``
    kills and ``min_zombies`` zombie episodes happened: SIGKILL a random consumer and start
    another in its place, or (``zombies``) freeze one past its session and thaw it.

    Zombie episodes come first, alternating with kills while both are missing, so that
    they find the feed still running and retry back-offs in flight. With a ``probe``, the
    1 to 3 s count from the moment the group has settled after the previous fault, so that
    every fault hits consumers with work in flight (see :mod:`devtools.chaos.group_probe`).
    """
    after_fault = False
    give_up_at: float | None = None
    while True:
        if probe is not None:
            await probe.wait_settled(after_kill=after_fault)
        # This sleep is the fault schedule itself (seeded), not a wait for readiness.
        await asyncio.sleep(rng.uniform(*KILL_INTERVAL_S))
        episodes = 0 if zombies is None else len(zombies.episodes)
        kills_missing = max(0, min_kills - pool.kills)
        zombies_missing = 0 if zombies is None else max(0, min_zombies - episodes)
        if feed_done.is_set():
            if not kills_missing and not zombies_missing:
                return
            if give_up_at is None:
                missing = kills_missing + zombies_missing
                give_up_at = time.monotonic() + missing * _MAX_S_PER_MISSING_FAULT
            elif time.monotonic() > give_up_at:
                log.error(
                    "gave up injecting faults: %d of %d kills, %d of %d zombie episodes",
                    pool.kills,
                    min_kills,
                    episodes,
                    min_zombies,
                )
                return
        if (
            zombies is not None
            and zombies_missing
            and (episodes <= pool.kills or not kills_missing)
        ):
            await zombies.episode(rng)
        else:
            await pool.kill_one(rng)
        after_fault = True


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

    async def restart_when(self, cue: asyncio.Event, alone: asyncio.Lock | None = None) -> None:
        """Restart the broker (SIGTERM, then start on the same ports) once ``cue`` is set,
        holding ``alone`` meanwhile (see :class:`devtools.chaos.zombie.Zombies`)."""
        await cue.wait()
        async with alone or asyncio.Lock():
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
