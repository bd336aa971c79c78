"""``kmta inbound``, ``kmta unsubscribe`` and ``kmta suppression``: the commands of the
feedback loop (issue 11)."""
from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import sys
import time
from collections import Counter

from kmta.cli.sender import _run_until_signal  # the same SIGINT/SIGTERM handling
from kmta.config import Config
from kmta.errors import KmtaError

__all__ = ["add_parser"]

CSV_FIELDS = ["address", "scope", "value", "reason", "category", "detail", "id", "by", "at"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inbound", help="receive bounces, FBL reports and mailto unsubscribes",
                       description="SMTP receiver for every [[domains]] return_path (and "
                       "[inbound] domains) on [inbound] listen: each message goes to the "
                       "inbound topic before the 250; the processor turns DSNs, ARF reports "
                       "and unsubscribe mail into results events and suppression records. Run "
                       "several behind one MX.")
    p.add_argument("--node", help="process name (default host-pid)")
    p.add_argument("--listen", help="host:port (default: [inbound] listen)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-process", action="store_true", help="receive only")
    g.add_argument("--process-only", action="store_true", help="process only, no SMTP")
    p.set_defaults(func=run_inbound)
    p = sub.add_parser("unsubscribe", help="serve RFC 8058 one-click unsubscribe URLs",
                       description="HTTP server for the signed URLs routing puts in "
                       "List-Unsubscribe ([unsubscribe] base_url): POST "
                       "List-Unsubscribe=One-Click unsubscribes, GET shows a confirmation page.")
    p.add_argument("--node", help="process name (default host-pid)")
    p.add_argument("--listen", help="host:port (default: [unsubscribe] listen)")
    p.set_defaults(func=run_unsubscribe)
    p = sub.add_parser("suppression", help="list, add, remove, export and import suppressions")
    ss = p.add_subparsers(dest="op", required=True, metavar="OP")
    for name, helptext in (("add", "suppress an address"), ("remove", "lift a suppression")):
        q = ss.add_parser(name, help=helptext)
        q.add_argument("address")
        q.add_argument("--scope", choices=["global", "domain", "campaign"], default="global")
        q.add_argument("--value", help="the sending domain or campaign of a scoped record")
        q.add_argument("--note", help="why (kept in the audit record)")
        q.add_argument("--actor", default=None, help="who (default: the login name)")
        q.set_defaults(func=run_suppression)
    q = ss.add_parser("list", help="print records (latest per key)")
    q.add_argument("--search", help="substring of the address")
    q.add_argument("--reason", help="only this reason")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--counts", action="store_true", help="counts per reason and scope only")
    q.set_defaults(func=run_suppression)
    q = ss.add_parser("export", help="write every record as CSV")
    q.add_argument("file", help="CSV file, or - for stdout")
    q.set_defaults(func=run_suppression)
    q = ss.add_parser("import", help="add records from CSV (header: address[,scope,value,"
                      "reason,category,detail])")
    q.add_argument("file", help="CSV file, or - for stdin")
    q.add_argument("--actor", default=None)
    q.add_argument("--note", default=None)
    q.set_defaults(func=run_suppression)


def run_inbound(args: argparse.Namespace) -> int:
    from inbound.service import node_name
    from inbound.service import run_inbound as run
    from kmta.pipeline.health import Health, serving
    from kmta.pipeline.metrics import known_isps
    from kmta.pipeline.rules import load_kb
    config: Config = args.config_obj
    if args.listen:
        config = config.model_copy(update={"inbound": config.inbound.model_copy(
            update={"listen": args.listen})})
    if not config.return_path_domains():
        raise KmtaError("no return_path in [[domains]] and no [inbound] domains: nothing to "
                        "receive mail for")
    node = node_name(config, args.node, "inbound")
    health = Health("inbound")
    known_isps(load_kb(config).isp_names())
    with serving(config.metrics.listen, health):
        _run_until_signal(lambda stop: run(config, node, stop, receive=not args.process_only,
                                       process=not args.no_process, health=health))
    return 0


