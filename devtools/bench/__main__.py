from devtools.bench.main import main

raise SystemExit(main())
