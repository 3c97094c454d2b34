"""``python -m devtools.chaos``: the same run as ``paygate chaos``."""

from devtools.chaos import main

raise SystemExit(main())
