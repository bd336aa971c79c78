"""aiosmtpd with CHUNKING (RFC 3030, ``BDAT <size> [LAST]``) and PIPELINING announced, as the
large providers' servers do (Gmail and Outlook offer both); aiosmtpd 1.4 has neither in its
EHLO, though it reads pipelined commands in order anyway.

``ChunkingSMTP`` hands a BDAT message to the handler's ``handle_DATA`` as DATA would (the
chunks joined in ``envelope.original_content``), so any aiosmtpd handler works with it.
``python -m sim.chunking HOST:PORT`` is a discarding sink for ``scripts/bench.py --rtt
... --sink chunking``: it prints ``sess=N quit=N mesg=N`` counters as Postfix's ``smtp-sink -c``
does, so the bench reads both alike. Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from sim.net import require_loopback

__all__ = ["ChunkingSMTP", "announce"]


def announce(responses: list[str]) -> list[str]:
    """EHLO lines with PIPELINING and CHUNKING added after the greeting line."""
    return [responses[0], "250-PIPELINING", "250-CHUNKING", *responses[1:]]


class ChunkingSMTP(SMTP):
    """aiosmtpd's SMTP plus the BDAT command; the handler's ``handle_EHLO`` announces it
    (``announce``)."""

    def __init__(self, handler: Any, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self._chunks: list[bytes] = []
        self._chunk_failed = False

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self._chunks, self._chunk_failed = [], False

    async def smtp_BDAT(self, arg: str) -> None:
        parts = arg.split()
        if not (1 <= len(parts) <= 2 and parts[0].isdigit()
                and (len(parts) == 1 or parts[1].upper() == "LAST")):
            await self.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
            return
        size, last = int(parts[0]), len(parts) == 2
        chunk = await self._reader.readexactly(size)  # read even when refused (RFC 3030 §2)
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if self._chunk_failed:
            await self.push("554 5.5.0 Error: an earlier chunk was refused")
            return
        limit = self.data_size_limit
        if limit and sum(map(len, self._chunks)) + size > limit:
            self._chunk_failed = True
            await self.push("552 5.3.4 Error: too much mail data")
            return
        self._chunks.append(chunk)
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        data = b"".join(self._chunks)
        self.envelope.original_content = data
        self.envelope.content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is None or status is Ellipsis else status)


class _Counting:
    """The sink's handler: accepts everything, counts, keeps nothing."""

    def __init__(self) -> None:
        self.sess = self.quit = self.mesg = 0

    def show(self) -> None:
        sys.stdout.write(f"sess={self.sess} quit={self.quit} mesg={self.mesg}\n")
        sys.stdout.flush()

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return announce(responses)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mesg += 1
        self.show()
        return "250 2.0.0 Ok: queued"


class _SinkSMTP(ChunkingSMTP):
    def __init__(self, handler: _Counting, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self._count = handler

    async def smtp_QUIT(self, arg: str) -> None:
        self._count.quit += 1
        await super().smtp_QUIT(arg)

    def connection_lost(self, exc: Exception | None) -> None:
        self._count.sess += 1
        self._count.show()
        super().connection_lost(exc)


async def _serve(host: str, port: int) -> None:
    handler = _Counting()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _SinkSMTP(handler, hostname="chunking-sink", data_size_limit=None), host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    handler.show()
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.chunking", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("listen", help="HOST:PORT on loopback")
    host, _, port = p.parse_args(argv).listen.rpartition(":")
    require_loopback(host)
    asyncio.run(_serve(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
