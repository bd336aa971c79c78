"""DKIM keys and signatures (dkimpy; RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256).

Keys are PEM files as openssl writes them (RSA: PKCS#1 or PKCS#8; ed25519: PKCS#8). They are
all read and checked when the worker starts (``load_keys``), future and past selectors too, so
a wrong file is a config error at start, never a failure at send time. dkimpy canonicalises
and hashes the header fields and builds the signature (relaxed/relaxed); the body hash is
``relaxed_body`` + SHA-256 here (the same bytes, faster), the RSA operation OpenSSL's; the
choices (which domain, which selectors now, which header fields) are
``kmta/policy/signing.py``'s.
"""
from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import correct_empty_body, strip_trailing_lines

from kmta.config import DkimKeyConfig, DomainConfig
from kmta.errors import ConfigError, InputError
from kmta.policy.signing import headers_to_sign

__all__ = [
    "MIN_RSA_BITS",
    "DkimKey",
    "generate_key",
    "load_key",
    "load_keys",
    "relaxed_body",
    "sign",
    "txt_record",
]

MIN_RSA_BITS = 2048
_CANON = (b"relaxed", b"relaxed")


@dataclass(frozen=True)
class DkimKey:
    """One loaded selector: the key in the form dkimpy takes, and its public half for DNS."""

    domain: str
    config: DkimKeyConfig
    private: bytes  # RSA: PKCS#1 PEM; ed25519: base64 of the 32-byte seed (dkimpy's forms)
    public_b64: str  # the p= of the TXT record
    bits: int
    rsa: rsa.RSAPrivateKey | None = None  # for OpenSSL's RSA operation (see _Dkim)

    @property
    def selector(self) -> str:
        return self.config.selector

    @property
    def algorithm(self) -> str:
        return self.config.algorithm

    def window(self) -> tuple[float | None, float | None]:
        return self.config.window()

    def __repr__(self) -> str:  # never the key material
        return f"DkimKey({self.selector}._domainkey.{self.domain}, {self.algorithm})"


