"""The supervisor of ``paygate facade --workers N``, with stand-in workers: it announces
the URL once, after every worker is ready; SIGTERM stops them all and it exits 0; a worker
that exits unasked stops the others and the supervisor exits 1.

Each case runs in a child interpreter: the supervisor forks, which a test process should
not do to itself.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.child_env import child_environment

pytestmark = pytest.mark.integration

_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from paygate.facade_workers import run_facade_workers
    from paygate.settings import Settings

    FIRST = Path(sys.argv[1])

    def worker(settings, ready):
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})
    {body}

    sys.exit(run_facade_workers(Settings(http_port=0, facade_ops_port=0), 2, worker))
    """
)
# The stand-in for a facade: ready, then serve until SIGTERM.
_SERVES = """
    ready()
    signal.sigwait({signal.SIGTERM})
    return 0
"""


def _start(body: str, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT.format(body=body), str(tmp_path / "first")],
        env=child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_url_is_announced_once_and_sigterm_stops_every_worker(tmp_path: Path) -> None:
    supervisor = _start(_SERVES, tmp_path)
    assert supervisor.stdout is not None
    line = supervisor.stdout.readline()  # blocks until both workers are ready
    assert line.startswith("PAYGATE_URL=https://127.0.0.1:"), supervisor.communicate()[1]
    supervisor.send_signal(signal.SIGTERM)
    out, err = supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0, err
    assert "PAYGATE_URL=" not in out  # once only


def test_a_worker_that_exits_unasked_stops_the_other_and_the_supervisor_exits_1(
    tmp_path: Path,
) -> None:
    # The first worker to claim the file dies once both are up; the other serves on.
    body = """
    ready()
    try:
        FIRST.touch(exist_ok=False)
    except FileExistsError:
        signal.sigwait({signal.SIGTERM})
        return 0
    return 3
"""
    supervisor = _start(body, tmp_path)
    _, err = supervisor.communicate(timeout=60)
    assert "Traceback" not in err, err  # the stand-ins ran: no error of the script itself
    assert supervisor.returncode == 1, err


def test_a_worker_that_dies_before_it_is_ready_means_no_announcement(tmp_path: Path) -> None:
    supervisor = _start("\n    return 3\n", tmp_path)
    out, err = supervisor.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert "PAYGATE_URL=" not in out
    assert supervisor.returncode == 1, err
