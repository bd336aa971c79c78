"""Operator commands: ``kmta pause|resume|unlock|clear|rules-set|rules-reset|status``.

Each handler gets the loaded ``Config`` as ``args.config_obj`` (built by ``kmta/cli/commands.py``).
Commands go to the control topic (key = ISP, acks=all), signed when ``control.secret`` is set;
then the command waits (``--wait`` seconds) for the brain's audit record and prints the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from kmta.config import Config
from kmta.errors import KmtaError
from kmta.pipeline.control import ControlError, make_command
from schemas.control import ControlAction, ControlCommand, ControlRecord

__all__ = [
    "add_parser",
    "run_action",
    "run_rules_reset",
    "run_rules_set",
    "run_status",
    "send_command",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_APPLIED = 2

_ACTIONS = {
    "pause": (ControlAction.PAUSE, "stop sending to an ISP (or one source IP) until resumed"),
    "resume": (ControlAction.RESUME, "undo pause"),
    "unlock": (ControlAction.UNLOCK, "lift a lock set by a reply rule (e.g. after a block notice)"),
    "clear": (ControlAction.CLEAR, "cancel every queued and waiting message for an ISP"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the operator commands; each stores its handler as ``func``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--actor", default=None, help="name recorded in the audit log (default: your login name)"
    )
    common.add_argument("--reason", default=None, help="free text recorded in the audit log")
    common.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long for the brain's audit record (0: do not wait)",
    )
    for name, (_action, help_) in _ACTIONS.items():
        p = subparsers.add_parser(name, parents=[common], help=help_, description=help_ + ".")
        p.add_argument("isp", help="ISP name as in the rules file (e.g. gmail)")
        if name == "clear":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        else:
            scope = p.add_mutually_exclusive_group()
            scope.add_argument("--source-ip", default=None, help="only this source IP of the ISP")
            scope.add_argument("--pool", default=None,
                               help="only the source IPs of this pool (a [[pools]] name)")
            if name == "resume":
                scope.add_argument("--hold", default=None, metavar="KEY",
                                   help="release a reputation hold instead: campaign:<name> "
                                   "or domain:<sending domain> (see kmta status / the panel)")
        p.set_defaults(func=run_action, control_action=name)

    p = subparsers.add_parser(
        "rules-set",
        parents=[common],
        help="send a live partial rule for an ISP",
        description="Send a partial ISP rule (TOML, or JSON if the file ends in .json or starts "
        "with '{') as a set_rules command; it is validated before sending.",
    )
    p.add_argument("isp")
    p.add_argument("file", type=Path, help="partial rule file, e.g. [speed] max = 200")
    p.set_defaults(func=run_rules_set)

    p = subparsers.add_parser(
        "rules-reset",
        parents=[common],
        help="drop every live rule edit of an ISP (back to the rules files)",
        description="Send reset_rules: the ISP's live edits (rules-set, the dashboard's rules "
        "editor) are dropped and the shipped rules merged with the override file apply again.",
    )
    p.add_argument("isp")
    p.set_defaults(func=run_rules_reset)

    p = subparsers.add_parser("ip", help="source IP commands (warm-up)",
                              description="Commands about one source IP.")
    ipsub = p.add_subparsers(dest="ip_command", required=True, metavar="COMMAND")
    help_ = "start, stop or show the warm-up of a new source IP (every ISP)"
    w = ipsub.add_parser(
        "warmup", parents=[common], help=help_,
        description="start: the IP is new from today (UTC) and follows each ISP's warm-up "
        "schedule (kmta/data/warmup.toml: daily and hourly caps growing while its replies stay "
        "clean; what it may not send goes over its pool's other IPs). stop: no caps any more "
        "(also for an IP the config's [[pools]] warmup lists). status: each new IP's day and "
        "today's use per ISP, from Kafka.")
    w.add_argument("op", choices=("start", "stop", "status"))
    w.add_argument("source_ip", nargs="?", help="the source IP (any for status: all)")
    w.add_argument("--timeout", type=float, default=60.0,
                   help="status: seconds allowed to read the topics")
    w.add_argument("--json", action="store_true", help="status: the rows as a JSON list")
    w.set_defaults(func=run_warmup)

    p = subparsers.add_parser(
        "status",
        help="show per-ISP counts, locks and speeds from Kafka",
        description="Reads results, state, audit and nodes from the beginning up to their current "
        "end and prints the ISP table (the same numbers as the dashboard).",
    )
    p.add_argument("--json", action="store_true", help="print JSON (totals, isps, nodes)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed to read the topics")
    p.set_defaults(func=run_status)


# ---------------------------------------------------------------------- sending
async def send_command(config: Config, cmd: ControlCommand, wait: float) -> ControlRecord | None:
    """Produce ``cmd``; if ``wait`` > 0, return its audit record (None if none came in time)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from kmta.pipeline.kafkaio import client_options

    consumer = None
    producer = AIOKafkaProducer(**client_options(config), client_id="kmta-cli", acks="all")
    try:
        if wait > 0:
            # position the audit reader at the end *before* sending, so no record is missed
            consumer = AIOKafkaConsumer(
                **client_options(config),
                group_id=None,
                enable_auto_commit=False,
                client_id="kmta-cli",
            )
            await consumer.start()
            tps = await _partitions(config, config.topic("audit"))
            if tps:
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
        await producer.start()
        await producer.send_and_wait(config.topic("control"), cmd.to_json(), key=cmd.isp.encode())
        if consumer is None or not consumer.assignment():
            return None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=250)
            for records in batches.values():
                for rec in records:
                    try:
                        audit = ControlRecord.model_validate_json(rec.value or b"")
                    except ValueError:
                        continue
                    if audit.command is not None and audit.command.id == cmd.id:
                        return audit
        return None
    except KafkaError as e:
        raise ControlError(f"Kafka at {config.kafka.bootstrap_servers}: {e!r}") from None
    finally:
        await producer.stop()
        if consumer is not None:
            await consumer.stop()


