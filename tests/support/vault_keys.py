"""Key-encryption keys for tests: fixed, so a test can build the same vault twice."""

from __future__ import annotations

from typing import Final

KEK_1: Final = "kek-1:" + "11" * 32
KEK_2: Final = "kek-2:" + "22" * 32
# Another key under kek-1's id: a swapped or mistyped key file.
KEK_1_WRONG: Final = "kek-1:" + "33" * 32
FINGERPRINT_KEY: Final = b"f" * 32
