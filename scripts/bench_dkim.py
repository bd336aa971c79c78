#!/usr/bin/env python3
"""DKIM signing cost per message: CPU time of kmta's signing step (``Outgoing.stamp``: the
header list, relaxed/relaxed canonicalisation, hashing, the signature) for RSA-2048
and ed25519, on composed messages of 2 KB and 100 KB. ``make bench`` prints it too.

    python scripts/bench_dkim.py [--seconds 1.0] [--json PATH]

Each figure is the median of 5 rounds of process CPU time (``time.process_time``) per message;
one worker signs each message once (retries reuse the signature), so messages per core second
is 1 / this figure.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ops.signing_cost import measure, render


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per case")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = measure(args.seconds)
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
