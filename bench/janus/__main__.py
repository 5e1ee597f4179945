from bench.janus.cli import main

raise SystemExit(main())
