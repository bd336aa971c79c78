"""``kmta results``: the result events on the results topic, read committed, to the end it
found on starting (or ``--follow``), as a table or JSON lines.

Unlike ``kcat -C -e``, whose end is a moment when every partition answers an empty fetch, the
end here is the set of last stable offsets taken when the command starts: the read is bounded
by what was committed by then, however busy the topic is.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from aiokafka.errors import KafkaError

from kmta.client import read_results
from kmta.config import Config
from kmta.errors import KmtaError

__all__ = ["EXIT_FAILED", "EXIT_OK", "add_parser", "format_event", "matches", "run_results"]

EXIT_OK = 0
EXIT_FAILED = 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "results", help="print result events (delivered, deferred, bounced, ...) from Kafka",
        description="Reads the results topic (committed events only) from the beginning to "
        "the end found on starting; --follow keeps reading. Filters combine with AND.")
    p.add_argument("--id", action="append", default=[], help="only this message id (repeatable)")
    p.add_argument("--isp", help="only this ISP")
    p.add_argument("--status", help="only this status (delivered, deferred, bounced, ...)")
    p.add_argument("--final", action="store_true", help="only final events")
    p.add_argument("--follow", "-f", action="store_true", help="keep reading new events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="give up (exit 1) after this many seconds (not with --follow)")
    p.set_defaults(func=run_results)


def matches(ev: dict, ids: set[str], isp: str | None, status: str | None, final: bool) -> bool:
    return ((not ids or ev.get("id") in ids) and (isp is None or ev.get("isp") == isp)
            and (status is None or ev.get("status") == status)
            and (not final or bool(ev.get("final"))))


def format_event(ev: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ev.get("timestamp") or 0)))
    code = " ".join(str(ev[k]) for k in ("code", "enhanced_code") if ev.get(k))
    text = str(ev.get("response") or "").replace("\n", " ")[:100]
    return "  ".join(str(x) for x in (when, ev.get("id", "?"), ev.get("status", "?"),
                                       ev.get("isp") or "-", ev.get("to") or "-", code or "-",
                                       text)).rstrip()


async def _print(config: Config, args: argparse.Namespace) -> int:
    ids = set(args.id)
    n = 0
    async for ev in read_results(config, follow=args.follow):
        if not matches(ev, ids, args.isp, args.status, args.final):
            continue
        print(json.dumps(ev, separators=(",", ":")) if args.json else format_event(ev),
              flush=args.follow)
        n += 1
    return n


def run_results(args: argparse.Namespace) -> int:
    config: Config = args.config_obj
    try:
        if args.follow:
            asyncio.run(_print(config, args))
        else:
            asyncio.run(asyncio.wait_for(_print(config, args), args.timeout))
    except KeyboardInterrupt:
        return EXIT_OK
    except (KmtaError, KafkaError, TimeoutError, OSError) as e:
        print(f"error: {e or type(e).__name__}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
