"""The environment of a process a test starts: any free port, never paygate's defaults.

Invariant: no process a test starts binds one of the default ports of a paygate setting
(the HTTPS facade's 8443, the sandbox acquirer's 8081, the ops listeners' 9102 and 9103).
A developer's ``paygate dev`` or another test run on the same machine holds those; a test
whose process binds them fails only when something else runs beside it (CI saw
``test_bad_kafka_settings.py`` fail that way), or scrapes the other process's metrics.

So every port setting is 0 (the process takes any free port and announces it) unless the
test gives a port of its own, and :func:`child_environment` refuses an environment in which
any port setting is missing or left at its default. Every test that starts a process builds
its environment here; ``tests/unit/test_child_environment.py`` checks that they do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from paygate.settings import Settings

# Every port setting with its default; read from the settings so that a port setting added
# later is covered without touching this file.
PORT_FIELDS: dict[str, int] = {
    name: field.default for name, field in Settings.model_fields.items() if name.endswith("_port")
}
DEFAULT_PORTS: dict[str, int] = {
    f"PAYGATE_{name.upper()}": port for name, port in PORT_FIELDS.items()
}
ANY_FREE_PORT = "0"


def child_environment(*overlays: Mapping[str, str], inherit_paygate: bool = True) -> dict[str, str]:
    """This process's environment, every port setting 0, then ``overlays`` in order.

    ``inherit_paygate=False`` drops the inherited ``PAYGATE_*`` and ``KAFKA_BOOTSTRAP_SERVERS``
    variables first, for a test that must see the defaults whatever the caller's shell set.
    Raises ``AssertionError`` when an overlay puts a port setting back on its default.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if inherit_paygate or not (name.startswith("PAYGATE_") or name == "KAFKA_BOOTSTRAP_SERVERS")
    }
    env.update(dict.fromkeys(DEFAULT_PORTS, ANY_FREE_PORT))
    for overlay in overlays:
        env.update(overlay)
    assert_no_default_port(env)
    return env


def assert_no_default_port(env: Mapping[str, str]) -> None:
    """Fail when a process started with ``env`` would bind a default paygate port."""
    _refuse(
        f"{name}={env.get(name, 'unset')}"
        for name, default in DEFAULT_PORTS.items()
        if env.get(name, str(default)).strip() == str(default)
    )


def assert_settings_use_free_ports(settings: Settings, *names: str) -> None:
    """The same check for services a test runs in its own event loop from ``settings``;
    ``names``: the port settings those services bind (all of them when none is given)."""
    _refuse(
        f"{name}={getattr(settings, name)}"
        for name in names or PORT_FIELDS
        if getattr(settings, name) == PORT_FIELDS[name]
    )


def _refuse(on_default: Iterable[str]) -> None:
    listed = sorted(on_default)
    assert not listed, (
        "a process started by a test would bind a default port, which a `paygate dev` or "
        f"another test run may hold: {', '.join(listed)} (use 0: any free port)"
    )
