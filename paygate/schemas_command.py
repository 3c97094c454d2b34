"""``paygate schemas register``: register paygate's Avro schemas with the Schema Registry
(``PAYGATE_SCHEMA_REGISTRY_URL``) and print the ids it assigned, as JSON.

The consumer and the facade do the same at start; this command lets a deployment pipeline
do it (and see a refused, incompatible change) before any process is rolled out.
Registering a schema that is already registered is a no-op that returns its id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from paygate.event_loop import use_event_loop
from paygate.settings_errors import load_settings

EXIT_OK = 0
EXIT_ERROR = 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="paygate schemas", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("register", help="register the schemas; print record name -> id")
    parser.parse_args(argv)
    settings = load_settings("paygate schemas")
    if settings.schema_registry_url is None:
        print(
            "paygate schemas: PAYGATE_SCHEMA_REGISTRY_URL is not set (without a registry the "
            "ids of schemas/schema_ids.json are used, nothing to register)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    from paygate.schema_source import registered_ids

    use_event_loop(settings.event_loop)
    ids = asyncio.run(registered_ids(settings))  # SchemaRegistrySetupError exits with its message
    print(json.dumps(ids, indent=2, sort_keys=True))
    return EXIT_OK
