"""``python -m paygate.dlq``: the same command as ``paygate dlq``."""

from paygate.dlq import main

raise SystemExit(main())
