"""``kmta dashboard [--host] [--port]``: the Kafka feed plus the web app in one process."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys

from kmta.config import Config
from kmta.errors import KmtaError

__all__ = ["add_parser", "run"]


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
    from dashboard.app import create_app, resolve_password
    from dashboard.feed import Feed
    from dashboard.model import Board

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
    board = Board()
    feed = Feed(config, board)
    app = create_app(config, board, feed, password=password, user=args.user)
    feed.start()
    if config.dashboard.password is None:
        print(f"demo dashboard password for {args.user}: {password}", file=sys.stderr)
    print(
        f"dashboard on http://{host}:{port}/ (Kafka {config.kafka.bootstrap_servers})",
        file=sys.stderr,
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        app.server.run(host=host, port=port, threaded=True, debug=False, use_reloader=False)
    finally:
        feed.stop()
    return 0
