"""The metrics port of every process kind: ``/metrics`` (Prometheus text, prometheus-client's
WSGI app), ``/healthz`` (alive) and ``/readyz`` (ready), on ``[metrics] listen``.

The server is wsgiref's, threaded, in a daemon thread of its own (what prometheus-client's
``start_http_server`` runs, with the two health paths in front). A thread because the process
kinds run their work differently (faust's loop in the worker, ``asyncio.run`` in the sender and
the inbound processes, waitress threads and a feed thread in the dashboard): the same server
works beside each, a scrape never waits behind a busy delivery loop, and a server that keeps
answering while the loop is stuck is what lets ``/healthz`` say the loop is stuck (its last
report too old) instead of just timing out.

The process's loop reports every second (``watch``): it refreshes the live gauges, runs the
readiness checks (``name -> reason``, empty when ready) and stamps the time. The server's
thread only reads the last report, so nothing is shared but one swapped tuple.

- ``/healthz``: 200 while the loop reported within ``stall_after`` seconds (before its first
  report: for ``start_grace`` seconds after start); else 503.
- ``/readyz``: 200 when the last report is fresh and no check failed; else 503. Both answer
  JSON: ``{"status", "kind", "reason", "checks"}`` (``reason`` says why, when not OK).
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from kmta.errors import ConfigError
from kmta.pipeline.metrics import UNEXPECTED_ERRORS

log = logging.getLogger(__name__)

__all__ = ["PATHS", "Health", "KafkaProbe", "MetricsServer", "serve", "serving", "watch"]

PATHS = ("/metrics", "/healthz", "/readyz")
STALL_AFTER = 30.0  # seconds without a report from the loop: not alive
START_GRACE = 300.0  # seconds a process may take to its first report (faust's recovery)
REPORT_EVERY = 1.0  # seconds between the loop's reports
PROBE_EVERY = 5.0  # seconds between Kafka metadata requests
PROBE_TIMEOUT = 5.0

Checks = Callable[[], Awaitable[Mapping[str, str]]]


class Health:
    """What the process's loop last reported, read by the server's thread."""

    def __init__(self, kind: str, stall_after: float = STALL_AFTER,
                 start_grace: float = START_GRACE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.stall_after = stall_after
        self._clock = clock
        self._started = clock()
        self._grace = start_grace
        # (when, failing checks); None until the first report
        self._last: tuple[float, dict[str, str]] | None = None

    def report(self, failing: Mapping[str, str]) -> None:
        """From the process's loop: the checks that fail now (empty: ready)."""
        self._last = (self._clock(), dict(failing))

    def alive(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        last = self._last
        if last is None:
            ok = now - self._started < self._grace
            reason = "" if ok else f"no report from the process in {now - self._started:.0f} s"
            return ok, self._body("alive" if ok else "stalled", reason, {})
        age = now - last[0]
        if age > self.stall_after:
            return False, self._body("stalled", f"the event loop last reported {age:.0f} s "
                                     "ago", {})
        return True, self._body("alive", "", {})

    def ready(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        last = self._last
        if last is None:
            return False, self._body("not ready", "starting", {"start": "starting"})
        when, failing = last
        if now - when > self.stall_after:
            failing = {**failing, "loop": f"the event loop last reported {now - when:.0f} s ago"}
        if failing:
            return False, self._body("not ready", "; ".join(f"{k}: {v}" for k, v in
                                                            sorted(failing.items())), failing)
        return True, self._body("ready", "", {})

    def _body(self, status: str, reason: str, checks: Mapping[str, str]) -> dict[str, Any]:
        return {"status": status, "kind": self.kind, "reason": reason, "checks": dict(checks)}


async def watch(health: Health, checks: Checks,
                refresh: Iterable[Callable[[], object]] = (),
                every: float = REPORT_EVERY) -> None:
    """Report to ``health`` every ``every`` seconds until cancelled: refresh the live gauges
    (each ``refresh`` function, plain or async), run the checks. A check that fails
    unexpectedly is a failing check; a refresh that fails is counted
    (``kmta_unexpected_errors_total{stage="metrics"}``) but leaves readiness alone: the
    process works, only a gauge is stale. Neither ends the watch."""
    while True:
        failing: dict[str, str] = {}
        for fn in refresh:
            try:
                done = fn()
                if inspect.isawaitable(done):
                    await done
            except Exception:
                log.debug("refreshing gauges failed", exc_info=True)
                UNEXPECTED_ERRORS.labels(health.kind, "metrics").inc()
        try:
            failing.update(await checks())
        except Exception as e:  # noqa: BLE001 - reported as the reason
            failing["checks"] = f"{type(e).__name__}: {e}"
        health.report(failing)
        await asyncio.sleep(every)


class KafkaProbe:
    """Is Kafka reachable? A metadata request over an aiokafka client the process already has
    (a consumer's ``topics()``, or a producer's ``client.fetch_all_metadata()``), at most every
    ``PROBE_EVERY`` seconds; ``check()`` answers the last result (None: reachable)."""

    def __init__(self, request: Callable[[], Awaitable[object]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._request = request
        self._clock = clock
        self._at = -PROBE_EVERY
        self._error: str | None = "not probed yet"

    @classmethod
    def of(cls, client: Any) -> KafkaProbe:
        if hasattr(client, "topics"):  # AIOKafkaConsumer
            return cls(client.topics)
        return cls(client.client.fetch_all_metadata)  # AIOKafkaProducer

    async def check(self) -> str | None:
        now = self._clock()
        if now - self._at >= PROBE_EVERY:
            self._at = now
            try:
                await asyncio.wait_for(self._request(), PROBE_TIMEOUT)
                self._error = None
            except Exception as e:  # noqa: BLE001 - the reason readiness reports
                self._error = f"unreachable: {type(e).__name__}: {e}"[:300]
        return self._error

    async def failing(self) -> dict[str, str]:
        """``{"kafka": reason}`` while unreachable, else empty: a readiness check."""
        err = await self.check()
        return {} if err is None else {"kafka": err}


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes and probes every few seconds: no access log


def app(health: Health, registry: Any = REGISTRY) -> Callable[..., Any]:
    """The WSGI app: the two health paths, ``/metrics`` to prometheus-client, else 404."""
    metrics = make_wsgi_app(registry)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path in ("/healthz", "/readyz"):
            ok, body = health.alive() if path == "/healthz" else health.ready()
            data = json.dumps(body).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))), ("Cache-Control", "no-store")])
            return [data]
        data = b"not found: /metrics, /healthz, /readyz\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(data)))])
        return [data]
    return wsgi


class MetricsServer:
    """The running server (``close()`` stops it and its socket)."""

    def __init__(self, listen: str, health: Health) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        server = type("_Server", (ThreadingWSGIServer,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self._httpd = make_server(host, int(port), app(health), server,
                                      handler_class=_Quiet)
        except OSError as e:
            raise ConfigError(f"[metrics] listen {listen}: {e}") from None
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="kmta-metrics",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def serve(listen: str | None, health: Health) -> MetricsServer | None:
    """Serve the three paths on ``host:port`` in a thread of its own (nothing when unset)."""
    if not listen:
        return None
    server = MetricsServer(listen, health)
    log.info("metrics, /healthz and /readyz on %s", listen)
    return server


@contextlib.contextmanager
def serving(listen: str | None, health: Health) -> Iterator[MetricsServer | None]:
    """``serve`` while the body runs (a process's whole life, from before its first Kafka
    request: ``/healthz`` answers while it starts)."""
    server = serve(listen, health)
    try:
        yield server
    finally:
        if server is not None:
            server.close()
