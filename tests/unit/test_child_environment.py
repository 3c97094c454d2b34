"""A process a test starts never binds a default paygate port (tests/support/child_env.py),
and every test that starts a Python process builds its environment there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from paygate.settings import Settings
from tests.support.child_env import (
    DEFAULT_PORTS,
    assert_settings_use_free_ports,
    child_environment,
)
from tests.support.processes import environment_of

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parents[1]
# The calls that start a process, as the tests spell them.
_STARTERS = {("subprocess", "run"), ("subprocess", "Popen"), ("asyncio", "create_subprocess_exec")}


def test_every_port_setting_is_covered() -> None:
    assert {
        "PAYGATE_HTTP_PORT": 8443,
        "PAYGATE_ACQUIRER_PORT": 8081,
        "PAYGATE_METRICS_PORT": 9102,
        "PAYGATE_FACADE_OPS_PORT": 9103,
    }.items() <= DEFAULT_PORTS.items()


def test_a_child_gets_any_free_port_for_every_port_setting_it_is_not_given() -> None:
    env = child_environment({"PAYGATE_HTTP_PORT": "40123"})
    assert {name: env[name] for name in DEFAULT_PORTS} == {
        name: "40123" if name == "PAYGATE_HTTP_PORT" else "0" for name in DEFAULT_PORTS
    }


@pytest.mark.parametrize("name", sorted(DEFAULT_PORTS))
def test_a_default_port_given_back_is_refused(name: str) -> None:
    with pytest.raises(AssertionError, match=f"{name}={DEFAULT_PORTS[name]}"):
        child_environment({name: str(DEFAULT_PORTS[name])})


def test_settings_left_on_their_default_ports_are_refused() -> None:
    # environment_of writes every setting, ports included: defaults do not slip through.
    with pytest.raises(AssertionError, match="PAYGATE_METRICS_PORT=9102"):
        child_environment(environment_of(Settings()))


def test_inherited_paygate_settings_are_dropped_on_request(monkeypatch) -> None:
    monkeypatch.setenv("PAYGATE_PROVIDER", "stripe")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("PAYGATE_METRICS_PORT", "9102")  # a developer's shell: overridden
    kept = child_environment()
    assert (kept["PAYGATE_PROVIDER"], kept["PAYGATE_METRICS_PORT"]) == ("stripe", "0")
    clean = child_environment({"PAYGATE_ENV": "development"}, inherit_paygate=False)
    assert "PAYGATE_PROVIDER" not in clean
    assert "KAFKA_BOOTSTRAP_SERVERS" not in clean
    assert clean["PAYGATE_ENV"] == "development"


def test_in_process_services_are_checked_on_the_ports_they_bind() -> None:
    assert_settings_use_free_ports(Settings(metrics_port=0), "metrics_port")
    with pytest.raises(AssertionError, match="facade_ops_port=9103"):
        assert_settings_use_free_ports(Settings(metrics_port=0), "metrics_port", "facade_ops_port")
    with pytest.raises(AssertionError, match="http_port=8443"):
        assert_settings_use_free_ports(Settings(metrics_port=0, facade_ops_port=0))


def _starts_python(call: ast.Call, argv_lists: dict[str, ast.List]) -> bool:
    """Whether ``call`` may run a Python program. Only an argv (or program) written out
    naming another program (``prometheus``, ``helm()``, ...) is known not to; an argv built
    by a call (``schemathesis_command(...)``) may be Python."""
    if not call.args:
        return True
    first = call.args[0]
    if isinstance(call.func, ast.Attribute) and call.func.attr == "create_subprocess_exec":
        first = ast.List(elts=[first])  # (program, *args)
    if isinstance(first, ast.Name) and first.id in argv_lists:
        first = argv_lists[first.id]  # ``command = [sys.executable, ...]`` above the call
    if isinstance(first, ast.List):
        return not first.elts or ast.unparse(first.elts[0]) == "sys.executable"
    return True


def _lines_without_the_helper(source: str) -> list[int]:
    """The lines of ``source`` that start a Python process with an environment not built
    by ``child_environment(...)`` right in the call."""
    tree = ast.parse(source)
    argv_lists = {
        node.targets[0].id: node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.List)
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if not isinstance(owner, ast.Name) or (owner.id, node.func.attr) not in _STARTERS:
            continue
        if not _starts_python(node, argv_lists):
            continue
        env = next((k.value for k in node.keywords if k.arg == "env"), None)
        built_by_helper = (
            isinstance(env, ast.Call)
            and isinstance(env.func, ast.Name)
            and env.func.id == "child_environment"
        )
        if not built_by_helper:
            found.append(node.lineno)
    return found


def test_every_python_process_a_test_starts_gets_its_environment_from_the_helper() -> None:
    # A process started without it inherits the defaults, 9102 and 9103 among them.
    unchecked = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in _lines_without_the_helper(path.read_text())
    ]
    assert unchecked == [], "pass env=child_environment(...) (tests/support/child_env.py)"


def test_the_scan_finds_a_process_started_without_the_helper() -> None:
    # The check above must be able to fail: the shapes it has to catch, and those it leaves.
    source = (
        "import asyncio, os, subprocess, sys\n"
        "subprocess.run([sys.executable, '-m', 'paygate.cli', 'consumer'])\n"
        "subprocess.Popen(command, env={**os.environ})\n"
        "asyncio.create_subprocess_exec(sys.executable, '-m', 'providers.sandbox')\n"
        "subprocess.run([sys.executable, '-m', 'x'], env=child_environment())\n"
        "subprocess.run(['prometheus', '--config.file=p.yml'])\n"
        "subprocess.run([binary, '--config.file=p.yml'], env=env)\n"
        "env = {**os.environ}\n"
        "subprocess.run([sys.executable, '-c', 'pass'], env=env)\n"
        "args = [str(stripe_mock), '-http-addr', '127.0.0.1:0']\n"
        "subprocess.Popen(args)\n"
        "argv = [sys.executable, '-m', 'devtools.chaos']\n"
        "subprocess.run(argv, timeout=60)\n"
        "subprocess.run(schemathesis_command(url), env={'A': 'b'})\n"
    )
    assert _lines_without_the_helper(source) == [2, 3, 4, 9, 13, 14]
