"""Kafka clusters of a test's own, for fault tests: started by the repo's own manager beside the
session broker, one broker killed with SIGKILL and started again while a pipeline runs on it."""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from ops.kafka import cli as kafka_cli
from ops.kafka import manager
from ops.kafka.layout import CONTROLLER_PORT_OFFSET

__all__ = ["Cluster", "free_base_port", "kafka_libs"]


def kafka_libs() -> Path:
    kafka_home = os.environ.get("KAFKA_HOME")
    return manager.ensure_jars(kafka_cli.default_cache_dir(os.environ),
                               kafka_home=Path(kafka_home) if kafka_home else None)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(brokers: int = 1) -> int:
    """A base port whose client ports (base..base+n-1) and controller ports (+100) are free."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        ports = [base + i + off for i in range(brokers) for off in (0, CONTROLLER_PORT_OFFSET)]
        if max(ports) < 65536 and all(_bindable(p) for p in ports):
            return base
    raise RuntimeError("no free port range for a Kafka cluster")


class Cluster:
    """``brokers`` combined broker+controller nodes in ``data_dir`` (RF 3 / min ISR 2 from three
    nodes up, see ops/kafka/layout.py). A small heap each: several JVMs share the machine."""

    def __init__(self, data_dir: Path, brokers: int = 1, heap: str = "384m") -> None:
        self.data_dir = data_dir
        self.brokers = brokers
        self.heap = heap
        self.libs = kafka_libs()
        self.port = free_base_port(brokers)
        self.bootstrap = ""

    def start(self, timeout: float = 180.0) -> float:
        """Start every node that is down and wait until all serve; returns the seconds taken."""
        t0 = time.monotonic()
        info = manager.start(self.data_dir, self.brokers, self.port, libs=self.libs,
                             heap=self.heap, timeout=timeout)
        self.bootstrap = info.bootstrap_servers
        return time.monotonic() - t0

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no controlled shutdown, nothing flushed) and wait until it is gone."""
        [st] = [s for s in manager.status(self.data_dir) if s.node_id == node_id]
        assert st.pid is not None, f"node {node_id} is not running"
        os.kill(st.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(s.alive for s in manager.status(self.data_dir) if s.node_id == node_id):
            if time.monotonic() > deadline:
                raise AssertionError(f"node {node_id} still alive 30 s after SIGKILL")
            time.sleep(0.1)

    def stop(self) -> None:
        manager.stop(self.data_dir)
