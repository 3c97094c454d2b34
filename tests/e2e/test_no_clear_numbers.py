"""Proof: after an end-to-end run, no clear account number is anywhere at rest.

A broker of its own (so every log segment it holds was written by this run), the sandbox
acquirer, the consumer and a facade as ``paygate`` processes, clear numbers refused on
Kafka (the production posture). The run pays cards, an IBAN and a bank account number by
REST (by number and by token), puts commands on Kafka with a token and with numbers
encrypted to paygate's public key, and two that are dead-lettered (an altered encrypted
number, an unsupported currency). Producers that send clear numbers on Kafka are refused
outside development, and what they write to the commands topic is theirs: the dead-letter
redaction of such commands is proved in tests/integration/test_pipeline_kafka.py and
test_dead_letter_kinds.py. Then everything stops and the test reads:

- every file of the broker's log dir: every segment of every topic (commands, results,
  dead letters, consumer offsets, the cluster metadata);
- the database file and its WAL, raw bytes and every row; the vault's tables' rows;
- the sandbox ledger; every process's log output;

and finds none of the numbers sent. Each scan also proves it looked where the data is
(the tokens are in the commands' segments, the vault has rows, ...).
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devtools.kafka import LocalKafka
from domain.accounts import Account, AccountType
from domain.vaulted import AccountToken, EncryptedAccount
from paygate.topics import ensure_topics
from producer.account_encryption import encrypt_account_number
from schemas.payments import PaymentMessages
from tests.support.builders import (
    DECLINED_CARD,
    PAYEE_IBAN,
    SUCCESS_CARD,
    create_payment,
)
from tests.support.clear_numbers import (
    CLEAR_ACCOUNT_NUMBERS,
    numbers_in,
    scan_files,
    scan_sqlite,
)
from tests.support.kafka_io import produce, read_until
from tests.support.processes import ServiceProcess, environment_of, start_service
from tests.support.stack import Stack, create_api_key, isolated_settings, poll_final

pytestmark = pytest.mark.e2e

BANK_ACCOUNT = "000123456789"
NUMBERS = (*CLEAR_ACCOUNT_NUMBERS, BANK_ACCOUNT)
MESSAGES = PaymentMessages.bundled()


def found_in(data: bytes) -> list[str]:
    return numbers_in(data, NUMBERS)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[str, LocalKafka]]:
    kafka = LocalKafka(work_dir=tmp_path / "kafka", heap_mb=384)
    with kafka:
        yield kafka.bootstrap_servers, kafka


def _body(payer: dict[str, Any], payee: dict[str, Any]) -> dict[str, Any]:
    return {
        "userId": "user-proof",
        "orderId": f"order-{uuid.uuid4().hex[:12]}",
        "amount": "12.00",
        "currency": "EUR",
        "paymentMethod": "card",
        "payerAccount": payer,
        "payeeAccount": payee,
    }


async def test_no_clear_account_number_at_rest_after_a_run(
    broker: tuple[str, LocalKafka], tmp_path: Path
) -> None:
    bootstrap, kafka = broker
    work = tmp_path / "stack"
    work.mkdir()
    settings = isolated_settings(
        bootstrap,
        work,
        f"sqlite+aiosqlite:///{work / 'paygate.db'}",
        "proof",
        accept_clear_account_numbers=False,
        account_encryption_key_files=[work / "account-key.pem"],
    )
    await ensure_topics(settings)
    env = environment_of(settings)
    api_key = await asyncio.to_thread(create_api_key, env, "proof")
    processes: list[ServiceProcess] = []
    try:
        acquirer = start_service(
            "acquirer", ["acquirer"], env=env, log_dir=work, announce_prefix="SANDBOX_URL="
        )
        processes.append(acquirer)
        env["PAYGATE_SANDBOX_URL"] = acquirer.announced
        processes.append(start_service("consumer", ["consumer"], env=env, log_dir=work))
        facade = start_service(
            "facade", ["facade"], env=env, log_dir=work, announce_prefix="PAYGATE_URL="
        )
        processes.append(facade)
        stack = Stack(
            facade.announced,
            work / "tls" / "localhost.crt",
            processes,
            second_url=facade.announced,
            api_key=api_key,
            other_api_key=api_key,
        )
        tokens = await _run(stack, settings, bootstrap)
    except BaseException:
        # What each process was doing, for a run that timed out waiting on it.
        for process in processes:
            print(f"--- {process.name} log (tail) ---\n{process.log()[-6000:]}")
        raise
    finally:
        for process in reversed(processes):
            process.stop()
    kafka.stop()  # graceful: every segment flushed and closed before it is read

    # 1. Every file of the broker's log dir.
    data_dir = tmp_path / "kafka" / "data"
    segments = [p for p in data_dir.rglob("*") if p.is_file()]
    logs = [p for p in segments if p.suffix == ".log"]
    command_logs = [p for p in logs if p.parent.name.startswith(settings.commands_topic)]
    assert command_logs, "no log segment of the commands topic: the scan would check nothing"
    assert any(tokens[0].encode() in p.read_bytes() for p in command_logs)
    dlq_logs = [p for p in segments if p.parent.name.startswith(settings.dlq_topic)]
    assert any(p.stat().st_size > 0 for p in dlq_logs if p.suffix == ".log")
    # Records are stored as produced: paygate's producers do not compress, so the raw bytes
    # show every record (payment ids in the results, tokens in the commands). Were
    # compression turned on, this scan would have to decompress batches first.
    assert any(
        b"pay_" in p.read_bytes() for p in logs if p.parent.name.startswith(settings.results_topic)
    )
    leaks = scan_files(data_dir, NUMBERS)
    assert len(leaks) == len(segments)
    assert {p: n for p, n in leaks.items() if n} == {}

    # 2. The database, raw and row by row, and the vault's tables in it.
    store = scan_sqlite(work / "paygate.db")
    assert store.rows > 0
    assert store.findings == []
    for file in work.glob("paygate.db*"):
        assert found_in(file.read_bytes()) == [], file.name
    connection = sqlite3.connect(work / "paygate.db")
    try:
        vault_rows = connection.execute("SELECT token, ciphertext FROM vault_entries").fetchall()
    finally:
        connection.close()
    assert {t for t, _ in vault_rows} >= set(tokens)
    assert all(found_in(bytes(c)) == [] for _, c in vault_rows)

    # 3. The sandbox ledger, and 4. everything every process logged.
    ledger = scan_sqlite(settings.acquirer_ledger)
    assert ledger.rows > 0
    assert ledger.findings == []
    for process in processes:
        assert process.process.returncode == 0, process.log()[-3000:]
        assert found_in(process.log().encode()) == [], f"{process.name} logged a number"


async def _run(stack: Stack, settings: Any, bootstrap: str) -> list[str]:
    """Pay every way there is; return the tokens made by REST."""
    card = {"type": "card", "number": SUCCESS_CARD}
    iban = {"type": "iban", "number": PAYEE_IBAN}
    bank = {"type": "bank_account", "number": BANK_ACCOUNT}
    async with stack.session() as session:
        async with session.post("/v1/payment_methods", json={**card, "saved": True}) as response:
            assert response.status == 201
            token = (await response.json())["token"]
        async with session.get("/v1/payment_methods/encryption_key") as response:
            public_key = (await response.json())["publicKey"].encode()
        bodies = [
            _body(card, iban),
            _body({"type": "card", "number": DECLINED_CARD}, bank),
            _body({"token": token}, iban),
        ]
        ids = []
        for body in bodies:
            async with session.post("/v1/payments", json=body) as response:
                assert response.status == 202, await response.text()
                ids.append((await response.json())["paymentRequestId"])

        # Upstream services on Kafka: a token (tokens of upstream services are made with
        # clientId null, so this one is the REST client's and needs its clientId), a number
        # encrypted to paygate's key, and three that are dead-lettered.
        by_token = replace(
            create_payment(),
            payer=AccountToken(AccountType.CARD, token),
            payee=_encrypted(public_key, Account(AccountType.IBAN, PAYEE_IBAN)),
            client_id="proof",
        )
        by_encrypted = replace(
            create_payment(),
            payer=_encrypted(public_key, Account(AccountType.CARD, SUCCESS_CARD)),
            payee=_encrypted(public_key, Account(AccountType.BANK_ACCOUNT, BANK_ACCOUNT)),
        )
        altered = _encrypted(public_key, Account(AccountType.CARD, SUCCESS_CARD))
        altered = replace(altered, ciphertext=altered.ciphertext[:-1] + b"\x00")
        tampered = replace(by_encrypted, payer=altered, order_id="order-tampered")
        bad_currency = replace(by_token, order_id="order-bad-currency")
        await produce(
            bootstrap,
            settings.commands_topic,
            [
                (b"k-token", MESSAGES.encode_command(by_token)),
                (b"k-encrypted", MESSAGES.encode_command(by_encrypted)),
                (b"k-tampered", MESSAGES.encode_command(tampered)),
                (b"k-currency", _with_currency(MESSAGES.encode_command(bad_currency))),
            ],
        )
        for payment_id in [*ids, by_token.payment_request_id]:
            await poll_final(session, payment_id)
        await read_until(bootstrap, settings.dlq_topic, lambda rs: len(rs) >= 2)
        await read_until(bootstrap, settings.results_topic, lambda rs: len(rs) >= len(ids) + 2)
    return [token]


def _with_currency(data: bytes) -> bytes:
    """The command with currency ``XYZ`` (which the domain refuses), same length."""
    return data.replace(b"\x06EUR", b"\x06XYZ", 1)


def _encrypted(public_key: bytes, account: Account) -> EncryptedAccount:
    record: dict[str, Any] = encrypt_account_number(public_key, account.type.value, account.number)
    return EncryptedAccount(
        account.type, record["keyId"], record["wrappedKey"], record["nonce"], record["ciphertext"]
    )
