"""The account-number detector's cost per log line: two trees side by side, in one run.

    python -m devtools.bench.scrubber --baseline /work/wt/base7 [--lines 4000] [--rounds 7]

Builds a few thousand typical JSON log lines, as paygate.jsonlog writes them (access lines,
the consumer's "payment command handled", provider calls, a warning with a traceback; ids,
UUIDs, millisecond timestamps, amounts, a masked number; one line in fifty with a non-ASCII
character, one in fifty with a ``%``). Each round times ``domain.account_numbers.scrub`` over
all of them once in a fresh child process per tree (PYTHONPATH the tree; nothing written
into it), the trees alternating, and the best round of each is kept: CPU time per line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Final

_CHILD: Final = """
import json, sys, time
from domain.account_numbers import scrub
lines = json.load(open(sys.argv[1]))
for line in lines[:200]:
    scrub(line)  # warm up: patterns compiled, caches filled
started = time.process_time()
for line in lines:
    scrub(line)
print((time.process_time() - started) / len(lines) * 1e6)
"""


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _line(rng: random.Random, index: int) -> str:
    minute, second, milli = rng.randrange(60), rng.randrange(60), rng.randrange(1000)
    ts = f"2026-12-07T03:{minute:02d}:{second:02d}.{milli:03d}+00:00"
    order_id = str(rng.randrange(10**12, 10**13))
    kind = index % 4
    line: dict[str, object]
    if kind == 0:
        line = {
            "ts": ts,
            "level": "info",
            "logger": "paygate.http",
            "msg": "POST /v1/payments 202",
            "method": "POST",
            "route": "/v1/payments",
            "status": 202,
            "duration_ms": round(rng.uniform(1, 40), 3),
            "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "client_id": f"shop-{rng.randrange(100)}",
            "payment_request_id": _uuid(rng),
            "order_id": order_id,
        }
    elif kind == 1:
        line = {
            "ts": ts,
            "level": "info",
            "logger": "paygate.consumer",
            "msg": "payment command handled",
            "payment_request_id": _uuid(rng),
            "order_id": order_id,
            "status": "succeeded",
            "provider": "sandbox",
            "payer": "****4242",
            "amount_minor": rng.randrange(100, 100000),
            "currency": "EUR",
            "partition": rng.randrange(12),
            "offset": rng.randrange(10**7),
            "created_at_ms": rng.randrange(1_765_000_000_000, 1_766_000_000_000),
        }
    elif kind == 2:
        line = {
            "ts": ts,
            "level": "info",
            "logger": "paygate.providers",
            "msg": "provider call done",
            "provider": "stripe",
            "operation": "charge",
            "attempt_key": f"{_uuid(rng)}-a{rng.randrange(3)}",
            "provider_reference": f"pi_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}",
            "duration_ms": round(rng.uniform(50, 900), 3),
        }
    else:
        line = {
            "ts": ts,
            "level": "warning",
            "logger": "paygate.consumer",
            "msg": "provider timed out; retrying",
            "payment_request_id": _uuid(rng),
            "attempt": rng.randrange(1, 5),
            "exc": 'Traceback (most recent call last):\n  File "/app/providers/stripe/'
            'adapter.py", line 211, in charge\n    raise ProviderTimeout(...)\n'
            "providers.errors.ProviderTimeout: no answer within 10.0 s",
        }
    if index % 50 == 7:
        line["holder"] = "Zoë Ångström"
    if index % 50 == 23:
        line["note"] = "10% off, see /v1/payments?orderId=" + order_id + "&limit=20"
    return json.dumps(line, default=str, separators=(",", ":"))


def _time(tree: Path, lines_file: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(lines_file)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--lines", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    rng = random.Random(7)
    lines = [_line(rng, index) for index in range(options.lines)]
    mean = sum(map(len, lines)) / len(lines)
    with tempfile.TemporaryDirectory(prefix="scrub-bench-") as directory:
        lines_file = Path(directory) / "lines.json"
        lines_file.write_text(json.dumps(lines))
        best = {"baseline": float("inf"), "tree": float("inf")}
        for _ in range(options.rounds):
            for name, tree in (("baseline", options.baseline), ("tree", options.tree)):
                best[name] = min(best[name], _time(tree, lines_file))
    print(f"{len(lines)} log lines, {mean:.0f} characters on average")
    print(f"scrub, baseline {options.baseline}: {best['baseline']:.2f} us of CPU per line")
    print(f"scrub, this tree {options.tree}: {best['tree']:.2f} us of CPU per line")
    print(f"ratio (this tree / baseline): {best['tree'] / best['baseline']:.3f}")
    print(f"best of {options.rounds} rounds each, alternating")


if __name__ == "__main__":
    main()
