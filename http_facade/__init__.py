"""The HTTPS REST facade: REST clients' way into the payment pipeline.

It validates a request, turns it into the same domain command an Avro message becomes,
publishes it to Kafka and answers at once (202) or, on request, after the result is known.
Everything it talks to comes in through the ports in :mod:`http_facade.ports`, wired by
:func:`http_facade.app.build_app`.
"""
