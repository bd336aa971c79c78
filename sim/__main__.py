"""``python -m kmta.sim [options]``: the same as ``kmta isp-sim [options]``."""

import sys

from kmta.sim.cli import main

sys.exit(main())
