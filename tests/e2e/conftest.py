"""The whole stack as processes, shared by the e2e modules that talk to it over HTTPS.

The sandbox acquirer, the consumer and two facades run as ``paygate`` processes against the
session's real broker, once with the store on SQLite and once on PostgreSQL. One stack per
package (per store) keeps the e2e run short; each test uses its own order ids.

At teardown, once every test that used the stack has run, the process logs, every table of
the store and the sandbox ledger are searched for the full account numbers the tests sent
(:mod:`tests.support.clear_numbers`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from paygate.topics import ensure_topics
from tests.support.clear_numbers import numbers_in, scan_postgres, scan_sqlite
from tests.support.processes import ServiceProcess, environment_of, start_service
from tests.support.stack import Stack, create_api_key, isolated_settings


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp(f"stack-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{work / 'paygate.db'}"
    else:
        database_url = request.getfixturevalue("postgres_database_url")
    settings = isolated_settings(kafka_bootstrap, work, database_url, "e2e")
    asyncio.run(ensure_topics(settings))
    env = environment_of(settings)
    api_key = create_api_key(env, "e2e")
    other_api_key = create_api_key(env, "e2e-other")
    processes: list[ServiceProcess] = []
    try:
        acquirer = start_service(
            "acquirer", ["acquirer"], env=env, log_dir=work, announce_prefix="SANDBOX_URL="
        )
        processes.append(acquirer)
        env["PAYGATE_SANDBOX_URL"] = acquirer.announced
        processes.append(start_service("consumer", ["consumer"], env=env, log_dir=work))
        facades = [
            start_service(name, ["facade"], env=env, log_dir=work, announce_prefix="PAYGATE_URL=")
            for name in ("facade", "facade-2")
        ]
        processes.extend(facades)
        yield Stack(
            facades[0].announced,
            work / "tls" / "localhost.crt",
            processes,
            second_url=facades[1].announced,
            api_key=api_key,
            other_api_key=other_api_key,
        )
    finally:
        for process in reversed(processes):
            process.stop()
    for process in processes:
        assert process.process.returncode == 0, (
            f"{process.name} exited badly:\n{process.log()[-3000:]}"
        )
        assert numbers_in(process.log()) == [], f"{process.name} logged a clear account number"
        for key in (api_key, other_api_key):
            assert key.rsplit("_", 1)[1] not in process.log(), f"{process.name} logged a key"
    # Every e2e test that used this stack has run: nothing it sent may be at rest in clear.
    store = (
        scan_sqlite(work / "paygate.db")
        if request.param == "sqlite"
        else asyncio.run(scan_postgres(database_url))
    )
    for scan in (store, scan_sqlite(settings.acquirer_ledger)):
        assert scan.rows > 0, f"{scan.place} held no rows: the scan checked nothing"
        assert scan.findings == [], f"clear account numbers at rest in {scan.place}"
