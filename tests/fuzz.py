"""``make fuzz``: the property targets of tests/fuzz_targets.py with a large example budget.

    python -m tests.fuzz [--examples N] [--target NAME ...] [--seed S]   (from the repo root)

Runs N examples per target (default 25,000 each, 100,000 in all), counts every outcome and
every failure (an exception other than the module's own validation error, or a broken
property), prints the counts and the first failing inputs, and exits 1 when anything failed.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter

from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.fuzz_targets import TARGETS


def run(name: str, examples: int, rng_seed: int | None) -> tuple[int, Counter, dict[str, str]]:
    target, strategy = TARGETS[name]
    outcomes: Counter[str] = Counter()
    failures: dict[str, str] = {}  # the first input of each kind of failure

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(value: object) -> None:
        try:
            outcomes[target(value)] += 1
        except Exception as e:  # noqa: BLE001 - a failure is counted, the run goes on
            key = f"{type(e).__name__}: {str(e)[:120]}"
            kind = f"{type(e).__name__}: {str(e).split(chr(39))[0][:50]}"
            outcomes["FAILED " + kind] += 1
            if kind not in failures and len(failures) < 10:
                failures[kind] = (f"{key}\n    input: {value!r:.300}\n"
                                  + "".join(traceback.format_exception(e)[-4:]))

    if rng_seed is not None:
        one = seed(rng_seed)(one)
    one()
    return sum(outcomes.values()), outcomes, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=25_000, help="examples per target")
    ap.add_argument("--target", action="append", choices=sorted(TARGETS))
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    total = failed = 0
    for name in args.target or list(TARGETS):
        t0 = time.monotonic()
        n, outcomes, failures = run(name, args.examples, args.seed)
        bad = sum(c for k, c in outcomes.items() if k.startswith("FAILED"))
        total += n
        failed += bad
        print(f"{name}: {n} examples in {time.monotonic() - t0:.0f}s, {bad} failures")
        for k, c in outcomes.most_common():
            print(f"  {c:7d}  {k}")
        for f in failures.values():
            print("  failure:", f.replace("\n", "\n  "))
    print(f"total: {total} examples, {failed} failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
