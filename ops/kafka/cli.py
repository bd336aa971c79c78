"""``kmta kafka start|stop|status``: run the repo-managed local Kafka cluster.

The environment is read here, at the entry point, and passed down explicitly:
``KMTA_HOME`` (default data and jar-cache location) and ``KAFKA_HOME`` (an installed Kafka whose
``libs/`` is used when Maven is not available).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ops.kafka import manager

__all__ = ["add_parser", "default_cache_dir", "default_data_dir", "run"]

EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3  # as in LSB `status`: program is not running


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """Broker jar cache: ``$KMTA_HOME/kafka-libs``, else ``~/.cache/kmta/kafka-libs``."""
    if env.get("KMTA_HOME"):
        return Path(env["KMTA_HOME"]) / "kafka-libs"
    return Path.home() / ".cache" / "kmta" / "kafka-libs"


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Broker data: ``$KMTA_HOME/kafka-data``, else ``~/.local/share/kmta/kafka-data``."""
    if env.get("KMTA_HOME"):
        return Path(env["KMTA_HOME"]) / "kafka-data"
    return Path.home() / ".local" / "share" / "kmta" / "kafka-data"


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``kafka`` and its sub-commands; the handler is stored as ``func``."""
    parser = subparsers.add_parser(
        "kafka",
        help="run a local Apache Kafka (KRaft) cluster assembled from Maven Central",
        description=(
            "Start, stop or inspect a local Kafka cluster (no Docker). Needs Java 17+ and Maven "
            "(or KAFKA_HOME pointing at an installed Kafka). Node N listens for clients on "
            "PORT+N-1 and for its controller quorum on PORT+100+N-1."
        ),
    )
    actions = parser.add_subparsers(
        dest="kafka_action", required=True, metavar="{start,stop,status}"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="cluster data dir (default: $KMTA_HOME/kafka-data or ~/.local/share/kmta/kafka-data)",
    )
    start = actions.add_parser(
        "start", parents=[common], help="start the cluster (idempotent); prints bootstrap servers"
    )
    start.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="number of combined broker+controller nodes (default 1)",
    )
    start.add_argument(
        "--port", type=int, default=9092, help="client port of node 1 (default 9092)"
    )
    start.add_argument(
        "--host", default="127.0.0.1", help="listen and advertised host (default 127.0.0.1)"
    )
    start.add_argument("--heap", default="512m", help="JVM -Xmx per node (default 512m)")
    start.add_argument(
        "--sasl-ssl",
        action="store_true",
        help="also serve a SASL_SSL listener on PORT+200+N-1 (SCRAM-SHA-512/256 and PLAIN, "
        "a generated CA and user; a ready [kafka] section is written to "
        "DATA/security/kmta-kafka.toml). Needs a fresh data dir the first time",
    )
    start.add_argument(
        "--client-auth",
        choices=["none", "requested", "required"],
        default="none",
        help="with --sasl-ssl: ask clients for a certificate signed by the CA (default none)",
    )
    start.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)"
    )
    start.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="jar cache (default: $KMTA_HOME/kafka-libs or ~/.cache/kmta/kafka-libs)",
    )
    actions.add_parser(
        "stop", parents=[common], help="stop all nodes (SIGTERM, then SIGKILL after a deadline)"
    )
    status = actions.add_parser(
        "status", parents=[common], help="show per-node pid and port; exit 3 if not all running"
    )
    status.add_argument("--json", action="store_true",
                        help="print JSON: {data_dir, nodes: [{node_id, port, pid, state}]}")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Execute a parsed ``kmta kafka`` command; return the process exit code."""
    env = os.environ if env is None else env
    data_dir = args.data_dir or default_data_dir(env)
    try:
        if args.kafka_action == "start":
            kafka_home = Path(env["KAFKA_HOME"]) if env.get("KAFKA_HOME") else None
            libs = manager.ensure_jars(
                args.cache_dir or default_cache_dir(env), kafka_home=kafka_home
            )
            info = manager.start(
                data_dir,
                args.brokers,
                args.port,
                args.host,
                args.heap,
                libs=libs,
                timeout=args.timeout,
                sasl_ssl=args.sasl_ssl,
                client_auth=args.client_auth,
            )
            state = "already running" if info.already_running else "started"
            print(
                f"kafka {state}: {len(info.nodes)} node(s), cluster id {info.cluster_id}, "
                f"data in {info.data_dir}",
                file=sys.stderr,
            )
            if info.security is not None:
                print(
                    f"SASL_SSL on {info.sasl_bootstrap_servers}, user {info.security.user}: "
                    f"[kafka] settings in {info.security.dir / 'kmta-kafka.toml'}",
                    file=sys.stderr,
                )
            print(
                info.bootstrap_servers
            )  # alone on stdout so that BOOTSTRAP=$(kmta kafka start) works
            return 0
        if args.kafka_action == "stop":
            stopped = manager.stop(data_dir)
            print(
                f"stopped node(s): {', '.join(map(str, stopped)) or 'none were running'}",
                file=sys.stderr,
            )
            return 0
        nodes = manager.status(data_dir)
    except manager.KafkaManagerError as exc:
        print(f"kmta kafka {args.kafka_action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    rows = [{"node_id": node.node_id, "port": node.port, "pid": node.pid,
             "state": "running" if node.running else (
                 "starting/unreachable" if node.alive else "stopped")} for node in nodes]
    if args.json:
        print(json.dumps({"data_dir": str(data_dir), "nodes": rows}, indent=2))
    elif not nodes:
        print(f"no cluster in {data_dir}")
    for r in [] if args.json else rows:
        print(f"node {r['node_id']}  port {r['port']}  pid {r['pid'] or '-'}  {r['state']}")
    return 0 if nodes and all(node.running for node in nodes) else EXIT_NOT_RUNNING
