"""Fault injection and timing for the sandbox acquirer.

The rates act on top of the test account numbers: a failure answers 5xx before anything is
recorded, a timeout records the outcome the number selects and then hangs like
``4000000000000341``. With a ``seed`` the sequence of injected faults is reproducible for a
given order of calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    latency_ms: float = 0.0  # added to every charge call
    latency_jitter_ms: float = 0.0  # uniform extra latency in [0, latency_jitter_ms)
    failure_rate: float = 0.0  # share of calls answered 5xx before processing
    timeout_rate: float = 0.0  # share of calls that charge, then hang for hang_s
    slow_delay_s: float = 2.0
    hang_s: float = 60.0
    # The wait of the latency test numbers, before they decide anything.
    account_latency_s: float = 2.0
    # How long a refund of a "refunds pending" charge stays pending before it succeeds.
    refund_settle_s: float = 1.0
    # How long a payer action (test number 4000000000003220) waits for the payer.
    action_ttl_s: float = 900.0
    # How long an authorization (capture=False) is held: then it expires, as a card
    # issuer's hold does (about 7 days), and can no longer be captured.
    authorization_hold_s: float = 7 * 24 * 3600.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("failure_rate", "timeout_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in (
            "latency_ms",
            "latency_jitter_ms",
            "slow_delay_s",
            "hang_s",
            "account_latency_s",
            "refund_settle_s",
            "action_ttl_s",
            "authorization_hold_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