async def _partitions(config: Config, topic: str) -> list[Any]:
    from kmta.pipeline.kafkaio import topic_partitions

    try:
        return await topic_partitions(config, [topic])
    except TimeoutError:
        raise ControlError(
            f"topic {topic} not found: check kafka.topic_prefix in the config, or create the "
            "topics with `kmta topics`"
        ) from None


def _actor(args: argparse.Namespace) -> str:
    if args.actor:
        return args.actor
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _dispatch(config: Config, cmd: ControlCommand, wait: float) -> int:
    try:
        audit = asyncio.run(send_command(config, cmd, wait))
    except KmtaError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    what = f"{cmd.action.value} {cmd.isp}"
    if cmd.source_ip or cmd.pool:
        what += f" ({cmd.source_ip})" if cmd.source_ip else f" (pool {cmd.pool})"
    if wait <= 0:
        print(f"sent {what} (id {cmd.id})")
        return EXIT_OK
    if audit is None:
        print(f"sent {what} (id {cmd.id}); no audit record within {wait:g}s: is a worker running?")
        return EXIT_OK
    if audit.applied:
        print(f"applied {what} (id {cmd.id})")
        return EXIT_OK
    print(f"NOT applied {what} (id {cmd.id}): {audit.error}", file=sys.stderr)
    return EXIT_NOT_APPLIED


def run_action(args: argparse.Namespace) -> int:
    """``kmta pause|resume|unlock|clear ISP [--source-ip IP | --pool NAME]``."""
    action, _ = _ACTIONS[args.control_action]
    if action is ControlAction.CLEAR and not args.yes:
        if not sys.stdin.isatty():
            print("error: clear cancels messages; confirm with --yes", file=sys.stderr)
            return EXIT_FAILED
        answer = input(f"Cancel every queued and waiting message for {args.isp}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing sent")
            return EXIT_FAILED
    pool = getattr(args, "pool", None)
    if pool is not None and args.config_obj.pool(pool) is None:
        # a typo must not pause a scope that no sender uses
        known = ", ".join(p.name for p in args.config_obj.pools) or "none configured"
        print(f"error: unknown pool {pool!r} (pools: {known})", file=sys.stderr)
        return EXIT_FAILED
    return _send(args, action, source_ip=getattr(args, "source_ip", None), pool=pool,
                 hold=getattr(args, "hold", None))