def run_unsubscribe(args: argparse.Namespace) -> int:
    from inbound.service import node_name
    from inbound.service import run_unsubscribe as run
    from kmta.pipeline.health import Health, serving
    from kmta.pipeline.metrics import known_isps
    from kmta.pipeline.rules import load_kb
    config: Config = args.config_obj
    if config.unsubscribe.secret is None:
        raise KmtaError("[unsubscribe] secret is not set")
    if args.listen:
        config = config.model_copy(update={"unsubscribe": config.unsubscribe.model_copy(
            update={"listen": args.listen})})
    node = node_name(config, args.node, "unsubscribe")
    health = Health("unsubscribe")
    known_isps(load_kb(config).isp_names())
    with serving(config.metrics.listen, health):
        _run_until_signal(lambda stop: run(config, node, stop, health=health))
    return 0



def run_suppression(args: argparse.Namespace) -> int:
    return asyncio.run(_suppression(args))


async def _suppression(args: argparse.Namespace) -> int:
    from kmta.pipeline.kafkaio import ensure_topics, make_producer
    from kmta.pipeline.outputs import write
    from kmta.pipeline.suppression import change_outs, read_all
    from schemas.suppression import Reason, Suppression, key_of

    config: Config = args.config_obj
    await ensure_topics(config)
    actor = getattr(args, "actor", None) or getpass.getuser()
    now = time.time()
    if args.op in ("list", "export"):
        records = await read_all(config)
        rows = sorted(records.values(), key=lambda r: (r.address, r.scope, r.value or ""))
        if args.op == "export":
            out = sys.stdout if args.file == "-" else open(args.file, "w", newline="")  # noqa: SIM115
            try:
                w = csv.DictWriter(out, CSV_FIELDS)
                w.writeheader()
                for r in rows:
                    d = r.model_dump(mode="json")
                    w.writerow({k: d.get(k) if d.get(k) is not None else "" for k in CSV_FIELDS})
            finally:
                if out is not sys.stdout:
                    out.close()
            print(f"{len(rows)} records", file=sys.stderr)
            return 0
        if args.counts:
            for (reason, scope), n in sorted(Counter((r.reason.value, r.scope)
                                                     for r in rows).items()):
                print(f"{reason:14} {scope:9} {n}")
            print(f"{'total':24} {len(rows)}")
            return 0
        shown = [r for r in rows if (not args.search or args.search.lower() in r.address)
                 and (not args.reason or r.reason.value == args.reason)]
        for r in shown[:args.limit]:
            scope = r.scope if r.scope == "global" else f"{r.scope}:{r.value}"
            print(f"{r.address:40} {scope:24} {r.reason.value:13} "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.at))} {r.detail or ''}")
        print(f"{len(shown)} of {len(rows)} records", file=sys.stderr)
        return 0
    outs = []
    if args.op in ("add", "remove"):
        if (args.scope == "global") != (args.value is None):
            raise KmtaError("--value goes with --scope domain|campaign (and only with them)")
        key = key_of(args.address, args.scope, args.value)
        if args.op == "add":
            rec = Suppression(address=args.address, scope=args.scope, value=args.value,
                              reason=Reason.MANUAL, detail=args.note, by=actor, at=now)
            outs = change_outs(config, "add", key, rec, actor, now, args.note)
        else:
            old = (await read_all(config)).get(key)
            if old is None:
                print(f"{key}: not suppressed", file=sys.stderr)
                return 1
            outs = change_outs(config, "remove", key, old, actor, now, args.note)
    else:  # import
        src = sys.stdin if args.file == "-" else open(args.file, newline="")  # noqa: SIM115
        try:
            for i, row in enumerate(csv.DictReader(src), start=2):
                try:
                    rec = Suppression(
                        address=row["address"], scope=row.get("scope") or "global",
                        value=row.get("value") or None,
                        reason=Reason(row.get("reason") or "manual"),
                        category=row.get("category") or None, detail=row.get("detail") or None,
                        id=row.get("id") or None, by=row.get("by") or actor,
                        at=float(row.get("at") or now))
                except (ValueError, KeyError) as e:
                    raise KmtaError(f"{args.file}:{i}: {e}") from None
                outs += change_outs(config, "add", rec.key(), rec, actor, now, args.note)
        finally:
            if src is not sys.stdin:
                src.close()
    producer = make_producer(config)
    await producer.start()
    try:
        await write(producer, outs)
    finally:
        await producer.stop()
    print(f"{args.op}: {len(outs) // 2} record(s) written", file=sys.stderr)
    return 0
