"""``python -m crossgeo``: the same as the ``crossgeo`` command."""

import sys

from crossgeo.cli import main

sys.exit(main())