def _send(args: argparse.Namespace, action: ControlAction, **kw: object) -> int:
    """Build (and sign) one command from the CLI arguments, send it, report the audit."""
    config: Config = args.config_obj
    try:
        cmd = make_command(action, args.isp, _actor(args), reason=args.reason, now=time.time(),
                           secret=config.control.secret, **kw)
    except (KmtaError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    return _dispatch(config, cmd, args.wait)


def run_rules_set(args: argparse.Namespace) -> int:
    """``kmta rules-set ISP FILE``: validate the partial rule, then send it as set_rules."""
    from dashboard.rules import parse_rules_text, validate_rules
    from kmta.pipeline.rules import load_kb

    config: Config = args.config_obj
    try:
        text = args.file.read_text()
    except OSError as e:
        print(f"error: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED
    if args.file.suffix == ".json" and not text.lstrip().startswith("{"):
        print(f"error: {args.file}: a JSON rule must be an object", file=sys.stderr)
        return EXIT_FAILED
    try:
        rules = parse_rules_text(text)
        validate_rules(args.isp, rules, load_kb(config))
    except (KmtaError, ValueError) as e:
        print(f"error: {args.file}: {e}", file=sys.stderr)
        return EXIT_FAILED
    return _send(args, ControlAction.SET_RULES, rules=rules)


def run_rules_reset(args: argparse.Namespace) -> int:
    """``kmta rules-reset ISP``."""
    return _send(args, ControlAction.RESET_RULES)


def run_warmup(args: argparse.Namespace) -> int:
    """``kmta ip warmup start|stop|status [IP]``."""
    import ipaddress

    from schemas.control import ALL_ISPS

    config: Config = args.config_obj
    ip = args.source_ip
    if args.op == "status":
        return _warmup_status(config, ip, args.timeout, args.json)
    try:
        ip = str(ipaddress.ip_address(ip or ""))
    except ValueError:
        print(f"error: {args.op} needs a source IP, not {ip!r}", file=sys.stderr)
        return EXIT_FAILED
    if not any(ip in p.source_ips for p in config.pools):
        # a typo must not mark an address that no sender uses
        known = ", ".join(i for p in config.pools for i in p.source_ips) or "none configured"
        print(f"error: {ip} is in no [[pools]] source_ips (source IPs: {known})",
              file=sys.stderr)
        return EXIT_FAILED
    args.isp = ALL_ISPS
    action = ControlAction.WARMUP_START if args.op == "start" else ControlAction.WARMUP_STOP
    return _send(args, action, source_ip=ip)


def _warmup_status(config: Config, ip: str | None, timeout: float, as_json: bool = False
                   ) -> int:
    from dashboard.feed import catch_up
    from dashboard.model import Board

    board = Board()
    try:
        asyncio.run(catch_up(config, board, timeout=timeout))
    except (KmtaError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    rows = [r for r in board.warmup_rows(time.time()) if ip is None or r["source_ip"] == ip]
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    if not rows:
        print("no source IP in warm-up has sent yet" + (f" ({ip})" if ip else ""))
        return EXIT_OK
    cols = [("source_ip", "SOURCE IP"), ("isp", "ISP"), ("day", "DAY"), ("today", "TODAY"),
            ("hour", "HOUR"), ("throttles_today", "THROTTLES"), ("clean_days", "CLEAN"),
            ("step_backs", "BACK")]
    table = [[h for _, h in cols]] + [[str(r[k]) for k, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


# ---------------------------------------------------------------------- status
_STATUS_COLUMNS = [
    ("isp", "ISP"),
    ("queued", "QUEUED"),
    ("in_flight", "FLIGHT"),
    ("deferred_waiting", "WAIT"),
    ("delivered", "DELIV"),
    ("bounced", "BOUNCE"),
    ("expired", "EXPIR"),
    ("suppressed", "SUPPR"),
    ("cancelled", "CANCEL"),
    ("rejected", "REJECT"),
    ("lock", "LOCK"),
    ("paused", "PAUSED"),
    ("speed", "SPEED"),
    ("connections", "CONNS"),
    ("success", "SUCCESS"),
    ("ip_speeds", "PER-IP"),
]


def format_status(totals: dict[str, Any], rows: list[dict[str, Any]], now: float) -> str:
    """The ISP table as aligned text."""
    table = [[h for _, h in _STATUS_COLUMNS]]
    for r in rows:
        cells = dict(r)
        cells["lock"] = (
            f"{int(r['lock_seconds_left'] or 0)}s {r['lock_reason'] or ''}".strip()
            if r["locked"]
            else "-"
        )
        cells["paused"] = "yes" if r["paused"] else "-"
        cells["speed"] = f"{r['speed']:g}" if r["speed"] is not None else "-"
        cells["success"] = (
            f"{100 * r['success_rate']:.1f}%" if r["success_rate"] is not None else "-"
        )
        # each source IP's own level (speed.per_ip), one cell: "127.0.0.2=6.7,127.0.0.3=3.1"
        cells["ip_speeds"] = ",".join(
            f"{ip}={sp:g}" for ip, sp in (r.get("ip_speed_levels") or {}).items()) or "-"
        table.append([str(cells[k]) for k, _ in _STATUS_COLUMNS])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    summary = ", ".join(
        f"{k} {totals[k]}"
        for k in ("accepted", "queued", "deferred", "delivered", "bounced", "expired", "cancelled")
    )
    return "\n".join([f"totals: {summary}; nodes {totals['nodes']}", *lines])


def run_status(args: argparse.Namespace) -> int:
    """``kmta status [--json]``."""
    from dashboard.feed import catch_up
    from dashboard.model import Board

    config: Config = args.config_obj
    board = Board()
    try:
        asyncio.run(catch_up(config, board, timeout=args.timeout))
    except (KmtaError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    now = time.time()
    snap = board.snapshot(now)
    if args.json:
        print(json.dumps(snap, indent=2, default=str))
    else:
        print(format_status(snap["totals"], snap["isps"], now))
    return EXIT_OK
