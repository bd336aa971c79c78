#!/usr/bin/env python3
"""What one delivery event costs the brain: ``streams.brain.apply_event`` per event, and the
decide agent's whole row round trip, with N source IPs of one ISP.

Runs the same workload against this tree and, side by side in the same run, against another
checkout (``--other``; default: ``git archive main`` into a temporary directory), each in a
subprocess whose ``sys.path`` starts at that tree; and against this tree with the per-IP levels
switched off (``speed.per_ip = false``), unless ``--no-shared``. Not a test: figures depend on
the machine. "agent us" is the decide agent's work per event in that tree (the event decoded,
the row read from its table value, the event applied, the row encoded as the table value,
which is also its changelog record; in batches of ``--batch`` where the tree's agent takes
batches (streams/decide.py), one write per ISP and batch). "B/event": changelog bytes per
event. Usage::

    python scripts/bench_brain_event.py [--ips 10] [--events 20000] [--other PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = r"""
import json, sys, time
from kmta.policy.kb import KnowledgeBase
from schemas import DeliveryEvent, Status
from streams.brain import Row, apply_event, states_of

ips, events, rules = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
every, batch = int(sys.argv[4]), int(sys.argv[5])
kb = KnowledgeBase.load()
addrs = [f"192.0.2.{i + 1}" for i in range(ips)]


def make(n, t):
    ip = addrs[n % ips]
    if every and n % every == 7:  # now and then a provider's rate limit
        return DeliveryEvent(id=f"t{n}", to="u@gmail.com", isp="gmail", domain="gmail.com",
                             status=Status.DEFERRED, final=False, attempt=1, code=421,
                             enhanced_code="4.7.28", response="4.7.28 rate limited",
                             category="rate_limit", source_ip=ip, node="n1", timestamp=t)
    return DeliveryEvent(id=f"m{n}", to="u@gmail.com", isp="gmail", domain="gmail.com",
                         status=Status.DELIVERED, final=True, attempt=1, code=250,
                         enhanced_code="2.0.0", response="ok", category="delivered",
                         source_ip=ip, node="n1", timestamp=t)


warm = 3000
evs = [make(n, 1000.0 + n * 0.005) for n in range(warm + events)]  # 200 events/s
row = Row(isp="gmail", rules=rules or None)
for e in evs[:warm]:
    apply_event(row, e, kb, e.timestamp)
published = 0
t0 = time.perf_counter()
for e in evs[warm:]:
    out = apply_event(row, e, kb, e.timestamp)
    if out is True:  # main: a change publishes every record of the row
        published += len(states_of(row, kb.effective("gmail", row.rules), e.timestamp))
    elif out:
        published += len(out)
