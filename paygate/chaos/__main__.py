"""``python -m paygate.chaos``: the same run as ``paygate chaos``."""

from paygate.chaos import main

raise SystemExit(main())
