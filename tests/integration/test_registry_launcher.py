"""The local registry survives losing a port race: the port it was given is taken before
the JVM binds it (a busy machine, parallel test runs), and it starts again on new ports."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from devtools.schema_registry import LocalSchemaRegistry, RegistryLaunchError, launcher
from tests.support.services import service_missing


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_taken_before_the_registry_binds_it_is_retried_on_new_ports(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    real_free_port = launcher._free_port
    handed: list[int] = []

    def first_one_taken() -> int:
        port = taken_port if not handed else real_free_port()
        handed.append(port)
        return port

    monkeypatch.setattr(launcher, "_free_port", first_one_taken)
    registry = LocalSchemaRegistry()
    try:
        registry.start()
    except RegistryLaunchError as exc:
        if "in use" in str(exc):
            raise
        service_missing(f"the local Schema Registry did not start: {exc}")
    try:
        assert handed[0] == taken_port
        assert f":{taken_port}/" not in registry.confluent_url
        assert len(handed) == 4  # two ports per attempt: the lost one, then the retry
    finally:
        registry.stop()
