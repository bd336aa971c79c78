"""``python -m sim [options]``: the same as ``kmta isp-sim [options]``."""

import sys

from sim.cli import main

sys.exit(main())
