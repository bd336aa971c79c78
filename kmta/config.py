"""Typed configuration, loaded once at the entry point and passed down.

TOML file given by ``--config`` or ``KMTA_CONFIG`` (read only by the CLI); every key has a default
so that the embedded defaults run the local demo.
"""
from __future__ import annotations

import ipaddress
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from kmta.errors import ConfigError
from schemas.base import Model, explain

TlsLevel = Literal["opportunistic", "required", "verify"]


class KafkaConfig(Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "kmta."
    queue_partitions: int = Field(default=48, ge=1, description="partitions of the queue topic")
    partitions: int = Field(default=8, ge=1, description="partitions of the other topics")
    replication_factor: int = Field(default=1, ge=1)
    delay_tiers: list[float] = Field(default=[1, 5, 30, 120, 600, 3600])
    compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = Field(
        default="lz4", description="producer batch compression of every kmta producer (the "
        "brokers store batches as written: topics are created with compression.type=producer)")
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
    # how long a failed lookup (timeout, SERVFAIL, no reachable nameserver) is remembered: the
    # domain's next messages defer at once instead of each waiting `timeout` again
    failure_ttl: float = 30.0

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
    allow_special: list[str] = Field(default_factory=list, description=(
        "special-use networks (loopback, RFC 1918, link-local, ...; kmta.policy.destinations) "
        "that may still be delivered to when allowed_networks holds them; empty: none"))
    helo_name: str = "kmta.localhost"
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    unsigned: Literal["allow", "refuse"] = Field(
        default="refuse", description="mail whose From domain has no [[domains]] entry (or no "
        "key valid now): sent unsigned, or refused at routing")
    tls: TlsLevel = Field(default="opportunistic", description="STARTTLS policy of ISPs whose "
                          "rule sets none (sending.tls)")
    tls_ca_file: str | None = Field(default=None, description="PEM bundle trusted for "
                                    "'verify' and MTA-STS instead of the system's")
    pipelining: bool = Field(default=True, description=(
        "PIPELINING (RFC 2920) and CHUNKING/BDAT (RFC 3030) where the server offers them: one "
        "or two round trips per message; false: one command per round trip (the lock-step "
        "client, for comparison)"))
    mta_sts: bool = Field(default=True, description="look up and obey MTA-STS (RFC 8461)")
    mta_sts_port: int = Field(default=443, ge=1, le=65535, description="HTTPS port of "
                              "mta-sts.<domain> (tests only change it)")
    verp_secret: SecretStr | None = Field(
        default=None, description="HMAC key of VERP tokens (kmta/policy/verp.py); needed "
        "when a domain has a return_path")

    @field_validator("allowed_networks", "allow_special")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        for net in v:
            ipaddress.ip_network(net, strict=False)
        return v

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]

    def special_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allow_special]


class DkimKeyConfig(Model):
    """One DKIM selector of a sending domain; PEM key as openssl writes it."""

    selector: str = Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*$")
    key_file: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    not_before: datetime | None = Field(default=None, description="signs from this time on")
    not_after: datetime | None = Field(default=None, description="signs until this time")

    @model_validator(mode="after")
    def _window(self) -> DkimKeyConfig:
        for name in ("not_before", "not_after"):
            v = getattr(self, name)
            if v is not None and v.tzinfo is None:
                setattr(self, name, v.replace(tzinfo=UTC))
        if self.not_before and self.not_after and self.not_after <= self.not_before:
            raise ValueError(f"selector {self.selector}: not_after is not after not_before")
        return self

    def window(self) -> tuple[float | None, float | None]:
        """``(not_before, not_after)`` as epoch seconds (None: open)."""
        return (self.not_before.timestamp() if self.not_before else None,
                self.not_after.timestamp() if self.not_after else None)


class DomainConfig(Model):
    """A sending domain: the From domain (or a parent of it), its return path and DKIM keys."""

    name: str = Field(min_length=1, max_length=253)
    return_path: str | None = Field(default=None, description="envelope sender domain (VERP); "
                                    "default: the From address unchanged")
    dkim: list[DkimKeyConfig] = Field(default_factory=list)
    platform: bool = Field(default=False, description="these keys also sign every other "
                           "domain's mail (a second signature, d= this domain)")
    feedback_sender: str | None = Field(default=None, max_length=64, description="SenderId "
                                        "part of Feedback-ID; default: the domain name")

    @field_validator("name", "return_path")
    @classmethod
    def _lower(cls, v: str | None) -> str | None:
        return v.strip().rstrip(".").lower() if v is not None else None


class PoolConfig(Model):
    name: str
    source_ips: list[str] = Field(min_length=1)
    warmup: dict[str, date] = Field(
        default_factory=dict, description="new source IPs of this pool -> the UTC day their "
        "warm-up started: each follows the warm-up schedule of every ISP (kmta/data/"
        "warmup.toml); remove an IP to end its warm-up")

    @field_validator("source_ips")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        for ip in v:
            ipaddress.ip_address(ip)
        return v

    @model_validator(mode="after")
    def _warm_ips(self) -> PoolConfig:
        stray = set(self.warmup) - set(self.source_ips)
        if stray:
            raise ValueError(f"pool {self.name}: warmup lists IPs not in source_ips: "
                             f"{sorted(stray)}")
        return self


