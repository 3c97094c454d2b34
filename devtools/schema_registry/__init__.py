"""A local Confluent-API-compatible Schema Registry (Apicurio Registry 3.x) for development
and tests, started from its Maven Central distribution like the local Kafka broker.

See :class:`LocalSchemaRegistry`.
"""

from devtools.schema_registry.launcher import LocalSchemaRegistry, RegistryLaunchError

__all__ = ["LocalSchemaRegistry", "RegistryLaunchError"]
