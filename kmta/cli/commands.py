"""``kmta``: one command per process kind.

Every subcommand takes ``--config PATH`` (TOML; ``KMTA_CONFIG`` is read here, and only here).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

from kmta.cli import classify as classify_cli
from kmta.cli import control as control_cli
from kmta.cli import dashboard as dashboard_cli
from kmta.cli import dkim as dkim_cli
from kmta.cli import inbound as inbound_cli
from kmta.cli import results as results_cli
from kmta.cli import rules as rules_cli
from kmta.config import Config, load_config
from kmta.errors import KmtaError
from kmta.pipeline.logs import config_secrets, configure
from ops.kafka import cli as kafka_cli
from sim import cli as sim_cli

if TYPE_CHECKING:
    import cProfile

__all__ = ["build_parser", "main"]

CONFIG_HELP = "TOML config file (default: $KMTA_CONFIG or built-in)"
VERBOSE_HELP = "debug logging"
LOG_FORMAT_HELP = "log lines as text or one JSON object per line (default: [log] format)"
LONG_RUNNING = ("worker", "sender")
"""Commands whose processes run for days and hold large structures (glibc's threshold fixed)."""


def _add_pipeline_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a brain worker (routing, locks, speeds, retries)",
                       description="Runs the faust app: routes outbox messages to ISP queue "
                       "partitions, keeps per-ISP lock/speed state, obeys control commands and "
                       "moves due retries back to the queue. Run several for scale and HA.")
    p.add_argument("--name", help="worker name (default host-pid)")
    p.set_defaults(func=run_worker)
    p = sub.add_parser("sender", help="run a sender node (SMTP delivery)",
                       description="Joins the senders' consumer group on the queue topic and "
                       "delivers over SMTP, enforcing each ISP's rules and the brain's state.")
    p.add_argument("--node", help="node name (default host-pid)")
    p.set_defaults(func=run_sender)
    p = sub.add_parser("send", help="produce messages (JSON lines) to the outbox")
    p.add_argument("file", help="file of JSON messages, one per line, or - for stdin")
    p.add_argument("--wait", action="store_true", help="wait for every final result")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true", help="print one JSON object at the end: "
                   "{sent, topic, ids, and with --wait: complete, finals (count per status)}")
    p.set_defaults(func=run_send)
    p = sub.add_parser("topics", help="create kmta's topics (idempotent)")
    p.set_defaults(func=run_topics)
    p = sub.add_parser("demo", help="the full local demo on embedded defaults")
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--exit", action="store_true", help="stop everything after the summary")
    p.add_argument("--keep-kafka", action="store_true", help="leave the broker running")
    p.set_defaults(func=run_demo, needs_config=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kmta", description=__doc__)
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--log-format", choices=["text", "json"], default=None,
                        help=LOG_FORMAT_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    kafka_cli.add_parser(sub)
    _add_pipeline_parsers(sub)
    for mod in (sim_cli, rules_cli, classify_cli, control_cli, results_cli, dkim_cli,
                dashboard_cli, inbound_cli):
        mod.add_parser(sub)
    _config_everywhere(parser)
    return parser


def _config_everywhere(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand, at any depth, ``--config``, ``-v`` and ``--log-format``, so that
    they may come before or after it (``kmta --config x.toml worker`` = ``kmta worker --config
    x.toml``). A subcommand's copy has no default, so it never hides one given before it."""
    seen: set[int] = set()
    todo = [parser]
    while todo:
        p = todo.pop()
        for action in p._actions:  # argparse has no public walk over its subparsers
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    if id(child) in seen:
                        continue  # an alias of one already done
                    seen.add(id(child))
                    opts = child._option_string_actions
                    if "--config" not in opts:
                        child.add_argument("--config", default=argparse.SUPPRESS,
                                           help=CONFIG_HELP)
                    if "-v" not in opts and "--verbose" not in opts:
                        child.add_argument("-v", "--verbose", action="store_true",
                                           default=argparse.SUPPRESS, help=VERBOSE_HELP)
                    if "--log-format" not in opts:
                        child.add_argument("--log-format", choices=["text", "json"],
                                           default=argparse.SUPPRESS, help=LOG_FORMAT_HELP)
                    todo.append(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    path = args.config or os.environ.get("KMTA_CONFIG")
    try:
        args.config_obj = load_config(path)
        args.config_path = path
        _setup_logging(args)
        return int(_call(args) or 0)
    except KmtaError as e:
        print(f"kmta: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``kmta rules show gmail | head``): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141


def _setup_logging(args: argparse.Namespace) -> None:
    config = args.config_obj
    configure(args.command, process_node(args, config), args.log_format or config.log.format,
              logging.DEBUG if args.verbose else logging.INFO, config_secrets(config))
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def process_node(args: argparse.Namespace, config: Config) -> str:
    """The node name a process runs as, chosen as the process kinds themselves choose it:
    ``--node``/``--name``, then the config, then host-pid (``inbound-host-pid`` etc.)."""
    host_pid = f"{socket.gethostname()}-{os.getpid()}"
    if args.command == "worker":
        return args.name or config.worker.name or host_pid
    if args.command == "sender":
        return args.node or config.sender.node or host_pid
    if args.command in ("inbound", "unsubscribe"):
        return args.node or f"{args.command}-{host_pid}"
    return host_pid


def _call(args: argparse.Namespace) -> int | None:
    """Run the command; with ``KMTA_PROFILE=DIR`` under cProfile, dumping
    ``DIR/<command>-<pid>.pstats`` when it ends (also on SIGTERM's orderly stop); with
    ``KMTA_TRACEMALLOC=DIR`` tracing allocations (``ops.memtrace``). The long-running
    processes (worker, sender) fix glibc's mmap threshold first (``kmta.pipeline.malloc``;
    ``KMTA_MMAP_THRESHOLD=BYTES`` another value, 0 glibc's dynamic one: for benchmarks)."""
    if args.command in LONG_RUNNING:
        from kmta.pipeline.malloc import MMAP_THRESHOLD, fix_mmap_threshold
        raw = os.environ.get("KMTA_MMAP_THRESHOLD", "")
        try:
            nbytes = int(raw) if raw else MMAP_THRESHOLD
        except ValueError:
            raise SystemExit(f"kmta: KMTA_MMAP_THRESHOLD={raw!r}: a number of bytes "
                             "(0: glibc's dynamic threshold)") from None
        fix_mmap_threshold(nbytes)
    trace = os.environ.get("KMTA_TRACEMALLOC")
    if trace:  # memory summaries for benchmarks (ops/memtrace.py)
        from ops import memtrace
        memtrace.start(trace, args.command)
    out = os.environ.get("KMTA_PROFILE")
    if not out:
        return args.func(args)
    prof = profiler(os.environ.get("KMTA_PROFILE_CLOCK", ""))
    prof.enable()
    try:
        return args.func(args)
    finally:
        prof.disable()
        os.makedirs(out, exist_ok=True)
        prof.dump_stats(os.path.join(out, f"{args.command}-{os.getpid()}.pstats"))


def profiler(clock: str) -> cProfile.Profile:
    """cProfile for ``KMTA_PROFILE``. ``KMTA_PROFILE_CLOCK=cpu`` counts the main thread's CPU
    time (``time.thread_time``) instead of wall time: on a loaded machine a wall-clock profile
    charges the time a process waits for a CPU to whatever it was running, most of all to the
    socket sends that wake another process (the bench's 2 KB runs wait for a CPU two thirds of
    the time). The CPU clock costs more per call and leaves out time spent blocked."""
    import cProfile
    import time

    if clock in ("", "wall"):
        return cProfile.Profile()
    if clock == "cpu":
        return cProfile.Profile(time.thread_time)
    raise SystemExit(f"kmta: KMTA_PROFILE_CLOCK={clock!r}: wall or cpu")


def run_topics(args: argparse.Namespace) -> int:
    from kmta.pipeline.kafkaio import ensure_topics
    asyncio.run(ensure_topics(args.config_obj))
    print("topics ready")
    return 0


# Each command imports its process kind when it runs, so that ``kmta sender`` never loads faust
# and ``kmta pause`` loads neither faust nor dash.
def run_worker(args: argparse.Namespace) -> int:
    from kmta.cli import worker
    return worker.run(args)


def run_sender(args: argparse.Namespace) -> int:
    from kmta.cli import sender
    return sender.run(args)


def run_send(args: argparse.Namespace) -> int:
    from kmta.client import send_file
    return send_file(args.config_obj, args.file, wait=args.wait, timeout=args.timeout,
                     as_json=args.json)


def run_demo(args: argparse.Namespace) -> int:
    from ops.demo import run_demo as demo
    return demo(args)
