"""An account number in a command's metadata or in its Kafka key never reaches the store,
a provider or the dead-letter topic in clear: real broker, SQLite and PostgreSQL.

Such a command is dead-lettered at decode (code ``account_number_in_text``), before any
provider call: metadata is stored and published as it is, and only account fields are
vaulted. The dead letter keeps the command re-publishable (ids, key and idempotency key
as they were) with the numbers masked: metadata re-encoded with each finding masked to
its last four, a key masked the same way. A command keyed by its own order id, with
ordinary ids in its metadata (timestamps, a UUID), is processed as ever.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy.engine import make_url

from consumer.dead_letters import HEADER_ERROR_CODE, HEADER_REASON
from domain.payments import payment_request_id_for
from paygate.settings import Settings
from persistence.engine import create_engine
from persistence.payment_store import PaymentStore
from providers.port import ChargeOutcome, ChargeRequest
from providers.sandbox import InProcessSandboxProvider
from schemas.codec import CREATE_PAYMENT
from schemas.payments import PaymentMessages
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD, encoded_command
from tests.support.clear_numbers import Scan, numbers_in, scan_postgres, scan_sqlite
from tests.support.consumer_run import running_consumer
from tests.support.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
GROUPED_IBAN = "DE89 3704 0044 0532 0130 00"
DOTTED_CARD = "4242.4242.4242.4242"


class RecordingSandbox(InProcessSandboxProvider):
    """The sandbox, noting every payment it was asked to charge."""

    def __init__(self) -> None:
        super().__init__()
        self.charged: list[str] = []

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.charged.append(request.payment_request_id)
        return await super().charge(request)


def _headers(record: ConsumerRecord) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


async def _scan_store(database_url: str) -> Scan:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database
        return scan_sqlite(Path(url.database))
    return await scan_postgres(database_url)


async def test_account_numbers_in_metadata_or_key_are_dead_lettered_masked_and_never_stored(
    topics: Settings, database_url: str
) -> None:
    settings = topics.model_copy(update={"database_url": database_url})
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    in_value = encoded_command(metadata={"cart": "42", "note": f"card {SUCCESS_CARD}"})
    in_metadata_key = encoded_command(metadata={GROUPED_IBAN: "payee"})
    _, by_key_value, by_key = encoded_command()
    # Keyed by its own order id, numeric, with ordinary ids in its metadata: processed.
    ordinary_ids = {
        "createdAtMs": "1765062000002",
        "trace": "550e8400-e29b-41d4-a716-424242424242",
    }
    good_key, good_value, good = encoded_command(orderId="1796538959715", metadata=ordinary_ids)
    await produce(
        bootstrap,
        settings.commands_topic,
        [
            (in_value[0], in_value[1]),
            (in_metadata_key[0], in_metadata_key[1]),
            (SUCCESS_CARD.encode(), by_key_value),
            (good_key, good_value),
        ],
    )
    refused = {
        payment_request_id_for(r["orderId"], r["idempotencyKey"]): r
        for r in (in_value[2], in_metadata_key[2], by_key)
    }
    good_id = payment_request_id_for(good["orderId"], good["idempotencyKey"])
    provider = RecordingSandbox()

    async with running_consumer(settings, provider):
        dead = await read_until(bootstrap, settings.dlq_topic, lambda rs: len(rs) >= 3)
        results = await read_until(bootstrap, settings.results_topic, lambda rs: len(rs) >= 1)

    # No provider call but the good payment's, and its result the only one.
    assert provider.charged == [good_id]
    assert [MESSAGES.decode_any_result(r.value).payment_request_id for r in results] == [good_id]

    # Each dead letter says why, holds no number anywhere, and keeps its ids.
    by_order: dict[str, ConsumerRecord] = {}
    for record in dead:
        decoded = MESSAGES.command_record(record.value)
        assert decoded is not None
        assert decoded[0] == CREATE_PAYMENT
        by_order[decoded[1]["orderId"]] = record
        assert numbers_in(record.value, (SUCCESS_CARD, PAYEE_IBAN, GROUPED_IBAN)) == []
        assert numbers_in(record.key or b"", (SUCCESS_CARD,)) == []
        for _, header in record.headers:
            assert numbers_in(header, (SUCCESS_CARD, PAYEE_IBAN, GROUPED_IBAN)) == []
    assert set(by_order) == {r["orderId"] for r in refused.values()}
    expected = {
        in_value[2]["orderId"]: ("invalid_value:metadata.note", in_value[0]),
        in_metadata_key[2]["orderId"]: ("invalid_value:metadata", in_metadata_key[0]),
        by_key["orderId"]: ("invalid_value:key", b"****" + SUCCESS_CARD[-4:].encode()),
    }
    for order_id, (reason, key) in expected.items():
        record = by_order[order_id]
        headers = _headers(record)
        assert (headers[HEADER_ERROR_CODE], headers[HEADER_REASON]) == (
            "account_number_in_text",
            reason,
        )
        assert record.key == key
    decoded_note = MESSAGES.command_record(by_order[in_value[2]["orderId"]].value)
    assert decoded_note is not None
    note_record = decoded_note[1]
    assert note_record["metadata"] == {"cart": "42", "note": f"card ****{SUCCESS_CARD[-4:]}"}
    assert note_record["idempotencyKey"] == in_value[2]["idempotencyKey"]
    # Every dead letter keeps the ids a re-publish needs.
    for original in (in_value[2], in_metadata_key[2], by_key):
        decoded = MESSAGES.command_record(by_order[original["orderId"]].value)
        assert decoded is not None
        assert decoded[1]["idempotencyKey"] == original["idempotencyKey"]

    # The store holds the good payment only, and no number in any row.
    engine = create_engine(database_url)
    try:
        store = PaymentStore(engine)
        assert await store.get_payment(good_id) is not None
        for payment_id in refused:
            assert await store.get_payment(payment_id) is None
    finally:
        await engine.dispose()
    scan = await _scan_store(database_url)
    assert scan.rows > 0
    assert scan.findings == []


async def test_a_number_in_a_holder_name_is_refused_and_masked_in_its_dead_letter(
    topics: Settings, database_url: str
) -> None:
    """A holder name is free text beside the account: a number in it is refused like one
    in metadata, and a dead letter (for that or for any other reason) masks it."""
    settings = topics.model_copy(update={"database_url": database_url})
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    payer = {"type": "card", "number": SUCCESS_CARD, "holderName": f"Ada {SUCCESS_CARD}"}
    payee = {"type": "iban", "number": PAYEE_IBAN, "holderName": GROUPED_IBAN}
    in_holder = encoded_command(payerAccount=payer)
    # Dead-lettered for its currency on the old code too, which kept the holder name as
    # it came: the dead letter must mask it whatever the reason.
    bad_currency = encoded_command(
        payeeAccount=payee, currency="EURO", metadata={"note": DOTTED_CARD}
    )
    await produce(
        bootstrap,
        settings.commands_topic,
        [(in_holder[0], in_holder[1]), (bad_currency[0], bad_currency[1])],
    )
    provider = RecordingSandbox()
    async with running_consumer(settings, provider):
        dead = await read_until(bootstrap, settings.dlq_topic, lambda rs: len(rs) >= 2)

    assert provider.charged == []
    by_order: dict[str, ConsumerRecord] = {}
    for record in dead:
        assert numbers_in(record.value, (SUCCESS_CARD, PAYEE_IBAN, GROUPED_IBAN, DOTTED_CARD)) == []
        for _, header in record.headers:
            assert numbers_in(header, (SUCCESS_CARD, PAYEE_IBAN, GROUPED_IBAN, DOTTED_CARD)) == []
        decoded = MESSAGES.command_record(record.value)
        assert decoded is not None
        by_order[decoded[1]["orderId"]] = record
    holder_letter = by_order[in_holder[2]["orderId"]]
    assert (_headers(holder_letter)[HEADER_ERROR_CODE], _headers(holder_letter)[HEADER_REASON]) == (
        "account_number_in_text",
        "invalid_value:payerAccount.holderName",
    )
    decoded_holder = MESSAGES.command_record(holder_letter.value)
    assert decoded_holder is not None
    assert decoded_holder[1]["payerAccount"]["holderName"] == f"Ada ****{SUCCESS_CARD[-4:]}"
    assert decoded_holder[1]["idempotencyKey"] == in_holder[2]["idempotencyKey"]
    currency_letter = MESSAGES.command_record(by_order[bad_currency[2]["orderId"]].value)
    assert currency_letter is not None
    assert currency_letter[1]["payeeAccount"]["holderName"] == f"****{PAYEE_IBAN[-4:]}"
    assert currency_letter[1]["metadata"] == {"note": "****4242"}
    scan = await _scan_store(database_url)
    assert scan.findings == []