apply_us = (time.perf_counter() - t0) / events * 1e6
# the decide agent per event: the event decoded, the row from its table value, the event
# applied, the row encoded as the table value (and changelog record); as each tree does it
raws = [e.model_dump_json().encode() for e in evs[warm:warm + events // 4]]
try:
    from streams.decide import Decide
    from streams.rows import encode
except ImportError:  # before streams/decide.py: a table write per event
    Decide = None
try:
    from streams.rows import Rows
except ImportError:  # before streams/rows.py: dicts in the table, faust's json codec
    Rows = None
    from faust.serializers import codecs
    codec = codecs.get_codec("json")
if Decide is not None:  # batches of `batch` records, one table write per ISP and batch
    from types import SimpleNamespace
    from kmta.config import ReputationConfig

    class Table:
        def __init__(self):
            self.data, self.bytes = {"gmail": encode(row)}, 0

        def get(self, key):
            return self.data.get(key)

        def send_changelog(self, partition, key, value):
            self.bytes += len(value)

    table = Table()
    clock = iter([e.timestamp for e in evs[warm:warm + events // 4]]).__next__
    d = Decide(table, kb, ReputationConfig(), "n1", lambda name: name, lambda: None, clock)
    recs = [SimpleNamespace(value=raw, message=SimpleNamespace(partition=0, offset=i))
            for i, raw in enumerate(raws)]
    t0 = time.perf_counter()
    for i in range(0, len(recs), batch):
        d.batch(recs[i:i + batch])
        d.write()
    record = b"x" * round(table.bytes / len(recs))  # changelog bytes per event
elif Rows is not None:
    rows = Rows()
    stored = rows.put("gmail", row)
    t0 = time.perf_counter()
    for i, raw in enumerate(raws):
        e = DeliveryEvent.model_validate_json(raw)
        row = rows.take("gmail", stored)
        row.first_time(0, i)
        apply_event(row, e, kb, e.timestamp)
        stored = rows.put("gmail", row)
    record = stored
else:
    stored = row.model_dump(mode="json")
    t0 = time.perf_counter()
    for i, raw in enumerate(raws):
        e = DeliveryEvent.model_validate_json(raw)
        row = Row.model_validate(stored)
        row.first_time(0, i)
        apply_event(row, e, kb, e.timestamp)
        stored = row.model_dump(mode="json")
        record = codec.dumps(stored)
agent_us = (time.perf_counter() - t0) / len(raws) * 1e6
print(json.dumps({"apply_us": apply_us, "agent_us": agent_us,
                  "row_bytes": len(record), "published": published}))
"""


def measure(tree: Path, ips: int, events: int, rules: dict, every: int, batch: int) -> dict:
    code = f"import sys; sys.path.insert(0, {str(tree)!r})\n" + WORKLOAD
    # without PYTHONPATH: streams/ is a namespace package, and another tree on the path would
    # lend the measured one its modules (streams.rows in a checkout that has none)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code, str(ips), str(events), json.dumps(rules),
                          str(every), str(batch)],
                         cwd=tree, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ips", type=int, default=10, help="source IPs of the ISP (10)")
    ap.add_argument("--events", type=int, default=20000, help="events measured (20000)")
    ap.add_argument("--other", help="another checkout to compare (default: main)")
    ap.add_argument("--no-shared", action="store_true", help="skip speed.per_ip = false")
    ap.add_argument("--batch", type=int, default=20,
                    help="results records per decide batch, where the tree has batches (20)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per variant; the best (3)")
    ap.add_argument("--throttle-every", type=int, nargs="+", default=[0, 150],
                    help="workloads: a rate-limit reply every N events, 0 = none (0 150)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-brain-") as tmp:
        other = Path(args.other) if args.other else Path(tmp)
        if not args.other:
            archive = subprocess.run(["git", "archive", "main"], cwd=ROOT, capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        variants = [(f"{'main' if not args.other else other}", other, {}),
                    ("this tree (per_ip)", ROOT, {})]
        if not args.no_shared:
            variants.append(("this tree, per_ip off", ROOT, {"speed": {"per_ip": False}}))
        for every in args.throttle_every:
            rows = []
            for _ in range(args.rounds):  # interleaved: a busy neighbour hits every variant
                rows.append([measure(tree, args.ips, args.events, rules, every, args.batch)
                             for _, tree, rules in variants])
            report(rows, variants, args, every)
    return 0


def report(rows: list, variants: list, args: argparse.Namespace, every: int) -> None:
    base = min(r[0]["apply_us"] for r in rows)
    what = f"a rate-limit reply every {every} events" if every else "clean replies only"
    print(f"\n{args.ips} source IPs, {args.events} events at 200/s, {what}; best of "
          f"{args.rounds}")
    print(f"{'variant':<26}{'apply_event us':>15}{'x base':>8}{'agent us':>10}"
          f"{'B/event':>11}{'records':>9}")
    for i, (name, _, _) in enumerate(variants):
        best = min((r[i] for r in rows), key=lambda x: x["apply_us"])
        agent = min(r[i]["agent_us"] for r in rows)
        print(f"{name:<26}{best['apply_us']:>15.1f}{best['apply_us'] / base:>8.2f}"
              f"{agent:>10.1f}{best['row_bytes']:>11}{best['published']:>9}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
