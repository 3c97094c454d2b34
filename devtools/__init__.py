"""Developer tools, kept apart from the service: the local Kafka broker launcher
(``devtools.kafka``), the one-process development stack (``paygate dev``), the chaos run
(``devtools.chaos``), the benchmark (``devtools.bench``) and the provider-outage harness
(``devtools.outage``). The service's processes never import this package; only
``paygate dev`` does, lazily."""
