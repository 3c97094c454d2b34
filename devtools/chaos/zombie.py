"""The zombie consumer fault: frozen past its session, dropped by the group, then thawed.

A consumer SIGSTOPped in the middle of its work does not know it stopped. The broker drops
it once its session times out (10 s) and gives its partitions to the others, which are
redelivered its uncommitted commands and carry on with them. SIGCONTed, it wakes where it
froze: a retry back-off whose time has come, a provider answer in its socket. Nothing in
Kafka stops it from calling the acquirer and writing to the store for a while (aiokafka
has no fencing): only the store's ownership of the attempt can keep two workers from
charging one payment twice.

An episode, each wait bounded:

1. **Aim**: watch the consumers' logs for a retry back-off ("provider certainly did not
   charge; retrying in ...") that is still running, preferring payments whose next call
   will be slow (``prefer``: the latency-then-503 number), and freeze the consumer that
   logged it at once. With no back-off in sight, freeze a consumer picked by the seed.
   A consumer frozen holding the SQLite store's write lock would stop every other one
   (:mod:`devtools.chaos.store_lock`): it is thawed at once and the aim starts again.
2. **Wait for the rebalance**: until the group is ``Stable`` with one member fewer
   (:meth:`GroupProbe.wait_members`), i.e. past the session timeout and the others own
   the frozen consumer's partitions.
3. **Wait for the overlap**: until the acquirer reports a charge call for one of the
   payments caught in the back-off (``GET /admin/in-flight``): the frozen consumer makes
   none, so it is another consumer's.
4. **Thaw** it, on every path.

An episode holds ``alone`` from aiming to thawing, and the broker restart holds it too:
with the broker down, the group cannot drop the frozen consumer, and by the time it does,
its payments are too old for the new owner to re-send (it leaves them to the reconciler),
so the episode would prove nothing and last twice as long.

The episode records what it caught, so the verdict can tell which double charges came
from zombies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import aiohttp

from devtools.chaos.consumer_pool import ConsumerPool
from devtools.chaos.group_probe import GroupProbe
from devtools.chaos.harness import Child

log = logging.getLogger("devtools.chaos")

_BACKOFF: Final = re.compile(r"retrying in (?P<delay>\S+?)s:")
_WATCH_POLL_S: Final = 0.05
# How long to look for a back-off of a preferred payment, then for any back-off, while
# commands fed are still unprocessed; once all are, back-offs are rare and the wait short.
_PREFER_S: Final = 10.0
_AIM_WHILE_BUSY_S: Final = 20.0
_AIM_WHEN_IDLE_S: Final = 3.0
# Session timeout (10 s) plus a rebalance in which the others finish their work in flight
# (the runner's drain, up to 10 s), with room to spare.
_REBALANCE_TIMEOUT_S: Final = 60.0
# The new owner re-consumes from the frozen consumer's committed offset, which the caught
# command holds; after a broker restart or with a backlog it takes a while to get there.
_OVERLAP_TIMEOUT_S: Final = 20.0
_RECENT_PER_CONSUMER: Final = 1000
_AIM_TRIES: Final = 3


@dataclass(frozen=True, slots=True)
class Backoff:
    """A retry back-off a consumer logged: from ``started`` (wall clock, s) for ``delay_s``."""

    consumer: str
    payment_id: str
    started: float
    delay_s: float

    def running_at(self, wall: float) -> bool:
        return self.started <= wall < self.started + self.delay_s


def parse_backoff(line: str, consumer: str) -> Backoff | None:
    """The back-off a consumer's JSON log line announces, or None."""
    if "retrying in" not in line:
        return None
    try:
        record = json.loads(line)
        match = _BACKOFF.search(str(record["msg"]))
        payment_id = record["payment_request_id"]
        started = datetime.fromisoformat(str(record["ts"])).timestamp()
    except (ValueError, KeyError, TypeError):
        return None
    if match is None or not isinstance(payment_id, str):
        return None
    try:
        delay = float(match["delay"])
    except ValueError:
        return None
    return Backoff(consumer, payment_id, started, delay)


class BackoffWatch:
    """Reads the back-offs the consumers log, each file from where it stopped last time."""

    def __init__(self) -> None:
        self._read_up_to: dict[Path, int] = {}
        self._recent: dict[str, deque[Backoff]] = {}

    def poll(self, consumers: Iterable[Child]) -> list[Backoff]:
        """The back-offs logged since the last poll (complete lines only)."""
        found: list[Backoff] = []
        for child in consumers:
            for line in self._new_lines(child.log_path):
                backoff = parse_backoff(line, child.name)
                if backoff is not None:
                    found.append(backoff)
                    recent = self._recent.setdefault(child.name, deque(maxlen=_RECENT_PER_CONSUMER))
                    recent.append(backoff)
        return found

    def running(self, consumer: str, wall: float) -> list[str]:
        """Payments whose back-off ``consumer`` logged and that was still running at ``wall``."""
        return sorted({b.payment_id for b in self._recent.get(consumer, ()) if b.running_at(wall)})

    def _new_lines(self, path: Path) -> list[str]:
        start = self._read_up_to.get(path, 0)
        try:
            with path.open("rb") as file:
                file.seek(start)
                data = file.read()
        except FileNotFoundError:
            return []
        complete = data.rfind(b"\n") + 1  # a line still being written waits for next time
        self._read_up_to[path] = start + complete
        return data[:complete].decode(errors="replace").splitlines()


