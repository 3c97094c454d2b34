"""Where schema ids come from.

The Confluent wire format names the writer's schema by a 4-byte id. By default the ids
are read from ``schemas/schema_ids.json`` in this repository, so producers and consumers
built from the same release agree without a running registry. A Confluent-compatible
Schema Registry plugs in as another :class:`SchemaRegistry`: it must answer from memory
(fill a cache at start-up, refresh it in the background), because lookups happen on the
hot path of every message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any, Protocol

import fastavro
from fastavro.types import Schema

ParsedSchema = Schema


class SchemaRegistry(Protocol):
    def latest_id(self, full_name: str) -> int:
        """The id to write ``full_name`` records with (its newest version)."""
        ...

    def schema(self, schema_id: int) -> ParsedSchema | None:
        """The parsed schema registered under ``schema_id``, or None if unknown."""
        ...

    def full_name(self, schema_id: int) -> str | None: ...

    async def learn(self, schema_id: int) -> None:
        """Make ``schema_id`` known if it can be (may ask a registry; see
        :mod:`schemas.registry_schemas`); a no-op for ids already known."""
        ...


class FileSchemaRegistry:
    """Schemas from ``.avsc`` files, with ids from a JSON file (``{"schemas": {id: file}}``)."""

    def __init__(self, ids: Mapping[int, Mapping[str, Any]]) -> None:
        self._by_id: Mapping[int, ParsedSchema] = MappingProxyType(
            {schema_id: fastavro.parse_schema(dict(raw)) for schema_id, raw in ids.items()}
        )
        latest: dict[str, int] = {}
        self._names: dict[int, str] = {}
        for schema_id, raw in ids.items():
            name = full_name_of(raw)
            self._names[schema_id] = name
            latest[name] = max(schema_id, latest.get(name, schema_id))
        self._latest = MappingProxyType(latest)

    @classmethod
    def bundled(cls) -> FileSchemaRegistry:
        """The schemas shipped in this package."""
        root = resources.files("schemas")
        index = json.loads(root.joinpath("schema_ids.json").read_text())
        loaded = {
            int(schema_id): json.loads(root.joinpath("avro", file_name).read_text())
            for schema_id, file_name in index["schemas"].items()
        }
        return cls(loaded)

    def latest_id(self, full_name: str) -> int:
        return self._latest[full_name]

    def schema(self, schema_id: int) -> ParsedSchema | None:
        return self._by_id.get(schema_id)

    def full_name(self, schema_id: int) -> str | None:
        return self._names.get(schema_id)

    async def learn(self, schema_id: int) -> None:
        """Every id this source will ever know is in its file: nothing to learn."""

    @staticmethod
    def bundled_schemas() -> list[dict[str, Any]]:
        """The shipped ``.avsc`` schemas, oldest first (in id order)."""
        root = resources.files("schemas")
        index = json.loads(root.joinpath("schema_ids.json").read_text())["schemas"]
        return [
            json.loads(root.joinpath("avro", index[key]).read_text())
            for key in sorted(index, key=int)
        ]


def full_name_of(raw: Mapping[str, Any]) -> str:
    """A record schema's full name (``namespace.Name``), parsed or raw."""
    name = str(raw["name"])
    # Parsed schemas carry the full name already; raw .avsc files split it.
    return name if "." in name or "namespace" not in raw else f"{raw['namespace']}.{name}"