def load_key(domain: str, cfg: DkimKeyConfig) -> DkimKey:
    """Read and check one key file; a ConfigError says what is wrong with it."""
    where = f"domain {domain} selector {cfg.selector} ({cfg.key_file})"
    try:
        pem = Path(cfg.key_file).read_bytes()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read the key file: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: not an unencrypted PEM private key ({e})") from None
    if cfg.algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{where}: algorithm rsa-sha256 needs an RSA key, "
                              f"the file holds {_kind(key)}")
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{where}: RSA key of {key.key_size} bits; at least "
                              f"{MIN_RSA_BITS} are needed (RFC 8301, provider requirements)")
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        bits = key.key_size
    else:
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{where}: algorithm ed25519-sha256 needs an Ed25519 key, "
                              f"the file holds {_kind(key)}")
        private = base64.b64encode(key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        bits = 256
    return DkimKey(domain, cfg, private, base64.b64encode(public).decode(), bits,
                   key if isinstance(key, rsa.RSAPrivateKey) else None)


def load_keys(domains: list[DomainConfig]) -> dict[str, list[DkimKey]]:
    """Every configured key, by domain; all problems reported together."""
    out: dict[str, list[DkimKey]] = {}
    errors = []
    for d in domains:
        out[d.name] = []
        for k in d.dkim:
            try:
                out[d.name].append(load_key(d.name, k))
            except ConfigError as e:
                errors.append(str(e))
    if errors:
        raise ConfigError("DKIM keys: " + "; ".join(errors))
    return out


def _kind(key: object) -> str:
    return type(key).__name__.removeprefix("_").replace("PrivateKey", " key")


def txt_record(key: DkimKey) -> str:
    """The TXT value to publish at ``<selector>._domainkey.<domain>``."""
    k = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"
    return f"v=DKIM1; k={k}; p={key.public_b64}"


def sign(message: bytes, keys: list[DkimKey]) -> bytes:
    """``message`` with one DKIM-Signature per key prepended (in ``keys`` order, so the first
    key's signature ends up on top). Existing DKIM-Signature fields are kept and not signed.
    A message dkimpy cannot parse raises InputError (it is rejected with the reason)."""
    if not keys:
        return message
    head = message.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0].decode("ascii", "replace").strip()
             for line in head.split(b"\r\n") if line and line[:1] not in (b" ", b"\t")]
    include = [h.encode() for h in headers_to_sign(names)]
    # dkimpy splits the whole message into lines and canonicalises the body with a regex
    # substitution per space: 12 of the 15 ms an RSA signature of 100 KB took. A body with
    # CRLF line ends only (what compose makes) is hashed here instead, once for all keys
    # (both algorithms hash it with SHA-256), and dkimpy gets the header section alone.
    parse, body_hash = message, None
    if (message.count(b"\n") == message.count(b"\r\n") and b"\r\n\r\n" in message
            and not message.startswith(b"\r\n")):
        end = message.index(b"\r\n\r\n") + 4
        parse = message[:end]
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(message[end:])).digest())
    sigs = []
    try:
        for key in keys:
            d = _Dkim(parse, signature_algorithm=key.algorithm.encode())
            d.rsa_key = key.rsa
            d.body_hash = body_hash
            sigs.append(d.sign(key.selector.encode(), key.domain.encode(), key.private,
                               canonicalize=_CANON, include_headers=include))
    except dkim.DKIMException as e:  # a header section dkimpy cannot read: the input's fault
        raise InputError(f"cannot DKIM-sign this message: {e}") from None
    return b"".join(sigs) + message


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed canonicalisation of a body with CRLF line ends: the bytes
    dkimpy's ``Relaxed.canonicalize_body`` gives (a unit test compares them over many bodies),
    with bytes methods instead of a regex substitution per run of whitespace. Tabs become
    spaces first, so "WSP" is a space from there on; trailing WSP is removed before CRLF only
    (as dkimpy does: a last line without CRLF keeps it, compressed)."""
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    if b" \r\n" in body:
        lines = body.split(b"\r\n")
        body = b"\r\n".join([line.rstrip(b" ") for line in lines[:-1]] + lines[-1:])
    if b"  " in body:
        words = b" ".join([w for w in body.split(b" ") if w])
        body = ((b" " if body[:1] == b" " else b"") + words
                + (b" " if body[-1:] == b" " and words else b""))
    return bytes(correct_empty_body(strip_trailing_lines(body)))


class _Dkim(dkim.DKIM):
    """dkimpy's DKIM with the RSA private-key operation done by OpenSSL (cryptography).

    dkimpy computes RSA in pure Python (``pow`` on 1024-bit numbers): about 9 ms a signature
    here, against 0.5 ms in OpenSSL (``scripts/bench_dkim.py``). Canonicalisation, hashing and
    the header are dkimpy's: ``gen_header`` below is dkimpy 1.1's with only the RSA line
    changed (PKCS#1 v1.5 is deterministic, so the signature is the same bytes; a unit test
    compares them)."""

    rsa_key: rsa.RSAPrivateKey | None = None
    body_hash: bytes | None = None  # bh= of the real body (dkimpy was given the header alone)

    def sign(self, selector, domain, privkey, signature_algorithm=None, identity=None,
             canonicalize=_CANON, include_headers=None, length=False):
        """With the OpenSSL key and the body hash at hand: dkimpy 1.1's ``sign`` without
        its parse of the PEM key (pure-Python ASN.1, 2 of the 30 ms per message of a
        profiled 100 KB run) and its body canonicalisation; the fields in its order."""
        if (self.rsa_key is None or self.body_hash is None or signature_algorithm
                not in (None, b"rsa-sha256") or identity is not None or length
                or include_headers is None or canonicalize != _CANON):
            return super().sign(selector, domain, privkey, signature_algorithm, identity,
                                canonicalize, include_headers, length)
        self.signature_algorithm = b"rsa-sha256"
        policy = dkim.CanonicalizationPolicy.from_c_value(b"/".join(canonicalize))
        include = tuple(x.lower() for x in include_headers)
        self.include_headers = include
        if b"from" not in include:
            raise dkim.ParameterError("The From header field MUST be signed")
        for x in set(include).intersection(self.should_not_sign):
            raise dkim.ParameterError(f"The {x!r} header field SHOULD NOT be signed")
        self.hasher = dkim.HASH_ALGORITHMS[self.signature_algorithm]
        fields = [(b"v", b"1"), (b"a", self.signature_algorithm),
                  (b"c", policy.to_c_value()), (b"d", domain), (b"i", b"@" + domain),
                  (b"q", b"dns/txt"), (b"s", selector),
                  (b"t", str(int(time.time())).encode("ascii")),
                  (b"h", b" : ".join(include)), (b"bh", self.body_hash), (b"b", b"0" * 60)]
        res = self.gen_header(fields, include, policy, b"DKIM-Signature", None)
        self.domain, self.selector, self.signature_fields = domain, selector, dict(fields)
        return b"DKIM-Signature: " + res

    def gen_header(
            self, fields, include_headers, canon_policy, header_name, pk,
            standardize=False):
        if self.body_hash is not None:  # in place: sign() keeps these fields afterwards
            fields[:] = [(k, self.body_hash if k == b"bh" else v) for k, v in fields]
        if self.rsa_key is None or self.signature_algorithm != b"rsa-sha256" or standardize:
            return super().gen_header(fields, include_headers, canon_policy, header_name, pk,
                                      standardize)
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = dkim.fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        header = (header_name, b" " + header_value)
        h = dkim.HashThrough(self.hasher(), self.debug_content)
        sig = dict(fields)
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(h, canon_policy, headers, include_headers,
                                                header, sig)
        sig2 = self.rsa_key.sign(h.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        idx = next(i for i in range(len(fields)) if fields[i][0] == b"b")
        fields[idx] = (b"b", base64.b64encode(bytes(sig2)))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep)


def generate_key(algorithm: str) -> bytes:
    """A new private key as PKCS#8 PEM (RSA: 2048 bits)."""
    if algorithm == "rsa-sha256":
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=MIN_RSA_BITS)
    elif algorithm == "ed25519-sha256":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ConfigError(f"unknown DKIM algorithm {algorithm!r}")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
