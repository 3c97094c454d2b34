"""``python -m devtools.kafka``: run a local Kafka broker until SIGINT/SIGTERM.

Prints exactly one line to stdout once the broker serves::

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>

so a script can ``read`` it; progress and errors go to stderr. ``--fetch-only`` just
downloads the jars (for ``make``) and exits. Exit status: 0 after a requested stop, 1 if
the broker could not start or died on its own.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from devtools.kafka.jars import (
    KAFKA_VERSION,
    KafkaLaunchError,
    default_cache_dir,
    resolve_classpath,
    tail,
)
from devtools.kafka.launcher import LocalKafka


class _StopRequestedError(Exception):
    """Raised by the signal handler to interrupt a blocking start()."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.kafka",
        description=f"Run a local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft).",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="config, log and data dir, kept on exit (default: a temp dir, removed on exit)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="PLAINTEXT port on 127.0.0.1 (default: free)"
    )
    parser.add_argument("--heap-mb", type=int, default=512, help="JVM heap in MiB (default 512)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="jar cache (default: $PAYGATE_CACHE_DIR or ~/.cache/paygate)",
    )
    parser.add_argument(
        "--fetch-only", action="store_true", help="only download the jars with Maven, then exit"
    )
    args = parser.parse_args(argv)
    if args.heap_mb < 128:
        parser.error("--heap-mb must be at least 128")
    if args.port is not None and not 0 < args.port < 65536:
        parser.error("--port must be in 1..65535")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parse_args(argv)
    if args.fetch_only:
        cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
        print(f"Resolving the Kafka {KAFKA_VERSION} jars into {cache} ...", file=sys.stderr)
        try:
            jars = resolve_classpath(args.cache_dir)
        except KafkaLaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"Kafka {KAFKA_VERSION}: {len(jars)} jars ready in {jars[0].parent}", file=sys.stderr)
        return 0

    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        first = not stop_requested.is_set()
        stop_requested.set()
        if first:  # interrupt start() or the wait below once; later signals are ignored
            raise _StopRequestedError(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    kafka = LocalKafka(
        work_dir=args.work_dir, cache_dir=args.cache_dir, heap_mb=args.heap_mb, port=args.port
    )
    try:
        try:
            print("Starting the local Kafka broker ...", file=sys.stderr, flush=True)
            bootstrap = kafka.start()
            print(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}", flush=True)
            print(
                f"Kafka is up (pid {kafka.pid}, log {kafka.log_path}); Ctrl-C stops it.",
                file=sys.stderr,
                flush=True,
            )
            # Wake up now and then to notice a broker that died on its own.
            while kafka.running:
                stop_requested.wait(timeout=1.0)
        except _StopRequestedError as exc:
            print(f"Got {exc}, stopping Kafka ...", file=sys.stderr, flush=True)
            return 0
        except KafkaLaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        # Show the log now: a temp work dir is removed by stop() below.
        log = kafka.log_path
        text = log.read_text(errors="replace") if log is not None and log.exists() else ""
        print(
            f"error: the Kafka broker exited on its own; last lines of {log}:\n{tail(text)}",
            file=sys.stderr,
        )
        return 1
    finally:
        stop_requested.set()  # from here on, signals no longer interrupt (the stop below)
        kafka.stop()


if __name__ == "__main__":
    sys.exit(main())
