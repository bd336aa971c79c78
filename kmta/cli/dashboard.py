"""``kmta dashboard [--host] [--port]``: the Kafka feed plus the web app in one process, served
by waitress (dashboard/server.py); SIGTERM or Ctrl-C stops it."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
from typing import TYPE_CHECKING

from kmta.config import Config
from kmta.errors import KmtaError

if TYPE_CHECKING:
    from dashboard.model import Board
    from kmta.pipeline.health import Health

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dashboard",
        help="run the web dashboard (counts, locks, speeds; pause/unlock/clear)",
        description="Replays results, state, audit and nodes from Kafka and serves the dashboard. "
        "Sign in with [dashboard] password; in demo mode without one, a password is "
        "generated and printed. Production mode refuses to start without a password.",
    )
    p.add_argument("--host", default=None, help="listen address (default: dashboard.host)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: dashboard.port)")
    p.add_argument("--user", default="admin", help="login user name (default admin)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dashboard.app import resolve_password
    from kmta.pipeline.health import Health, serving

    config: Config = args.config_obj
    host = args.host or config.dashboard.host
    port = args.port or config.dashboard.port
    password = None
    if config.dashboard.mode == "demo" and config.dashboard.password is None:
        password = secrets.token_urlsafe(12)
    try:
        password = resolve_password(config, password)
    except KmtaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    health = Health("dashboard")
    with serving(config.metrics.listen, health):
        return _serve(args, config, host, port, password, health)


def _serve(args: argparse.Namespace, config: Config, host: str, port: int, password: str,
           health: Health) -> int:
    from dashboard.model import Board
    from kmta.pipeline.suppression import claim

    # the panel's suppression store, kept across restarts in data_dir
    lock_fd, path = claim(os.path.join(config.data_dir, "suppression-records"), "panel")
    board = Board(suppression_path=path)
    try:
        return _serve_board(args, config, host, port, password, health, board)
    finally:
        board.close()
        os.close(lock_fd)


def _serve_board(args: argparse.Namespace, config: Config, host: str, port: int,
                 password: str, health: Health, board: Board) -> int:
    from dashboard.app import create_app
    from dashboard.feed import Feed
    from dashboard.server import WebServer

    feed = Feed(config, board, health=health)
    app = create_app(config, board, feed, password=password, user=args.user)
    feed.start()
    if config.dashboard.password is None:
        print(f"demo dashboard password for {args.user}: {password}", file=sys.stderr)
    try:
        server = WebServer(app.server, host, port, threads=config.dashboard.threads)
    except OSError as e:
        feed.stop()
        print(f"error: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    log.info("dashboard on %s/ (Kafka %s)", server.url, config.kafka.bootstrap_servers)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" chatter
    try:
        server.serve()
    finally:
        feed.stop()
    return 0
