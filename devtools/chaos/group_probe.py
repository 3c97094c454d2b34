"""Watches the consumer group from the broker's side, so kills can be aimed at busy consumers.

A SIGKILLed member stays in the group until its session times out (10 s), and the whole
group stops while it waits: every member gives up its partitions and rejoins. Kills on a
bare 1-3 s timer therefore land on a group that is rebalancing, with nothing in flight
(measured: after the first kill no payment finished until the kills stopped). The probe
tells when the rebalance a kill caused is over, so the next kill hits work in progress.

It also tells when a frozen (SIGSTOPped) member has been dropped: the group is ``Stable``
again with one member fewer, so the others own its partitions (:meth:`wait_members`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

log = logging.getLogger("devtools.chaos")

_POLL_S = 0.25
# A group that does not settle within this bound (the broker is restarting, say) is hit
# again anyway: chaos does not wait for the system to be comfortable.
_SETTLE_TIMEOUT_S = 30.0
_STABLE = "Stable"


class GroupProbe:
    def __init__(
        self,
        kafka: Mapping[str, object],
        group: str,
        size: int,
        idle: Callable[[], Awaitable[bool]],
    ) -> None:
        """``idle`` tells whether anything fed is still unprocessed: an idle group need
        not be waited for."""
        self._kafka = kafka
        self._group = group
        self._size = size
        self._idle = idle
        self._admin: AIOKafkaAdminClient | None = None

    async def wait_settled(self, *, after_kill: bool) -> None:
        """Wait until the group is ``Stable`` with ``size`` live members (bounded).

        Right after a kill the group still looks stable, dead member included, until the
        replacement joins; so after a kill a rebalance must be seen first: a state other
        than ``Stable``, or a member count other than ``size`` (after a thawed zombie, the
        group is stable without it until it rejoins).
        """
        rebalanced = not after_kill
        deadline = time.monotonic() + _SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            state, members = await self._describe()
            if state is not None and (state != _STABLE or members != self._size):
                rebalanced = True
            elif rebalanced and state == _STABLE and members == self._size:
                return
            if await self._idle():
                return
            await asyncio.sleep(_POLL_S)
        log.info("the group did not settle within %.0f s; killing anyway", _SETTLE_TIMEOUT_S)

    async def wait_members(self, count: int, timeout_s: float) -> bool:
        """Wait (bounded) until the group is ``Stable`` with exactly ``count`` members;
        False if it was not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self._describe() == (_STABLE, count):
                return True
            await asyncio.sleep(_POLL_S)
        return False

    async def idle(self) -> bool:
        """Whether everything fed so far is processed (nothing in flight to hit)."""
        return await self._idle()

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()

    async def _describe(self) -> tuple[str | None, int]:
        """(state, member count); (None, 0) while the broker cannot tell."""
        try:
            if self._admin is None:
                admin = AIOKafkaAdminClient(**self._kafka)
                await admin.start()
                self._admin = admin
            responses = await self._admin.describe_consumer_groups([self._group])
            return _state_and_members(responses[0].groups[0])
        except (KafkaError, OSError, IndexError):
            # The broker is restarting, or the coordinator moved: start afresh next time.
            await self.close()
            return None, 0


def _state_and_members(group: Any) -> tuple[str | None, int]:
    # DescribeGroups v0-v5: (error_code, group, state, protocol_type, protocol, members, ...)
    error_code, _name, state, _ptype, _protocol, members = group[:6]
    return (None, 0) if error_code else (str(state), len(members))
