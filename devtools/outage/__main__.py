"""``python -m devtools.outage``: see :mod:`devtools.outage`."""

from devtools.outage import main

raise SystemExit(main())
