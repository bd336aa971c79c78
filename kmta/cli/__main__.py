"""``python -m kmta.cli ...``: how the tests, the demo and the benchmarks start processes."""
import sys

from kmta.cli import main

sys.exit(main())
