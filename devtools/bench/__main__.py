import sys

# ``rest`` is a bench of its own (the REST front door), with its own options; without it,
# the pipeline cases a, b and c run as before.
if sys.argv[1:2] == ["rest"]:
    from devtools.bench.rest import main as rest_main

    raise SystemExit(rest_main(sys.argv[2:]))

# ``refunds``: payments then a refund of each through the consumer, optionally beside a
# baseline checkout; options of its own too.
if sys.argv[1:2] == ["refunds"]:
    from devtools.bench.refunds import main as refunds_main

    raise SystemExit(refunds_main(sys.argv[2:]))

# ``captures``: authorize-only payments, then captures and cancels of them, the same way.
if sys.argv[1:2] == ["captures"]:
    from devtools.bench.refunds import main as refunds_main

    raise SystemExit(refunds_main(sys.argv[2:], "captures"))

# ``hops``: one stack's create-and-wait latency cut at the marks Kafka and the store keep.
if sys.argv[1:2] == ["hops"]:
    from devtools.bench.hops import main as hops_main

    raise SystemExit(hops_main(sys.argv[2:]))

from devtools.bench.main import main

raise SystemExit(main())
