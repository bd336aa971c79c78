"""``kmta isp-sim``: run the simulated mailbox providers and their DNS until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from kmta.errors import ConfigError
from sim.net import split_hostport
from sim.scenario import DEFAULT_SCENARIO_TOML, run_scenario

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``isp-sim``; the handler is stored as ``func``."""
    parser = subparsers.add_parser(
        "isp-sim",
        help="run simulated mailbox providers (SMTP) and their DNS on loopback",
        description=(
            "Start an authoritative DNS server and one SMTP simulator per provider of the "
            "scenario (default: the embedded demo with gmail, yahoo, outlook, mailru, yandex, "
            "orange and small domains on 127.0.1.x). Point kmta's resolver at --dns. Everything "
            "listens on 127.0.0.0/8 only. Runs until SIGINT/SIGTERM, then prints the counters."
        ),
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        default=None,
        help="scenario TOML file (default: the embedded demo scenario)",
    )
    parser.add_argument(
        "--dns",
        default="127.0.0.1:5353",
        help="DNS listen HOST:PORT, loopback only (default 127.0.0.1:5353)",
    )
    parser.add_argument(
        "--smtp-port",
        type=int,
        default=2525,
        help="SMTP port every provider IP listens on (default 2525)",
    )
    parser.add_argument(
        "--log", type=Path, default=None, help="append one JSON line per SMTP event to this file"
    )
    parser.add_argument(
        "--print-scenario",
        action="store_true",
        help="print the embedded default scenario TOML and exit",
    )
    parser.set_defaults(func=run)
    return parser


async def _serve(args: argparse.Namespace) -> int:
    dns_host, dns_port = split_hostport(args.dns, 5353)
    running = await run_scenario(args.scenario, dns_port, args.smtp_port, args.log, dns_host)
    for line in running.describe():
        print(line, flush=True)
    if args.log:
        print(f"log      {args.log}", flush=True)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    stats = running.stats()
    await running.stop()
    print(json.dumps({name: s["totals"] for name, s in stats.items()}), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``kmta isp-sim`` command; return the process exit code."""
    if args.print_scenario:
        print(DEFAULT_SCENARIO_TOML.strip())
        return 0
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    try:
        return asyncio.run(_serve(args))
    except ConfigError as e:
        print(f"kmta isp-sim: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"kmta isp-sim: cannot listen: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m sim``) with the same options."""
    parser = argparse.ArgumentParser(prog="kmta")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["isp-sim", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
