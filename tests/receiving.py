"""A receiving side for tests: an aiosmtpd server that checks every DKIM signature with dkimpy
against the TXT records of a real DNS server (sim.dns), optionally offering STARTTLS with
a certificate made here (self-signed, or issued by a test CA)."""
from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dkim
import dns.resolver
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def txt_lookup(dns_port: int):
    """A dkimpy ``dnsfunc`` asking the test DNS server on 127.0.0.1."""
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = dns_port
    r.lifetime = 5

    def get(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            ans = r.resolve(name.decode().rstrip("."), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(ans[0].strings)
    return get


@dataclass
class Received:
    mail_from: str
    rcpt: str
    data: bytes
    signatures: list[tuple[str, str, str, bool]]  # (d, s, a, verified) per DKIM-Signature
    tls: bool


@dataclass
class Recorder:
    dns_port: int | None
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        sigs = []
        if self.dns_port is not None:
            d = dkim.DKIM(data)
            dnsfunc = txt_lookup(self.dns_port)
            n = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
            for i in range(n):
                try:
                    ok = d.verify(idx=i, dnsfunc=dnsfunc)
                except dkim.DKIMException:
                    ok = False
                f = d.signature_fields
                sigs.append((f.get(b"d", b"").decode(), f.get(b"s", b"").decode(),
                             f.get(b"a", b"").decode(), bool(ok)))
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.got.append(Received(envelope.mail_from, rcpt, data, sigs,
                                         session.ssl is not None))
        return "250 2.0.0 accepted"


def make_cert(tmp: Path, names: list[str], ca: tuple | None = None) -> tuple[Path, Path]:
    """A certificate for ``names`` (self-signed, or signed by ``ca`` = (cert, key)); returns
    the cert and key PEM paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    alt = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
           for n in names]
    issuer, signer = (ca[0].subject, ca[1]) if ca else (subject, key)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))
    stem = tmp / names[0].replace("*", "star")
    cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def make_ca(tmp: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmta test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def start_receiver(port: int, dns_port: int | None = None, host: str = "127.0.0.1",
                   tls: ssl.SSLContext | None = None) -> tuple[Controller, Recorder]:
    rec = Recorder(dns_port)
    kw = {"tls_context": tls} if tls is not None else {}
    c = Controller(rec, hostname=host, port=port, data_size_limit=20 * 1024 * 1024,
                   server_hostname="mx.test", **kw)
    c.start()
    return c, rec
