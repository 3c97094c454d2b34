"""``python -m paygate.outage``: see :mod:`paygate.outage`."""

from paygate.outage import main

raise SystemExit(main())
