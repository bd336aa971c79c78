"""Prometheus metrics of kmta's processes (prometheus-client), served on ``[metrics] listen``.

Counters follow Prometheus conventions: a ``kmta_`` prefix, ``_total`` for counters, labels with
a small fixed set of values (never an id or an address).
"""
from __future__ import annotations

from prometheus_client import Counter, start_http_server

__all__ = ["DEAD_LETTERS", "UNEXPECTED_ERRORS", "serve"]

DEAD_LETTERS = Counter(
    "kmta_dlq_records_total", "Records written to the dead-letter topic", ["component"])
UNEXPECTED_ERRORS = Counter(
    "kmta_unexpected_errors_total",
    "Records or messages whose handling failed unexpectedly; each still got its answer "
    "(a dead letter or a retry) and the process went on", ["component", "stage"])


def serve(listen: str | None) -> None:
    """Serve ``/metrics`` on ``host:port`` in a thread of its own (nothing when unset)."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
