"""stripe-mock (Stripe's official API mock) for the integration tests.

Where the binary comes from, first found wins: ``STRIPE_MOCK_BIN``;
``~/.cache/paygate/go/bin/stripe-mock``; ``stripe-mock`` on PATH; else, when Go is
installed, ``go install`` of a pinned version into that cache. Without any: the tests that
need it skip, or fail under ``CI=true`` (:func:`tests.support.services.service_missing`).

stripe-mock validates every request against Stripe's OpenAPI spec but is stateless and
answers from fixtures, whatever the input (except that it echoes fields such as amount and
currency). The fixtures given here replace the bundled ones for PaymentIntents only: the
bundled PaymentIntent is ``requires_payment_method`` with a nonsensical
``last_payment_error``, where a confirmed charge of ``pm_card_visa`` on Stripe's test mode
is ``succeeded``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from tests.support.services import service_missing

STRIPE_MOCK_VERSION: Final = "v0.203.0"
STRIPE_MOCK_MODULE: Final = "github.com/stripe/stripe-mock"
BIN_ENV: Final = "STRIPE_MOCK_BIN"
GO_BIN_DIR: Final = Path.home() / ".cache" / "paygate" / "go" / "bin"
START_TIMEOUT_S: Final = 30.0
INSTALL_TIMEOUT_S: Final = 900.0
TEST_API_KEY: Final = "sk_test_paygate"

_LISTENING_HTTP: Final = re.compile(r"Listening for HTTP at address: (\S+):(\d+)")

# A PaymentIntent as Stripe's test mode answers a confirmed charge of pm_card_visa.
SUCCEEDED_PAYMENT_INTENT: Final[Mapping[str, Any]] = {
    "id": "pi_3PaygateMockSucceeded",
    "object": "payment_intent",
    "amount": 1099,
    "amount_capturable": 0,
    "amount_received": 1099,
    "automatic_payment_methods": {"allow_redirects": "never", "enabled": True},
    "canceled_at": None,
    "cancellation_reason": None,
    "capture_method": "automatic",
    "client_secret": "pi_3PaygateMockSucceeded_secret_mock",
    "confirmation_method": "automatic",
    "created": 1234567890,
    "currency": "eur",
    "customer": None,
    "description": None,
    "last_payment_error": None,
    "latest_charge": "ch_3PaygateMockSucceeded",
    "livemode": False,
    "metadata": {},
    "next_action": None,
    "payment_method": "pm_1PaygateMockCardVisa",
    "payment_method_types": ["card"],
    "processing": None,
    "status": "succeeded",
}
# Its charge (``latest_charge``), nothing refunded. The fixtures given replace all bundled
# ones, and stripe-mock drops the connection when asked to expand a resource it has no
# fixture for: charge_by_reference expands ``latest_charge`` (for ``amount_refunded``).
SUCCEEDED_CHARGE: Final[Mapping[str, Any]] = {
    "id": "ch_3PaygateMockSucceeded",
    "object": "charge",
    "amount": 1099,
    "amount_captured": 1099,
    "amount_refunded": 0,
    "captured": True,
    "currency": "eur",
    "payment_intent": "pi_3PaygateMockSucceeded",
    "refunded": False,
    "status": "succeeded",
}
SUCCEEDED_FIXTURES: Final[Mapping[str, Any]] = {
    "resources": {"payment_intent": SUCCEEDED_PAYMENT_INTENT, "charge": SUCCEEDED_CHARGE}
}


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_stripe_mock() -> Path | None:
    from_env = os.environ.get(BIN_ENV)
    if from_env:
        path = Path(from_env)
        if not _executable(path):
            service_missing(f"{BIN_ENV}={from_env} is not an executable file")
        return path
    cached = GO_BIN_DIR / "stripe-mock"
    if _executable(cached):
        return cached
    on_path = shutil.which("stripe-mock")
    return Path(on_path) if on_path else None


def install_stripe_mock() -> Path | None:
    """``go install`` the pinned stripe-mock into the cache; None without Go or on failure."""
    go = shutil.which("go")
    if go is None:
        return None
    print(
        f"stripe-mock not found: installing {STRIPE_MOCK_MODULE}@{STRIPE_MOCK_VERSION} into "
        f"{GO_BIN_DIR} with go install (once; set {BIN_ENV} to use another binary) ...",
        flush=True,
    )
    GO_BIN_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(GO_BIN_DIR)}
    try:
        done = subprocess.run(
            [go, "install", f"{STRIPE_MOCK_MODULE}@{STRIPE_MOCK_VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"go install of stripe-mock did not finish in {INSTALL_TIMEOUT_S:.0f} s")
        return None
    if done.returncode != 0:
        print(f"go install of stripe-mock failed:\n{done.stderr[-2000:]}")
        return None
    binary = GO_BIN_DIR / "stripe-mock"
    return binary if _executable(binary) else None


def stripe_mock_binary() -> Path:
    binary = find_stripe_mock() or install_stripe_mock()
    if binary is None:
        service_missing(
            f"stripe-mock not found ({BIN_ENV}, {GO_BIN_DIR}, PATH) and it could not be "
            f"installed (needs Go: go install {STRIPE_MOCK_MODULE}@{STRIPE_MOCK_VERSION})"
        )
    assert binary is not None
    return binary


def _pump(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _wait_for_http_port(
    process: subprocess.Popen[str], lines: queue.Queue[str], deadline: float
) -> tuple[str, int]:
    seen: list[str] = []
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            line = lines.get(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))
        except queue.Empty:
            continue
        seen.append(line)
        match = _LISTENING_HTTP.search(line)
        if match:
            return match.group(1), int(match.group(2))
    output = "".join(seen)[-2000:]
    raise RuntimeError(f"stripe-mock did not report its HTTP port in time:\n{output}")


def _wait_until_answering(base_url: str, deadline: float) -> None:
    """Bounded retry: an authenticated GET must answer 200 before the tests start."""
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL built above
        f"{base_url}/v1/payment_intents?limit=1",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
    )
    delay = 0.05
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise RuntimeError(f"stripe-mock at {base_url} did not answer in time: {last}")


def _with_a_charge(fixtures: Mapping[str, Any]) -> Mapping[str, Any]:
    """``fixtures`` with :data:`SUCCEEDED_CHARGE` as the charge, unless they give one."""
    resources = dict(fixtures.get("resources", {}))
    resources.setdefault("charge", SUCCEEDED_CHARGE)
    return {**fixtures, "resources": resources}


@contextlib.contextmanager
def run_stripe_mock(fixtures: Mapping[str, Any] | None = SUCCEEDED_FIXTURES) -> Iterator[str]:
    """Run stripe-mock on free loopback ports (HTTP and HTTPS, both bound to 127.0.0.1) and
    yield its HTTP base URL. ``fixtures=None`` keeps the bundled fixtures."""
    binary = stripe_mock_binary()
    with tempfile.TemporaryDirectory(prefix="paygate-stripe-mock-") as tmp:
        args = [str(binary), "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0"]
        if fixtures is not None:
            fixtures_path = Path(tmp) / "fixtures.json"
            fixtures_path.write_text(json.dumps(_with_a_charge(fixtures)))
            args += ["-fixtures", str(fixtures_path)]
        process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp,
        )
        lines: queue.Queue[str] = queue.Queue()
        pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        pump.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            host, port = _wait_for_http_port(process, lines, deadline)
            base_url = f"http://{host}:{port}"
            _wait_until_answering(base_url, deadline)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            pump.join(timeout=5)  # ends at EOF, once the process is gone
            if process.stdout is not None:
                process.stdout.close()