class WarmupConfig(Model):
    schedules: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="schedule tables replacing the shipped ones by ISP "
        "name ('default' for the others): {daily = [caps of day 1, 2, ...], hourly = share}")


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
    dedup_memory_ids: int = Field(
        default=1 << 17, ge=0,
        description="accepted ids kept in memory (~24 B each); the older ones within "
                    "dedup_window wait in a file of data_dir, looked up when memory misses; "
                    "0 keeps them all in memory (no file)")


class ControlConfig(Model):
    secret: SecretStr | None = Field(
        default=None, description="HMAC key; when set, workers apply only signed commands"
    )
    max_age: float = Field(default=300.0, gt=0, description="seconds a command's timestamp may "
                           "be from the worker's clock (replayed old commands are refused)")


class MetricsConfig(Model):
    listen: str | None = Field(
        default=None, description='"host:port" for Prometheus /metrics; unset = not served')

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is not None:
            _, _, port = v.rpartition(":")
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"listen {v!r} must be host:port")
        return v


class LogConfig(Model):
    format: Literal["text", "json"] = Field(
        default="text", description="text lines, or one JSON object per line (time, level, "
        "logger, message, kind, node, isp and message_id where known); --log-format wins")


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


class InboundConfig(Model):
    """``kmta inbound``: the SMTP receiver of the return-path domains (bounces, FBL reports,
    mailto unsubscribes)."""

    listen: str = Field(default="127.0.0.1:2525", description='"host:port"')
    hostname: str = Field(default="kmta-inbound.localhost", description="the 220 greeting's name")
    domains: list[str] = Field(default_factory=list, description="accepted besides every "
                               "[[domains]] return_path (e.g. the address registered for "
                               "feedback loops, if on another domain)")
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    unsubscribe_local: str = Field(default="unsubscribe", description="local part of the "
                                   "mailto unsubscribe address on each return_path domain")

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"listen {v!r} must be host:port")
        return v

    @field_validator("domains")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [d.strip().rstrip(".").lower() for d in v]

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class UnsubscribeConfig(Model):
    """One-click unsubscribe (RFC 8058): ``kmta unsubscribe`` and the URLs routing adds to
    campaign mail that brings no List-Unsubscribe of its own."""

    listen: str = Field(default="127.0.0.1:8025", description='"host:port" of the HTTP server '
                        "(behind the TLS proxy that serves base_url)")
    base_url: str | None = Field(default=None, pattern=r"^https://[^/?#]+(/[^?#]*)?$",
                                 description="public https URL of kmta unsubscribe; when set "
                                 "(with secret), campaign mail gets signed one-click URLs")
    secret: SecretStr | None = Field(default=None, description="HMAC key of the tokens")
    mailto: bool = Field(default=True, description="also a mailto: unsubscribe address on the "
                         "sending domain's return_path (handled by kmta inbound)")
    scope: Literal["campaign", "domain", "global"] = Field(
        default="campaign", description="what an unsubscribe suppresses: the list (campaign) "
        "of the message, all mail from its sending domain (the [[domains]] entry of its From "
        "domain), or all mail to the address; a token without that list or domain (older "
        "links) suppresses globally")

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ReputationConfig(Model):
    """The complaint-rate rule of the brain (kmta/policy/reputation.py): a campaign or sending
    domain whose complaint rate at an ISP passes its limit over 24 h is held there until an
    operator releases it (``kmta resume ISP --hold campaign:<c>``)."""

    enabled: bool = True
    complaint_limits: dict[str, float] = Field(
        default_factory=lambda: {"gmail": 0.003, "yahoo": 0.003, "default": 0.003},
        description="complaints per delivered message, by ISP; 'default' for the others "
        "(Gmail and Yahoo sender guidelines: under 0.3 %)")
    min_delivered: int = Field(default=1000, ge=1, description="delivered in the window "
                               "before a rate is judged")
    recheck: float = Field(default=300.0, gt=0, description="seconds a held message waits "
                           "on the delay topic before it is checked again")


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
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    domains: list[DomainConfig] = Field(default_factory=list)
    inbound: InboundConfig = InboundConfig()
    unsubscribe: UnsubscribeConfig = UnsubscribeConfig()
    reputation: ReputationConfig = ReputationConfig()
    warmup: WarmupConfig = WarmupConfig()
    data_dir: str = ".kmta"

    @model_validator(mode="after")
    def _domains(self) -> Config:
        names = [d.name for d in self.domains]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"[[domains]] listed more than once: {sorted(dup)}")
        if sum(d.platform for d in self.domains) > 1:
            raise ValueError("only one of [[domains]] may be the platform domain")
        for d in self.domains:
            sels = [k.selector for k in d.dkim]
            if len(set(sels)) != len(sels):
                raise ValueError(f"domain {d.name}: a selector is listed twice")
        if any(d.return_path for d in self.domains) and self.delivery.verp_secret is None:
            raise ValueError("delivery.verp_secret must be set when a domain has a return_path")
        if self.unsubscribe.base_url and self.unsubscribe.secret is None:
            raise ValueError("unsubscribe.secret must be set with unsubscribe.base_url")
        return self

    def return_path_domains(self) -> frozenset[str]:
        """Every domain kmta inbound accepts mail for."""
        return frozenset({d.return_path for d in self.domains if d.return_path}
                         | set(self.inbound.domains))

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
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {explain(e, '')}") from None
    base = Path(path).resolve().parent
    for d in config.domains:  # key files relative to the config file, not the cwd
        for k in d.dkim:
            k.key_file = str(base / k.key_file)
    return config

