"""``python -m system``: the same as the ``qemu-monitor-emu`` command."""

import sys

from system.main import main

sys.exit(main())
