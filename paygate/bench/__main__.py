from paygate.bench.main import main

raise SystemExit(main())
