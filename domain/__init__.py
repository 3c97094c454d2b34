"""The pure domain of paygate: money, accounts, statuses, commands, events and errors.

Nothing in this package imports Kafka, SQLAlchemy, aiohttp or a provider SDK: the
adapters around it translate to and from these types.
"""
