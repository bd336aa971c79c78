"""A SASL_SSL client listener for the managed cluster, beside its plaintext listeners.

``prepare`` writes, once per data dir, into ``DATA/security/`` (mode 0700)::

    ca.pem, ca.key             a private CA (the file clients set as ssl_cafile)
    client.pem, client.key     a client certificate for mutual TLS (ssl_certfile/ssl_keyfile)
    credentials.json           the SASL user and its generated password (mode 0600)
    kmta-kafka.toml            a ready ``[kafka]`` section for kmta's config

Broker certificates are issued on every start (the listener host may change) and go into
server.properties inline (PEM). The user is created as SCRAM-SHA-256 and SCRAM-SHA-512
credentials at format time (``kafka-storage format --add-scram``) and as a PLAIN user through
the listener's JAAS config, so all three mechanisms kmta supports can be used. The plaintext
listener stays for the inter-broker traffic, the controllers and the manager's readiness probe:
bind the cluster to a host that only trusted machines reach.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tomli_w

from ops.kafka import tls
from ops.kafka.layout import NodeSpec

__all__ = ["MECHANISMS", "ClientAuth", "Security", "prepare", "write_client_config"]

ClientAuth = Literal["none", "requested", "required"]
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
LISTENER = "SASL_SSL"


@dataclass(frozen=True)
class Security:
    dir: Path
    user: str
    password: str
    client_auth: ClientAuth
    ca: tls.KeyPair

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def scram_args(self) -> list[str]:
        """Arguments of ``kafka-storage format`` that create the SCRAM user."""
        out = []
        for mech in MECHANISMS[:2]:
            out += ["--add-scram", f"{mech}=[name={self.user},password={self.password}]"]
        return out

    def broker_properties(self, node: NodeSpec) -> dict[str, object]:
        """server.properties entries that add the SASL_SSL listener to ``node``."""
        assert node.sasl_port is not None
        broker = tls.issue(self.ca, f"kafka-{node.node_id}", sorted({node.host, "localhost"}),
                           server=True)
        pre = f"listener.name.{LISTENER.lower()}."
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                 f'user_{self.user}="{self.password}";')
        props: dict[str, object] = {
            "listeners": (f"PLAINTEXT://{node.host}:{node.port},"
                          f"CONTROLLER://{node.host}:{node.controller_port},"
                          f"{LISTENER}://{node.host}:{node.sasl_port}"),
            "advertised.listeners": (f"PLAINTEXT://{node.host}:{node.port},"
                                     f"{LISTENER}://{node.host}:{node.sasl_port}"),
            "listener.security.protocol.map": (
                f"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,{LISTENER}:{LISTENER}"),
            "sasl.enabled.mechanisms": ",".join(MECHANISMS),
            f"{pre}sasl.enabled.mechanisms": ",".join(MECHANISMS),
            f"{pre}scram-sha-512.sasl.jaas.config": scram,
            f"{pre}scram-sha-256.sasl.jaas.config": scram,
            f"{pre}plain.sasl.jaas.config": plain,
            f"{pre}ssl.keystore.type": "PEM",
            f"{pre}ssl.keystore.certificate.chain": _inline(broker.cert_pem + self.ca.cert_pem),
            f"{pre}ssl.keystore.key": _inline(broker.key_pem),
            f"{pre}ssl.truststore.type": "PEM",
            f"{pre}ssl.truststore.certificates": _inline(self.ca.cert_pem),
            f"{pre}ssl.client.auth": self.client_auth,
        }
        return props

    def client_settings(self, bootstrap: str, mechanism: str = "SCRAM-SHA-512") -> dict:
        """The ``[kafka]`` table a kmta config needs to use the SASL_SSL listener."""
        out: dict[str, object] = {
            "bootstrap_servers": bootstrap, "security_protocol": LISTENER,
            "sasl_mechanism": mechanism, "sasl_username": self.user,
            "sasl_password": self.password, "ssl_cafile": str(self.ca_file)}
        if self.client_auth != "none":
            out.update(ssl_certfile=str(self.client_cert), ssl_keyfile=str(self.client_key))
        return out


def prepare(data_dir: Path, user: str = "kmta", client_auth: ClientAuth = "none") -> Security:
    """Create (first time) or load the CA, client certificate and SASL credentials."""
    sdir = data_dir / "security"
    sdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    creds_file = sdir / "credentials.json"
    if creds_file.is_file():
        creds = json.loads(creds_file.read_text())
        ca = tls.load((sdir / "ca.pem").read_bytes(), (sdir / "ca.key").read_bytes())
    else:
        creds = {"user": user, "password": secrets.token_urlsafe(24)}
        ca = tls.make_ca("kmta local Kafka CA")
        client = tls.issue(ca, creds["user"], [], server=False)
        _write(sdir / "ca.key", ca.key_pem, secret=True)
        _write(sdir / "client.key", client.key_pem, secret=True)
        _write(sdir / "ca.pem", ca.cert_pem)
        _write(sdir / "client.pem", client.cert_pem)
        _write(creds_file, json.dumps(creds).encode(), secret=True)
    return Security(sdir, creds["user"], creds["password"], client_auth, ca)


def write_client_config(sec: Security, bootstrap: str) -> Path:
    path = sec.dir / "kmta-kafka.toml"
    _write(path, tomli_w.dumps({"kafka": sec.client_settings(bootstrap)}).encode(), secret=True)
    return path


def _inline(pem: bytes) -> str:
    r"""A PEM block as one properties value (``\n`` escapes, which java.util.Properties reads)."""
    return pem.decode().strip().replace("\n", "\\n")


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
