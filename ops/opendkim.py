"""DKIM on both sides of the benchmark: Debian's OpenDKIM as a milter for the throwaway Postfix
(``scripts/bench.py --dkim``, the same key kmta signs with), a sink that keeps the last few
messages it accepts, and a dkimpy check of a kept message against the key.

Everything listens on loopback only.
"""
from __future__ import annotations

import base64
import shutil
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

import dkim
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization

from kmta.policy.signing import OVERSIGNED, SIGNED_HEADERS
from ops.kit import Procs, free_port

__all__ = ["OPENDKIM", "KeepSink", "OpenDkim", "dkim_verdict"]

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"

CONF = """\
Mode s
Domain {domain}
Selector {selector}
KeyFile {key}
SignatureAlgorithm {algorithm}
Canonicalization relaxed/relaxed
SignHeaders {sign}
OversignHeaders {oversign}
InternalHosts 127.0.0.0/8
Socket inet:{port}@127.0.0.1
PidFile {dir}/opendkim.pid
Background no
Syslog no
RequireSafeKeys no
"""


class OpenDkim:
    """``opendkim -f`` signing mail of ``domain`` with one key (PEM file), relaxed/relaxed over
    kmta's own header list (``kmta.policy.signing``), so both sides sign the same fields."""

    def __init__(self, procs: Procs, dir: Path, domain: str, selector: str, key: Path,
                 algorithm: str = "rsa-sha256") -> None:
        dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = dir / "opendkim.conf"
        conf.write_text(CONF.format(domain=domain, selector=selector, key=key,
                                    algorithm=algorithm, sign=",".join(SIGNED_HEADERS),
                                    oversign=",".join(sorted(OVERSIGNED)), port=self.port,
                                    dir=dir))
        self.pid = procs.spawn("opendkim", [OPENDKIM, "-f", "-x", str(conf)]).pid
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1):
                    break
            except OSError:
                procs.check(["opendkim"])
                if time.monotonic() > deadline:
                    raise RuntimeError("opendkim did not start") from None
                time.sleep(0.05)

    @property
    def milter(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    @staticmethod
    def available() -> str | None:
        """Why OpenDKIM cannot run here, or None."""
        return None if Path(OPENDKIM).exists() else "opendkim not installed (package opendkim)"


class _Keep:
    def __init__(self, keep: int) -> None:
        self.messages: deque[bytes] = deque(maxlen=keep)
        self.total = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(bytes(envelope.original_content or envelope.content))
        self.total += 1
        return "250 kept"


class KeepSink:
    """An aiosmtpd server on ``ip:port`` (a thread) keeping the last ``keep`` messages."""

    def __init__(self, ip: str, port: int, keep: int = 4) -> None:
        self.port = port
        self.handler = _Keep(keep)
        self.controller = Controller(self.handler, hostname=ip, port=port)

    def start(self) -> KeepSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[bytes]:
        return list(self.handler.messages)

    @property
    def total(self) -> int:
        return self.handler.total


def dkim_verdict(message: bytes, key_pem: bytes, domain: str, selector: str) -> str:
    """Whether ``message`` carries a DKIM-Signature of ``domain``/``selector`` that verifies
    (dkimpy) with the public half of ``key_pem``: a line for the report."""
    fields: list[bytes] = []
    for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line.strip()
        else:
            fields.append(line)
    sigs = [f for f in fields if f.lower().startswith(b"dkim-signature:")]
    if not sigs:
        return "NO DKIM-Signature header"
    key = serialization.load_pem_private_key(key_pem, password=None)
    pub = key.public_key()
    if hasattr(pub, "key_size"):
        der = pub.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    else:
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        txt = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    want = f"{selector}._domainkey.{domain}.".encode()

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return txt if name.rstrip(b".") + b"." == want else None

    ok = dkim.verify(message, dnsfunc=dns)
    head = sigs[0].decode(errors="replace")
    tags = dict(t.strip().split("=", 1) for t in head.split(":", 1)[1].split(";")
                if "=" in t)
    what = f"a={tags.get('a')} c={tags.get('c')} d={tags.get('d')} s={tags.get('s')}"
    return f"{'verified' if ok else 'DOES NOT VERIFY'} ({len(sigs)} signature(s), {what})"
