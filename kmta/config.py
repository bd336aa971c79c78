"""Typed configuration, loaded once at the entry point and passed down.

TOML file given by ``--config`` or ``KMTA_CONFIG`` (read only by the CLI); every key has a default
so that the embedded defaults run the local demo.
"""
from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from kmta.errors import ConfigError
from schemas.base import Model


class KafkaConfig(Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "kmta."
    queue_partitions: int = Field(default=48, ge=1, description="partitions of the queue topic")
    partitions: int = Field(default=8, ge=1, description="partitions of the other topics")
    replication_factor: int = Field(default=1, ge=1)
    delay_tiers: list[float] = Field(default=[1, 5, 30, 120, 600, 3600])
    # Security: every Kafka client of kmta (faust, aiokafka, admin) gets these through
    # kmta.pipeline.kafkaio.client_options / faust_credentials, built once per process.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = Field(default=None, description="CA bundle (PEM); none = system CAs")
    ssl_certfile: str | None = Field(default=None, description="client certificate (PEM)")
    ssl_keyfile: str | None = Field(default=None, description="its private key (PEM)")
    ssl_keyfile_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _security(self) -> KafkaConfig:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if sasl:
            missing = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password")
                       if not getattr(self, n)]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs "
                                 f"{', '.join(missing)}")
        else:  # set but unused would send in the clear what the operator meant to protect
            given = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password")
                     if getattr(self, n) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} set but security_protocol is "
                                 f"{self.security_protocol} (use SASL_SSL or SASL_PLAINTEXT)")
        if not tls:
            given = [n for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile",
                                 "ssl_keyfile_password") if getattr(self, n) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} set but security_protocol is "
                                 f"{self.security_protocol} (use SSL or SASL_SSL)")
        if (self.ssl_keyfile or self.ssl_keyfile_password) and not self.ssl_certfile:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        return self


class DnsConfig(Model):
    nameservers: list[str] = Field(default_factory=list, description='"host:port"; empty = system')
    timeout: float = 3.0
    cache_size: int = 100_000
    negative_ttl: float = 300.0

    @field_validator("nameservers")
    @classmethod
    def _hostport(cls, v: list[str]) -> list[str]:
        for ns in v:
            host, _, port = ns.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"nameserver {ns!r} must be host:port")
            ipaddress.ip_address(host.strip("[]"))
        return v


class DeliveryConfig(Model):
    smtp_port: int = Field(default=25, ge=1, le=65535)
    allowed_networks: list[str] = Field(default=["127.0.0.0/8"])
    helo_name: str = "kmta.localhost"
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    require_tls: bool = False
    start_tls: bool = Field(default=False, description="use STARTTLS when offered")

    @field_validator("allowed_networks")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        for net in v:
            ipaddress.ip_network(net, strict=False)
        return v

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]


class PoolConfig(Model):
    name: str
    source_ips: list[str] = Field(min_length=1)

    @field_validator("source_ips")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        for ip in v:
            ipaddress.ip_address(ip)
        return v


class RulesConfig(Model):
    override: str | None = Field(default=None, description="local rules file merged over shipped")


class SenderConfig(Model):
    node: str | None = Field(default=None, description="node name; default host-pid")
    max_in_flight: int = Field(default=2000, ge=1, description="messages held per node")
    isp_backlog: int = Field(default=500, ge=1, description="messages held per ISP before parking")


class WorkerConfig(Model):
    name: str | None = None
    store: str = "memory://"
    router_concurrency: int = Field(default=32, ge=1)
    dedup_window: float = Field(
        default=24 * 3600.0, ge=0,
        description="seconds an accepted message id stays taken (a second message with it is "
                    "dead-lettered as a duplicate); 0 turns the check off")
    web_port: int = 6066


class ControlConfig(Model):
    secret: SecretStr | None = Field(
        default=None, description="HMAC key; when set, workers apply only signed commands"
    )


class DashboardConfig(Model):
    host: str = "127.0.0.1"
    port: int = 8050
    password: SecretStr | None = None
    mode: Literal["demo", "production"] = "production"
    proxy_hops: int = Field(default=0, ge=0, le=5, description=(
        "reverse proxies in front whose X-Forwarded-For/-Proto headers are trusted"))
    secure_cookie: Literal["auto", "always"] = Field(default="auto", description=(
        "auto: the session cookie is Secure on HTTPS requests; always: on every request"))
    login_attempts: int = Field(default=5, ge=1, description="failed sign-ins per address...")
    login_window_seconds: float = Field(default=60.0, gt=0, description="...in this window")
    session_idle_seconds: float = Field(default=8 * 3600.0, gt=0)
    session_max_seconds: float = Field(default=24 * 3600.0, gt=0)
    threads: int = Field(default=8, ge=1, description="WSGI server worker threads")


class Config(Model):
    kafka: KafkaConfig = KafkaConfig()
    dns: DnsConfig = DnsConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    pools: list[PoolConfig] = Field(default_factory=list)
    rules: RulesConfig = RulesConfig()
    sender: SenderConfig = SenderConfig()
    worker: WorkerConfig = WorkerConfig()
    dashboard: DashboardConfig = DashboardConfig()
    control: ControlConfig = ControlConfig()
    data_dir: str = ".kmta"

    def topic(self, name: str) -> str:
        return f"{self.kafka.topic_prefix}{name}"

    def pool(self, name: str | None) -> PoolConfig | None:
        for p in self.pools:
            if p.name == (name or "default"):
                return p
        return self.pools[0] if self.pools and name is None else None


def load_config(path: str | Path | None) -> Config:
    """Read a TOML config; ``None`` gives the embedded defaults."""
    if path is None:
        return Config()
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_explain(e)}") from None


def _explain(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
