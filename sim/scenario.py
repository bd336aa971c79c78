"""Scenarios: which simulated providers run, on which loopback IPs, hosting which domains.

A scenario (TOML file or dict) lists providers; each provider's domains get MX records in the sim
DNS zone pointing at the MX host names the real provider uses (``gmail.com`` →
``gmail-smtp-in.l.google.com``), whose A records are the sim's loopback address. That is safe
because the MTA under test resolves through the sim DNS server only; it also exercises kmta's MX
rollup (hotmail.com and outlook.com have different MX names under one provider suffix).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmta.errors import ConfigError
from sim.behaviour import ProviderBehaviour
from sim.dns import DnsServer, Zone
from sim.eventlog import EventLog
from sim.net import require_loopback
from sim.smtp import ProviderSim

__all__ = [
    "DEFAULT_SCENARIO_TOML",
    "ProviderSpec",
    "RunningScenario",
    "Scenario",
    "default_scenario",
    "load_scenario",
    "mx_hosts_for",
    "run_scenario",
]

# Real MX host names per domain (preference, host); equal preferences are shuffled by senders.
KNOWN_MX: dict[str, list[tuple[int, str]]] = {
    "gmail.com": [(5, "gmail-smtp-in.l.google.com"), (10, "alt1.gmail-smtp-in.l.google.com")],
    "googlemail.com": [(5, "gmail-smtp-in.l.google.com"), (10, "alt1.gmail-smtp-in.l.google.com")],
    "yahoo.com": [
        (1, "mta5.am0.yahoodns.net"),
        (1, "mta6.am0.yahoodns.net"),
        (1, "mta7.am0.yahoodns.net"),
    ],
    "ymail.com": [(1, "mta5.am0.yahoodns.net"), (1, "mta6.am0.yahoodns.net")],
    "aol.com": [(1, "mx-aol.mail.gm0.yahoodns.net")],
    "outlook.com": [(5, "outlook-com.olc.protection.outlook.com")],
    "hotmail.com": [(2, "hotmail-com.olc.protection.outlook.com")],
    "live.com": [(2, "live-com.olc.protection.outlook.com")],
    "mail.ru": [(10, "mxs.mail.ru")],
    "bk.ru": [(10, "mxs.mail.ru")],
    "inbox.ru": [(10, "mxs.mail.ru")],
    "list.ru": [(10, "mxs.mail.ru")],
    "yandex.ru": [(10, "mx.yandex.ru")],
    "yandex.com": [(10, "mx.yandex.net")],
    "ya.ru": [(10, "mx.yandex.ru")],
    "orange.fr": [(10, "smtp-in.orange.fr")],
    "wanadoo.fr": [(10, "smtp-in.orange.fr")],
}

# MX names for other domains hosted by a profile (e.g. a Google Workspace domain).
PROFILE_MX: dict[str, str] = {
    "gmail": "aspmx.l.google.com",
    "yahoo": "mta5.am0.yahoodns.net",
    "mailru": "mxs.mail.ru",
    "yandex": "mx.yandex.net",
    "orange": "smtp-in.orange.fr",
}


def mx_hosts_for(domain: str, profile: str) -> list[tuple[int, str]]:
    """MX records a simulated ``domain`` hosted by ``profile`` gets."""
    domain = domain.lower().rstrip(".")
    if domain in KNOWN_MX:
        return list(KNOWN_MX[domain])
    if profile == "outlook":  # Office 365 tenants: <domain-with-dashes>.mail.protection...
        return [(0, domain.replace(".", "-") + ".mail.protection.outlook.com")]
    if profile in PROFILE_MX:
        return [(10, PROFILE_MX[profile])]
    return [(10, f"mx.{domain}")]


@dataclass
class ProviderSpec:
    """One simulated provider: listen IP, hosted domains (MX), A-only domains (implicit MX)."""

    name: str
    ip: str
    domains: list[str] = field(default_factory=list)
    implicit_mx_domains: list[str] = field(default_factory=list)
    behaviour: ProviderBehaviour = field(default_factory=ProviderBehaviour)

    @property
    def profile(self) -> str:
        return self.behaviour.profile

    @property
    def mx_host(self) -> str:
        """The host name the sim greets with: its first domain's primary MX."""
        if self.domains:
            return sorted(mx_hosts_for(self.domains[0], self.profile))[0][1]
        if self.implicit_mx_domains:
            return self.implicit_mx_domains[0]
        return f"mx.{self.name}.sim.test"


