"""``python -m tools.bench``: see :mod:`tools.bench.run`."""

from __future__ import annotations

import sys

from tools.bench.run import main

sys.exit(main())
