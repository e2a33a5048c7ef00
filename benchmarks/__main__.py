"""``python -m benchmarks [--smoke] [--cache DIR] [--json FILE] ...``."""

from benchmarks.run import main

raise SystemExit(main())
