"""``python -m devtools.bench``: the pipeline's throughput beside a bare aiokafka loop.

Three cases run in one process, one after the other, on one broker, each on fresh topics
with the same pre-produced Avro ``CreatePayment`` commands:

* a: a bare aiokafka consume-then-produce loop (the baseline);
* b: the full consumer pipeline (:class:`~paygate.consumer_service.ConsumerService`) with a
  provider that answers at once;
* c: the same pipeline with a provider that takes 100 ms per call.

It reports rates and the ratios the project is measured by (see ``docs/performance.md``);
it never asserts on timing.
"""

from devtools.bench.main import main

__all__ = ["main"]
