"""Authoritative DNS for the simulated providers (UDP and TCP, asyncio, dnspython wire format).

Answers MX, A, TXT and AAAA (always empty) for the names in a :class:`Zone`; NXDOMAIN for any other
name; a null MX (RFC 7505, ``0 .``) for ``null_mx`` domains; SERVFAIL for ``servfail`` names; no
answer at all for ``silent`` names (a black-holed nameserver). A
domain with A records and no MX answers MX queries with an empty NOERROR, so a resolver falls back
to the implicit MX (RFC 5321 §5.1). A records must be loopback addresses: senders that trust this
server connect only to 127.0.0.0/8.

Run alone: ``python -m sim.dns --zone zone.json --port 5353`` (prints ``listening
HOST:PORT``), or in-process from synchronous code with :class:`DnsServerThread`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from kmta.errors import ConfigError
from sim.net import require_loopback

__all__ = ["DnsServer", "DnsServerThread", "Zone", "main"]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass
class Zone:
    """Names and records: ``{"gmail.com": {"mx": [(5, "gmail-smtp-in.l.google.com")]},
    "gmail-smtp-in.l.google.com": {"a": ["127.0.1.1"]}}`` plus ``null_mx`` and ``servfail`` names.
    """

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    null_mx: set[str] = field(default_factory=set)
    servfail: set[str] = field(default_factory=set)
    ttl: int = 300
    # names whose queries get no answer at all (a black-holed or overloaded nameserver)
    silent: set[str] = field(default_factory=set)
    asked: Counter[str] = field(default_factory=Counter)  # questions received, per name

    def __post_init__(self) -> None:
        records: dict[str, dict[str, Any]] = {}
        for name, rec in self.records.items():
            unknown = set(rec) - {"mx", "a", "txt"}
            if unknown:
                raise ConfigError(f"zone name {name}: unknown record types {sorted(unknown)}")
            mx = [(int(pref), _norm(host)) for pref, host in rec.get("mx", [])]
            a = [require_loopback(ip, f"A record of {name}") for ip in rec.get("a", [])]
            records[_norm(name)] = {"mx": mx, "a": a, "txt": [str(t) for t in rec.get("txt", [])]}
        self.records = records
        self.null_mx = {_norm(n) for n in self.null_mx}
        self.servfail = {_norm(n) for n in self.servfail}
        self.silent = {_norm(n) for n in self.silent}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Zone:
        """``{"records": {...}, "null_mx": [...], "servfail": [...], "silent": [...],
        "ttl": N}``."""
        unknown = set(data) - {"records", "null_mx", "servfail", "silent", "ttl"}
        if unknown:
            raise ConfigError(f"unknown zone keys {sorted(unknown)}")
        return cls(
            records=dict(data.get("records", {})),
            null_mx=set(data.get("null_mx", ())),
            servfail=set(data.get("servfail", ())),
            ttl=int(data.get("ttl", 300)),
            silent=set(data.get("silent", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "null_mx": sorted(self.null_mx),
            "servfail": sorted(self.servfail),
            "silent": sorted(self.silent),
            "ttl": self.ttl,
        }

    def exists(self, name: str) -> bool:
        return name in self.records or name in self.null_mx or name in self.servfail

    def answer(self, name: str, rdtype: int) -> tuple[int, list[str]]:
        """``(rcode, rdata texts)`` for one question; the whole DNS policy of the sim."""
        name = _norm(name)
        if name in self.servfail:
            return dns.rcode.SERVFAIL, []
        if not self.exists(name):
            return dns.rcode.NXDOMAIN, []
        if name in self.null_mx:
            return dns.rcode.NOERROR, (["0 ."] if rdtype == dns.rdatatype.MX else [])
        rec = self.records[name]
        if rdtype == dns.rdatatype.MX:
            return dns.rcode.NOERROR, [f"{pref} {host}." for pref, host in rec["mx"]]
        if rdtype == dns.rdatatype.A:
            return dns.rcode.NOERROR, list(rec["a"])
        if rdtype == dns.rdatatype.TXT:  # one record per value, in strings of <= 255 bytes
            return dns.rcode.NOERROR, [" ".join('"' + v[i:i + 255].replace('"', '\\"') + '"'
                                                for i in range(0, max(len(v), 1), 255))
                                       for v in rec["txt"]]
        return dns.rcode.NOERROR, []  # AAAA and anything else: no data


def build_response(zone: Zone, wire: bytes, max_size: int | None) -> bytes | None:
    """The wire-format reply to one query; ``None`` for garbage that cannot be answered."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.flags &= ~dns.flags.RA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
    else:
        question = query.question[0]
        name = _norm(question.name.to_text())
        zone.asked[name] += 1
        if name in zone.silent:
            return None
        rcode, texts = zone.answer(question.name.to_text(), question.rdtype)
        response.set_rcode(rcode)
        if texts:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, zone.ttl, dns.rdataclass.IN, question.rdtype, texts
                )
            )
    if max_size is None:
        return response.to_wire()
    if query.edns >= 0:
        max_size = max(512, query.payload)
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.AA | dns.flags.TC
        return truncated.to_wire()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = build_response(self.zone, data, max_size=512)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsServer:
    """Serves ``zone`` on ``host:port`` over UDP and TCP. ``port=0`` picks a free port."""

    def __init__(self, zone: Zone, host: str = "127.0.0.1", port: int = 5353) -> None:
        self.zone = zone
        self.host = require_loopback(host, "DNS listen address")
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        attempts = 20 if self.port == 0 else 1
        for attempt in range(attempts):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self.zone), local_addr=(self.host, self.port)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(
                    self._serve_tcp, self.host, port, reuse_address=True
                )
            except OSError:
                udp.close()
                if attempt == attempts - 1:
                    raise
                continue  # the TCP side of a random UDP port was taken: pick another
            self._udp = udp  # type: ignore[assignment]
            self.port = port
            return

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = build_response(self.zone, await reader.readexactly(length), None)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class DnsServerThread:
    """A :class:`DnsServer` on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(self, zone: Zone, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = DnsServer(zone, host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="kmta-sim-dns"
        )

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> DnsServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> DnsServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve_until_signal(server: DnsServer) -> None:
    await server.start()
    print(f"listening {server.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.dns",
        description="Serve a simulated zone (JSON: records, null_mx, servfail, ttl) until "
        "SIGINT/SIGTERM; prints 'listening HOST:PORT' once ready.",
    )
    parser.add_argument("--zone", required=True, help="zone JSON file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5353, help="0 picks a free port")
    args = parser.parse_args(list(argv) if argv is not None else None)
    with open(args.zone, encoding="utf-8") as f:
        zone = Zone.from_dict(json.load(f))
    try:
        asyncio.run(_serve_until_signal(DnsServer(zone, args.host, args.port)))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
