"""Schema ids from a Confluent-API Schema Registry instead of ``schema_ids.json``.

The codec's port (:class:`schemas.registry.SchemaRegistry`) answers from memory, on the
hot path of every message. This source fills that memory:

- at start, :meth:`RegistrySchemas.register_bundled` registers paygate's own schemas,
  oldest version first, each under its subject (``<topic>-<record full name>``, Confluent's
  TopicRecordNameStrategy: the commands topic carries three record types, so one subject
  per topic would make them one another's "versions"). The registry's compatibility rule
  checks each; the ids it assigns are the ones paygate writes with.
- a writer id first seen in a message is fetched once (:meth:`learn`, bounded in time) and
  kept; an id the registry does not know is remembered as unknown (a bounded set), so a
  stream of garbage ids costs one request each at most, not one per message.
- when the registry cannot be asked (down, timing out), :meth:`learn` raises
  :class:`SchemaSourceUnavailable`: the caller retries later instead of dead-lettering a
  message the registry may well know. Ids already cached never need the registry.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import fastavro
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.registry import ParsedSchema, full_name_of

_NOT_FOUND: Final = 404
_DEFAULT_UNKNOWN_LIMIT: Final = 10_000


class SchemaSourceUnavailable(Exception):
    """The registry could not answer now; the same question may succeed later."""


class RegistryClient(Protocol):
    """What this source needs of confluent-kafka's ``AsyncSchemaRegistryClient``."""

    async def register_schema(self, subject_name: str, schema: Schema) -> int: ...

    async def get_schema(self, schema_id: int) -> Schema: ...


class RegistrySchemas:
    """A :class:`schemas.registry.SchemaRegistry` whose ids come from a registry."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        fetch_timeout_s: float = 5.0,
        unknown_limit: int = _DEFAULT_UNKNOWN_LIMIT,
    ) -> None:
        self._client = client
        self._fetch_timeout_s = fetch_timeout_s
        self._unknown_limit = unknown_limit
        self._by_id: dict[int, ParsedSchema] = {}
        self._names: dict[int, str] = {}
        self._latest: dict[str, int] = {}
        self._unknown: OrderedDict[int, None] = OrderedDict()

    async def register_bundled(
        self, schemas: Sequence[Mapping[str, Any]], subject_of: Mapping[str, str]
    ) -> dict[str, int]:
        """Register ``schemas`` (oldest first) under ``subject_of[full name]``; the last
        one of each record becomes the id it is written with. Returns full name -> id.

        Raises :class:`SchemaSourceUnavailable` if the registry cannot be reached, and the
        client's error if it refuses a schema (an incompatible change).
        """
        for raw in schemas:
            name = full_name_of(raw)
            text = json.dumps(raw)
            try:
                schema_id = await asyncio.wait_for(
                    self._client.register_schema(subject_of[name], Schema(text, "AVRO")),
                    self._fetch_timeout_s,
                )
            except SchemaRegistryError:
                raise  # an answer, e.g. 409: the change breaks the compatibility rule
            except Exception as exc:  # the client's transport errors are its own types
                raise SchemaSourceUnavailable(f"registering {name}: {exc!r}") from exc
            self._keep(schema_id, raw)
            self._latest[name] = schema_id
        return dict(self._latest)

    async def learn(self, schema_id: int) -> None:
        """Make ``schema_id`` known if the registry knows it; a no-op when cached."""
        if schema_id in self._by_id or schema_id in self._unknown:
            return
        try:
            schema = await asyncio.wait_for(
                self._client.get_schema(schema_id), self._fetch_timeout_s
            )
        except SchemaRegistryError as exc:
            if exc.http_status_code != _NOT_FOUND:
                raise SchemaSourceUnavailable(f"schema id {schema_id}: {exc}") from exc
            self._remember_unknown(schema_id)
            return
        except Exception as exc:  # down, timing out: no verdict on the id
            raise SchemaSourceUnavailable(f"schema id {schema_id}: {exc!r}") from exc
        raw = json.loads(schema.schema_str or "null")
        if not isinstance(raw, dict) or raw.get("type") != "record":
            self._remember_unknown(schema_id)  # not an Avro record: never a command of ours
            return
        self._keep(schema_id, raw)

    def latest_id(self, full_name: str) -> int:
        return self._latest[full_name]

    def schema(self, schema_id: int) -> ParsedSchema | None:
        return self._by_id.get(schema_id)

    def full_name(self, schema_id: int) -> str | None:
        return self._names.get(schema_id)

    def _keep(self, schema_id: int, raw: Mapping[str, Any]) -> None:
        self._by_id[schema_id] = fastavro.parse_schema(dict(raw))
        self._names[schema_id] = full_name_of(raw)

    def _remember_unknown(self, schema_id: int) -> None:
        self._unknown[schema_id] = None
        while len(self._unknown) > self._unknown_limit:
            self._unknown.popitem(last=False)