@dataclass(frozen=True, slots=True)
class ZombieEpisode:
    victim: str
    in_backoff: tuple[str, ...]  # payments in a retry back-off when it froze
    rebalanced: bool  # the group went on without it within the bound
    overlapped: tuple[str, ...]  # of those, payments another consumer was calling for
    frozen_s: float


@dataclass
class Zombies:
    """Runs zombie episodes on ``pool``'s consumers and keeps what each caught."""

    pool: ConsumerPool
    probe: GroupProbe
    sandbox_url: str
    prefer: Collection[str]  # payment ids whose next acquirer call is slow
    alone: asyncio.Lock = field(default_factory=asyncio.Lock)  # shared with the broker restart
    # Whether the store's write lock is held (by a frozen consumer); None: no such lock.
    store_locked: Callable[[], Awaitable[bool]] | None = None
    episodes: list[ZombieEpisode] = field(default_factory=list)
    lock_holders: int = 0  # consumers frozen holding the store's write lock, thawed at once
    _watch: BackoffWatch = field(default_factory=BackoffWatch)
    _session: aiohttp.ClientSession | None = None

    async def episode(self, rng: random.Random) -> None:
        """One episode (see the module docstring); nothing if no consumer is running."""
        async with self.alone:
            await self._episode(rng)

    async def _episode(self, rng: random.Random) -> None:
        for _ in range(_AIM_TRIES):
            victim = await self._aim(rng)
            if victim is None or not await self.pool.freeze(victim):
                return
            frozen_at, started = time.time(), time.monotonic()
            if self.store_locked is None or not await self.store_locked():
                await self._frozen(victim, frozen_at, started)
                return
            await self.pool.thaw(victim)
            self.lock_holders += 1
            log.info("%s froze holding the store's write lock: thawed, aiming again", victim)

    async def _frozen(self, victim: Child, frozen_at: float, started: float) -> None:
        """Steps 2 to 4 for ``victim``, frozen at ``frozen_at`` (wall clock; ``started``
        on the monotonic clock)."""
        in_backoff: list[str] = []
        rebalanced = False
        overlapped: tuple[str, ...] = ()
        try:
            self._watch.poll([victim])  # lines it wrote just before it froze
            in_backoff = self._watch.running(victim.name, frozen_at)
            rebalanced = await self.probe.wait_members(self.pool.size - 1, _REBALANCE_TIMEOUT_S)
            if not rebalanced:
                log.warning("the group did not drop frozen %s in time; thawing it", victim)
            elif in_backoff:
                overlapped = await self._others_calling(in_backoff)
        finally:
            await self.pool.thaw(victim)
        episode = ZombieEpisode(
            victim.name,
            tuple(in_backoff),
            rebalanced,
            overlapped,
            time.monotonic() - started,
        )
        self.episodes.append(episode)
        log.info("zombie episode: %s", episode)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _aim(self, rng: random.Random) -> Child | None:
        """The consumer to freeze: the first seen in a back-off (a preferred one first)."""
        idle = await self.probe.idle()
        now = time.monotonic()
        prefer_until = now + _PREFER_S
        deadline = now + (_AIM_WHEN_IDLE_S if idle else _AIM_WHILE_BUSY_S)
        self._watch.poll(self.pool.running())  # older back-offs are over: skip them
        while time.monotonic() < deadline:
            running = {child.name: child for child in self.pool.running()}
            wall = time.time()
            for backoff in self._watch.poll(running.values()):
                preferred = backoff.payment_id in self.prefer
                in_time = preferred or time.monotonic() >= prefer_until
                if in_time and backoff.running_at(wall) and backoff.consumer in running:
                    return running[backoff.consumer]
            await asyncio.sleep(_WATCH_POLL_S)
        running_now = self.pool.running()
        return rng.choice(running_now) if running_now else None

    async def _others_calling(self, payment_ids: list[str]) -> tuple[str, ...]:
        """Wait (bounded) until the acquirer has a charge call in flight for one of
        ``payment_ids``; those it has, or () when the bound passed first."""
        wanted = set(payment_ids)
        deadline = time.monotonic() + _OVERLAP_TIMEOUT_S
        while time.monotonic() < deadline:
            calling = wanted & await self._in_flight()
            if calling:
                return tuple(sorted(calling))
            await asyncio.sleep(_WATCH_POLL_S)
        return ()

    async def _in_flight(self) -> set[str]:
        """Payment references of the acquirer's charge calls in flight (none if it cannot
        tell: the episode then thaws at the bound)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self.sandbox_url, timeout=aiohttp.ClientTimeout(total=5.0)
            )
        try:
            async with self._session.get("/admin/in-flight") as response:
                response.raise_for_status()
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return set()
        return {str(call["paymentReference"]) for call in body["charges"]}
