"""A TCP proxy on loopback that adds a round-trip time and counts round trips.

``scripts/bench.py --rtt MS`` puts it between the senders and the sink: every chunk read from
one side is written to the other ``MS / 2`` milliseconds later (order kept), so a command and
its reply take ``MS`` as across a real network. Per connection it records when it opened and
closed and its *turns*: how often the client started writing after the server had spoken. A
lock-step SMTP client makes four turns per message (MAIL, RCPT, DATA, body), a pipelined one
two (``MAIL RCPT DATA``, body), one with BDAT one; the integration tests count them.

It runs on an event loop of its own in a thread, so a synchronous caller (the bench) and an
asyncio one (the tests) use it alike. Loopback only.
"""
from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from dataclasses import dataclass, field

__all__ = ["ConnStats", "DelayProxy"]

CHUNK = 64 * 1024


@dataclass
class ConnStats:
    opened: float  # time.monotonic()
    closed: float | None = None
    turns: int = 0
    client_bytes: int = 0
    server_bytes: int = 0
    active: list[float] = field(default_factory=list)  # when chunks arrived, either way
    turned: list[float] = field(default_factory=list)  # when the client's turns began
    _server_spoke: bool = True  # the client's first write is a turn


class DelayProxy:
    """Listens on ``listen_host`` (a free port, ``.port``), forwards to ``target``."""

    def __init__(self, listen_host: str, target_host: str, target_port: int,
                 rtt_ms: float = 0.0) -> None:
        for h in (listen_host, target_host):
            if not ipaddress.ip_address(h).is_loopback:
                raise ValueError(f"{h} is not a loopback address")
        self.listen_host = listen_host
        self.target = (target_host, target_port)
        self.delay = rtt_ms / 2000.0  # seconds, each way
        self.port = 0
        self.conns: list[ConnStats] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> DelayProxy:
        self._thread = threading.Thread(target=self._run, name="rtt-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - handed to start() in the caller's thread
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        async with self._server:
            await self._stopping.wait()
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- figures ------------------------------------------------------------------------------
    def turns(self) -> list[int]:
        with self._lock:
            return [c.turns for c in self.conns]

    def busy(self, since: float, until: float) -> tuple[int, float, int]:
        """Within ``[since, until]`` (monotonic): connections with traffic, the seconds from
        each one's first to its last chunk summed (an idle connection held open before or
        after its work does not count), and the client's turns."""
        n, seconds, turns = 0, 0.0, 0
        with self._lock:
            for c in self.conns:
                seen = [t for t in c.active if since <= t <= until]
                if seen:
                    n += 1
                    seconds += seen[-1] - seen[0]
                turns += sum(1 for t in c.turned if since <= t <= until)
        return n, seconds, turns

    # -- forwarding ---------------------------------------------------------------------------
    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        stats = ConnStats(opened=time.monotonic())
        with self._lock:
            self.conns.append(stats)
        sw: asyncio.StreamWriter | None = None
        try:
            sr, sw = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pump(cr, sw, stats, True), self._pump(sr, cw, stats, False))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            stats.closed = time.monotonic()
            for w in (cw, sw):
                if w is not None:
                    w.close()
                    try:
                        await w.wait_closed()
                    except (OSError, asyncio.CancelledError):
                        pass
            self._tasks.discard(task)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, stats: ConnStats,
                    from_client: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                w.write(chunk)
                await w.drain()
            if w.can_write_eof():
                w.write_eof()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await r.read(CHUNK)
                now = time.monotonic()
                with self._lock:
                    if chunk:
                        stats.active.append(now)
                    if from_client and chunk:
                        stats.client_bytes += len(chunk)
                        if stats._server_spoke:
                            stats.turns += 1
                            stats.turned.append(now)
                            stats._server_spoke = False
                    elif chunk:
                        stats.server_bytes += len(chunk)
                        stats._server_spoke = True
                queue.put_nowait((now + self.delay, chunk))
                if not chunk:
                    break
            await sender
        except OSError:
            pass
        finally:
            if not sender.done():
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