@dataclass
class Scenario:
    providers: list[ProviderSpec]
    null_mx: list[str] = field(default_factory=list)
    servfail: list[str] = field(default_factory=list)
    nxdomain: list[str] = field(default_factory=list)  # documentation: any unknown name is NX
    ttl: int = 60
    txt: dict[str, list[str]] = field(default_factory=dict)  # [dns.txt] name -> values (DKIM)

    def __post_init__(self) -> None:
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate provider names in {names}")
        owner: dict[str, str] = {}
        for p in self.providers:
            require_loopback(p.ip, f"provider {p.name} ip")
            for d in [*p.domains, *p.implicit_mx_domains]:
                d = d.lower()
                if d in owner:
                    raise ConfigError(f"domain {d} is hosted by both {owner[d]} and {p.name}")
                owner[d] = p.name
        clash = set(owner) & {d.lower() for d in [*self.null_mx, *self.servfail, *self.nxdomain]}
        if clash:
            raise ConfigError(f"special domains also hosted by a provider: {sorted(clash)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """``{"dns": {...}, "provider": [{"name", "ip", "profile", "domains", ...}]}``."""
        unknown = set(data) - {"dns", "provider"}
        if unknown:
            raise ConfigError(f"unknown scenario keys {sorted(unknown)}")
        dns_conf = dict(data.get("dns", {}))
        bad = set(dns_conf) - {"ttl", "null_mx", "servfail", "nxdomain", "txt"}
        if bad:
            raise ConfigError(f"unknown [dns] keys {sorted(bad)}")
        providers = []
        for entry in data.get("provider", []):
            entry = dict(entry)
            try:
                name, ip = entry.pop("name"), entry.pop("ip")
            except KeyError as e:
                raise ConfigError(f"provider entry without {e.args[0]!r}: {entry}") from None
            domains = list(entry.pop("domains", []))
            implicit = list(entry.pop("implicit_mx_domains", []))
            behaviour = dict(entry.pop("behaviour", {}))
            if "profile" in entry:
                behaviour["profile"] = entry.pop("profile")
            if entry:
                raise ConfigError(f"provider {name}: unknown keys {sorted(entry)}")
            providers.append(
                ProviderSpec(name, ip, domains, implicit, ProviderBehaviour.from_dict(behaviour))
            )
        return cls(
            providers=providers,
            null_mx=list(dns_conf.get("null_mx", [])),
            servfail=list(dns_conf.get("servfail", [])),
            nxdomain=list(dns_conf.get("nxdomain", [])),
            ttl=int(dns_conf.get("ttl", 60)),
            txt={str(k): [str(v) for v in (vs if isinstance(vs, list) else [vs])]
                 for k, vs in dict(dns_conf.get("txt", {})).items()},
        )

    @classmethod
    def from_toml(cls, text: str) -> Scenario:
        try:
            return cls.from_dict(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"scenario TOML: {e}") from None

    def zone(self) -> Zone:
        """The DNS zone: MX per hosted domain, A per MX host and per implicit-MX domain."""
        records: dict[str, dict[str, list[Any]]] = {}

        def add_a(host: str, ip: str) -> None:
            a = records.setdefault(host, {}).setdefault("a", [])
            if ip not in a:
                a.append(ip)

        for p in self.providers:
            for domain in p.domains:
                mx = mx_hosts_for(domain, p.profile)
                records.setdefault(domain.lower(), {})["mx"] = mx
                for _, host in mx:
                    add_a(host, p.ip)
            for domain in p.implicit_mx_domains:
                add_a(domain.lower(), p.ip)
        for name, values in self.txt.items():
            records.setdefault(name.lower(), {})["txt"] = list(values)
        return Zone(records, set(self.null_mx), set(self.servfail), self.ttl)

    def domains(self) -> dict[str, str]:
        """Hosted domain → provider name."""
        return {
            d.lower(): p.name for p in self.providers for d in [*p.domains, *p.implicit_mx_domains]
        }


def load_scenario(source: Scenario | dict[str, Any] | str | Path | None) -> Scenario:
    """A scenario from an object, a dict, a TOML file path, or ``None`` (the default demo)."""
    if source is None:
        return default_scenario()
    if isinstance(source, Scenario):
        return source
    if isinstance(source, dict):
        return Scenario.from_dict(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read scenario {path}: {e}") from None
    return Scenario.from_toml(text)


DEFAULT_SCENARIO_TOML = """
# kmta isp-sim default demo scenario. Capacities are accepted messages per second per source IP.
# Senders that keep pushing through throttle replies get blocked for block_duration seconds.

[dns]
ttl = 60
nxdomain = ["nx.invalid"]        # any name not listed here answers NXDOMAIN
null_mx = ["nullmx.test"]        # RFC 7505 "MX 0 ." : accepts no mail
servfail = ["servfail.test"]     # DNS failure: temporary

[[provider]]
name = "gmail"
profile = "gmail"
ip = "127.0.1.1"
domains = ["gmail.com", "googlemail.com"]
[provider.behaviour]
capacity = 40
max_connections = 10
messages_per_connection = 100
block_after = 40
block_window = 60
block_duration = 120

[[provider]]
name = "yahoo"
profile = "yahoo"
ip = "127.0.1.2"
domains = ["yahoo.com", "ymail.com", "aol.com"]
[provider.behaviour]
capacity = 25
max_connections = 8
messages_per_connection = 20
block_after = 25
block_window = 60
block_duration = 300

[[provider]]
name = "outlook"
profile = "outlook"
ip = "127.0.1.3"
domains = ["outlook.com", "hotmail.com", "live.com"]
[provider.behaviour]
capacity = 30
max_connections = 10
messages_per_connection = 50
block_after = 30
block_window = 60
block_duration = 180

[[provider]]
name = "mailru"
profile = "mailru"
ip = "127.0.1.4"
domains = ["mail.ru", "bk.ru", "inbox.ru", "list.ru"]
[provider.behaviour]
capacity = 10
max_connections = 2
messages_per_connection = 10
block_after = 15
block_window = 60
block_duration = 300

[[provider]]
name = "yandex"
profile = "yandex"
ip = "127.0.1.5"
domains = ["yandex.ru", "ya.ru"]
[provider.behaviour]
capacity = 20
max_connections = 5
messages_per_connection = 50
block_after = 25
block_window = 60
block_duration = 300

[[provider]]
name = "orange"
profile = "orange"
ip = "127.0.1.6"
domains = ["orange.fr", "wanadoo.fr"]
[provider.behaviour]
capacity = 15
max_connections = 2
messages_per_connection = 100
block_after = 20
block_window = 60
block_duration = 300

[[provider]]
name = "smallhosts"
profile = "generic"
ip = "127.0.1.10"
domains = ["shop-example.test", "news-example.test", "club-example.test"]
implicit_mx_domains = ["implicit-mx.test"]
[provider.behaviour]
capacity = 500
max_connections = 50

[[provider]]
name = "greylister"
profile = "generic"
ip = "127.0.1.11"
domains = ["greylist-example.test"]
[provider.behaviour]
capacity = 100
greylist_seconds = 30
"""


def default_scenario() -> Scenario:
    return Scenario.from_toml(DEFAULT_SCENARIO_TOML)


class RunningScenario:
    """The DNS server and provider sims of a started scenario."""

    def __init__(
        self, scenario: Scenario, dns: DnsServer, sims: dict[str, ProviderSim], log: EventLog
    ) -> None:
        self.scenario = scenario
        self.dns = dns
        self.sims = sims
        self.log = log

    @property
    def dns_address(self) -> tuple[str, int]:
        return self.dns.host, self.dns.port

    @property
    def smtp_port(self) -> int:
        return next(iter(self.sims.values())).port if self.sims else 0

    def stats(self) -> dict[str, Any]:
        """Per provider: listen address, domains, totals and counters per source IP."""
        out: dict[str, Any] = {}
        for spec in self.scenario.providers:
            sim = self.sims[spec.name]
            out[spec.name] = {
                "ip": spec.ip,
                "port": sim.port,
                "profile": spec.profile,
                "domains": [*spec.domains, *spec.implicit_mx_domains],
                "totals": sim.totals(),
                "sources": sim.stats(),
            }
        return out

    def describe(self) -> list[str]:
        host, port = self.dns_address
        lines = [f"dns      {host}:{port} (udp+tcp), ttl {self.scenario.ttl}"]
        for spec in self.scenario.providers:
            b = spec.behaviour
            limits = ", ".join(
                f"{k}={v}"
                for k, v in dataclasses.asdict(b).items()
                if k
                in (
                    "capacity",
                    "max_connections",
                    "messages_per_connection",
                    "block_after",
                    "greylist_seconds",
                )
                and v is not None
            )
            lines.append(
                f"{spec.name:<10} {spec.ip}:{self.sims[spec.name].port} [{spec.profile}] "
                f"{' '.join([*spec.domains, *spec.implicit_mx_domains])} ({limits})"
            )
        lines.append(
            f"special  nxdomain={','.join(self.scenario.nxdomain) or '-'} "
            f"null_mx={','.join(self.scenario.null_mx) or '-'} "
            f"servfail={','.join(self.scenario.servfail) or '-'}"
        )
        return lines

    async def stop(self) -> None:
        await asyncio.gather(*(sim.stop() for sim in self.sims.values()))
        await self.dns.stop()
        self.log.close()


async def run_scenario(
    scenario: Scenario | dict[str, Any] | str | Path | None = None,
    dns_port: int = 5353,
    smtp_port: int = 2525,
    log_path: str | Path | None = None,
    dns_host: str = "127.0.0.1",
) -> RunningScenario:
    """Start the DNS server and every provider sim; port 0 picks free ports (SMTP: one shared)."""
    sc = load_scenario(scenario)
    log = EventLog(log_path)
    dns = DnsServer(sc.zone(), dns_host, dns_port)
    sims: dict[str, ProviderSim] = {}
    try:
        await dns.start()
        for spec in sc.providers:
            sim = ProviderSim(
                spec.name, spec.behaviour, spec.ip, smtp_port, mx_host=spec.mx_host, log=log
            )
            await sim.start()
            smtp_port = sim.port  # port 0: the first free port becomes everyone's port
            sims[spec.name] = sim
    except BaseException:
        await asyncio.gather(*(s.stop() for s in sims.values()))
        await dns.stop()
        log.close()
        raise
    return RunningScenario(sc, dns, sims, log)
