"""``kmta inbound``, ``kmta unsubscribe`` and ``kmta suppression``: the commands of the
feedback loop (issue 11)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import getpass
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from kmta.cli.sender import _run_until_signal  # the same SIGINT/SIGTERM handling
from kmta.config import Config
from kmta.errors import KmtaError

if TYPE_CHECKING:
    from kmta.pipeline.outputs import Out
    from kmta.pipeline.suppressionstore import SuppressionStore
    from schemas.suppression import Suppression

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
    q.add_argument("--json", action="store_true", help="print JSON: {total, shown, records} "
                   "(records as on the suppression topic), or with --counts {total, counts: "
                   "[{reason, scope, count}]}")
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

    config: Config = args.config_obj
    await ensure_topics(config)
    actor = getattr(args, "actor", None) or getpass.getuser()
    now = time.time()
    if args.op in ("list", "export"):
        with await _synced_store(config) as store:
            if args.op == "export":
                _export(store, args.file)
            else:
                _list(store, args)
        return 0
    producer = make_producer(config)
    await producer.start()
    try:
        if args.op == "import":
            n = await _import(args, config, producer, actor, now)
        else:
            outs = await _change(args, config, actor, now)
            if outs is None:
                return 1
            await write(producer, outs)
            n = len(outs) // 2
    finally:
        await producer.stop()
    print(f"{args.op}: {n} record(s) written", file=sys.stderr)
    return 0


class _Store:
    """The command's suppression store (``data_dir/suppression-records/cli.sqlite``, kept:
    the next command reads only what changed), closed with its lock."""

    def __init__(self, config: Config) -> None:
        from kmta.pipeline.suppression import claim
        from kmta.pipeline.suppressionstore import SuppressionStore
        self._fd, path = claim(os.path.join(config.data_dir, "suppression-records"), "cli")
        self.store = SuppressionStore(path, cache_kib=8192)

    def __enter__(self) -> SuppressionStore:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()
        os.close(self._fd)


async def _synced_store(config: Config) -> _Store:
    from kmta.pipeline.suppressionstore import sync
    s = _Store(config)
    try:
        n = await sync(config, s.store)
    except BaseException:
        s.__exit__()
        raise
    if s.store.rebuilt:
        print(f"suppression store rebuilt from the topic ({n} records read)", file=sys.stderr)
    return s


def _export(store: SuppressionStore, file: str) -> None:
    """Every record as CSV, streamed in address order."""
    out = sys.stdout if file == "-" else open(file, "w", newline="")  # noqa: SIM115
    n = 0
    try:
        w = csv.DictWriter(out, CSV_FIELDS)
        w.writeheader()
        for r in store.records():
            d = r.model_dump(mode="json")
            w.writerow({k: d.get(k) if d.get(k) is not None else "" for k in CSV_FIELDS})
            n += 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{n} records", file=sys.stderr)


def _list(store: SuppressionStore, args: argparse.Namespace) -> None:
    """Records in address order (streamed, at most ``--limit`` printed), or counts."""
    total = len(store)
    if args.counts:
        counts = sorted(store.scope_counts().items())
        if args.json:
            print(json.dumps({"total": total, "counts": [
                {"reason": reason, "scope": scope, "count": n}
                for (reason, scope), n in counts]}, indent=2))
            return
        for (reason, scope), n in counts:
            print(f"{reason:14} {scope:9} {n}")
        print(f"{'total':24} {total}")
        return
    found = store.records(args.search, args.reason)
    if args.json:
        # the document streamed too: one record a line between the head and the tail
        out = sys.stdout
        out.write(f'{{\n  "total": {total},\n  "records": [')
        shown = 0
        for r in found:
            if shown >= args.limit:
                break
            out.write(("," if shown else "") + "\n    " + r.model_dump_json())
            shown += 1
        out.write(f'\n  ],\n  "shown": {shown}\n}}\n')
        return
    shown = matched = 0
    for r in found:
        matched += 1
        if shown < args.limit:
            scope = r.scope if r.scope == "global" else f"{r.scope}:{r.value}"
            print(f"{r.address:40} {scope:24} {r.reason.value:13} "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.at))} {r.detail or ''}")
            shown += 1
    print(f"{matched} of {total} records", file=sys.stderr)


async def _change(args: argparse.Namespace, config: Config, actor: str, now: float
                  ) -> list[Out] | None:
    """The records of an add or a removal (None: nothing to remove)."""
    from kmta.pipeline.suppression import change_outs
    from schemas.suppression import Reason, Suppression, key_of
    if (args.scope == "global") != (args.value is None):
        raise KmtaError("--value goes with --scope domain|campaign (and only with them)")
    key = key_of(args.address, args.scope, args.value)
    if args.op == "add":
        rec = Suppression(address=args.address, scope=args.scope, value=args.value,
                          reason=Reason.MANUAL, detail=args.note, by=actor, at=now)
        return change_outs(config, "add", key, rec, actor, now, args.note)
    with await _synced_store(config) as store:
        old = store.get(key)
    if old is None:
        print(f"{key}: not suppressed", file=sys.stderr)
        return None
    return change_outs(config, "remove", key, old, actor, now, args.note)


def _csv_records(src: IO[str], name: str, actor: str, now: float) -> Iterator[Suppression]:
    from schemas.suppression import Reason, Suppression
    for i, row in enumerate(csv.DictReader(src), start=2):
        try:
            yield Suppression(
                address=row["address"], scope=row.get("scope") or "global",
                value=row.get("value") or None, reason=Reason(row.get("reason") or "manual"),
                category=row.get("category") or None, detail=row.get("detail") or None,
                id=row.get("id") or None, by=row.get("by") or actor,
                at=float(row.get("at") or now))
        except (ValueError, KeyError) as e:
            raise KmtaError(f"{name}:{i}: {e}") from None


async def _import(args: argparse.Namespace, config: Config, producer: Any, actor: str,
                  now: float, chunk: int = 5000) -> int:
    """Records from CSV, all or none: a first pass checks every row, a second writes them
    ``chunk`` at a time (memory bounded at any size; stdin is spooled to a temporary file)."""
    from kmta.pipeline.outputs import write
    from kmta.pipeline.suppression import change_outs
    with contextlib.ExitStack() as stack:
        if args.file == "-":
            src: IO[str] = stack.enter_context(tempfile.TemporaryFile("w+", newline=""))
            shutil.copyfileobj(sys.stdin, src)
        else:
            src = stack.enter_context(open(args.file, newline=""))
        for _ in _csv_records(src, args.file, actor, now):
            pass
        src.seek(0)
        n, outs = 0, []
        for rec in _csv_records(src, args.file, actor, now):
            outs += change_outs(config, "add", rec.key(), rec, actor, now, args.note)
            if len(outs) >= 2 * chunk:
                await write(producer, outs)
                n, outs = n + len(outs) // 2, []
        await write(producer, outs)
        return n + len(outs) // 2
