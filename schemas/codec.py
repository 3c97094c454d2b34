"""Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then Avro binary.

Decoding resolves the writer's schema (named by the id) against the reader's newest
schema of the same record, so a consumer reads messages written with an older, backward
compatible version.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Collection, Mapping
from typing import Any, Final

import fastavro

from domain.errors import ErrorCode, PaygateError
from schemas.registry import SchemaRegistry

MAGIC_BYTE: Final = 0
_HEADER: Final = struct.Struct(">bI")

CREATE_PAYMENT: Final = "paygate.payments.v1.CreatePayment"
PAYMENT_RESULT: Final = "paygate.payments.v1.PaymentResult"
REFUND_PAYMENT: Final = "paygate.payments.v1.RefundPayment"
REFUND_RESULT: Final = "paygate.payments.v1.RefundResult"
CAPTURE_PAYMENT: Final = "paygate.payments.v1.CapturePayment"
CANCEL_PAYMENT: Final = "paygate.payments.v1.CancelPayment"


class CodecError(PaygateError):
    """A message that can never be decoded: it belongs in the dead-letter topic."""

    def __init__(self, code: ErrorCode, message: str, *, reason: str) -> None:
        super().__init__(code, message)
        self.reason = reason


class AvroCodec:
    def __init__(self, registry: SchemaRegistry) -> None:
        self._registry = registry

    def encode(self, full_name: str, record: Mapping[str, Any]) -> bytes:
        schema_id = self._registry.latest_id(full_name)
        schema = self._registry.schema(schema_id)
        if schema is None:
            raise KeyError(f"schema id {schema_id} of {full_name} is not registered")
        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC_BYTE, schema_id))
        fastavro.schemaless_writer(out, schema, dict(record))
        return out.getvalue()

    async def learn_writer(self, data: bytes) -> None:
        """Ask the schema source about the writer id of ``data`` (when it has a wire-format
        header) so that decoding answers from memory; see :mod:`schemas.registry_schemas`.
        May raise ``SchemaSourceUnavailable``: retry later, the message is not at fault."""
        if len(data) >= _HEADER.size:
            magic, schema_id = _HEADER.unpack_from(data)
            if magic == MAGIC_BYTE:
                await self._registry.learn(schema_id)

    def writer_has_field(self, data: bytes, field: str) -> bool:
        """Whether the schema ``data`` was written with has a top-level ``field``: a field
        missing there reads as the reader's default, which may not be what it means in
        older records. False when ``data`` names no known schema."""
        if len(data) < _HEADER.size:
            return False
        _magic, schema_id = _HEADER.unpack_from(data)
        writer = self._registry.schema(schema_id)
        if not isinstance(writer, dict):
            return False
        return any(spec.get("name") == field for spec in writer.get("fields", ()))

    def decode(self, data: bytes, full_name: str) -> dict[str, Any]:
        """Decode a ``full_name`` record; raise :class:`CodecError` for anything else."""
        return self.decode_one_of(data, (full_name,))[1]

    def decode_one_of(self, data: bytes, full_names: Collection[str]) -> tuple[str, dict[str, Any]]:
        """Decode a record of one of ``full_names``; return its name and the record.

        A topic that carries several record types (commands: payments and refunds) is read
        this way: the writer's schema id says which record it is.
        """
        if len(data) < _HEADER.size:
            raise CodecError(
                ErrorCode.MALFORMED_MESSAGE,
                f"message has {len(data)} bytes, fewer than the 5-byte wire-format header",
                reason="truncated_header",
            )
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise CodecError(
                ErrorCode.MALFORMED_MESSAGE,
                f"message starts with byte {magic & 0xFF}, not the wire-format magic byte 0",
                reason="bad_magic_byte",
            )
        writer = self._registry.schema(schema_id)
        writer_name = self._registry.full_name(schema_id)
        if writer is None or writer_name is None:
            raise CodecError(
                ErrorCode.UNKNOWN_SCHEMA, f"schema id {schema_id} is not known", reason="unknown_id"
            )
        if writer_name not in full_names:
            raise CodecError(
                ErrorCode.UNKNOWN_SCHEMA,
                f"schema id {schema_id} is {writer_name}, not {' or '.join(full_names)}",
                reason="unexpected_record",
            )
        reader = self._registry.schema(self._registry.latest_id(writer_name))
        body = io.BytesIO(data)
        body.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(body, writer, reader)
        except EOFError as exc:
            raise CodecError(
                ErrorCode.MALFORMED_MESSAGE,
                f"Avro body ends early for schema id {schema_id}: the message is truncated",
                reason="truncated_body",
            ) from exc
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise CodecError(
                ErrorCode.MALFORMED_MESSAGE,
                f"Avro body does not decode with schema id {schema_id}: {type(exc).__name__}",
                reason="undecodable_body",
            ) from exc
        if body.tell() != len(data):
            raise CodecError(
                ErrorCode.MALFORMED_MESSAGE,
                f"{len(data) - body.tell()} bytes left over after the Avro body",
                reason="trailing_bytes",
            )
        if not isinstance(record, dict):
            raise CodecError(
                ErrorCode.MALFORMED_MESSAGE, "Avro body is not a record", reason="not_a_record"
            )
        return writer_name, record
