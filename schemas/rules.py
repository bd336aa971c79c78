"""The rules file: per-ISP sending, speed, retry and reply (locking) rules.

The shipped knowledge base (``kmta/data/isps.toml``), a local override file and live edits from the
control topic all have this shape; they are merged in that order (see ``kmta.policy.kb``).
Durations are seconds or strings such as ``"90s"``, ``"30m"``, ``"2h"``, ``"7d"``.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from schemas.base import Model

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: object) -> float:
    """``"30m"`` -> 1800.0; numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30m'")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"bad duration {value!r}: use seconds or e.g. '90s', '30m', '2h', '7d'")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class SendingRule(Model):
    """How one ISP may be sent to. Limits are for the whole ISP (all sender nodes together) per
    source IP; a node owning k of the ISP's n queue partitions gets a k/n share."""

    tact: Duration = Field(default=60.0, gt=0, description="the period that limits count in")
    connections_per_tact: int | None = Field(default=None, ge=1)
    max_connections: int = Field(default=5, ge=1, description="concurrent connections")
    messages_per_connection: int = Field(default=50, ge=1)
    timeout: Duration = Field(default=300.0, gt=0, description="time allowed for one sending")
    connect_timeout: Duration = Field(default=30.0, gt=0)
    idle_timeout: Duration = Field(default=5.0, ge=0, description="keep an idle connection open")
    tls: Literal["opportunistic", "required", "verify"] | None = Field(
        default=None, description="STARTTLS policy; default [delivery] tls")


class SpeedRule(Model):
    """Adaptive speed in messages per tact per source IP: found by the controller
    (kmta/policy/speed.py, docs/adaptive-speed.md); these fields only bound it."""

    min: float = Field(default=1.0, gt=0)
    max: float | None = Field(default=None, gt=0, description="an operator's explicit cap, "
                              "which always holds; None: no cap (the controller finds the "
                              "provider's limit, bounded by the connection limits)")
    start: float | None = Field(default=None, gt=0, description="first speed; default min")
    increase: float = Field(default=0.1, ge=0, description="unused since the probe-and-hold "
                            "controller (kept so that older rule files still load)")
    decrease: float = Field(default=0.7, gt=0, lt=1, description="unused since the "
                            "probe-and-hold controller (kept so that older rule files load)")
    adapt_every: Duration = Field(default=0.0, ge=0, description="decision period in "
                                  "seconds; 0 = 1 s (never the tact)")
    per_ip: bool = Field(default=True, description="a speed level per source IP (a throttle "
                         "on one IP lowers that IP only); false: one level shared by the IPs")
    ip_initial: float | None = Field(default=None, gt=0, description="the first speed of a "
                                     "source IP the ISP has no level for yet, held and probed "
                                     "from; default: the ISP's lowest IP level, else start")

    @model_validator(mode="after")
    def _bounds(self) -> SpeedRule:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"speed.min ({self.min}) is above speed.max ({self.max})")
        if self.start is not None and not (
                self.min <= self.start <= (self.max if self.max is not None else self.start)):
            raise ValueError(f"speed.start ({self.start}) is outside [min, max]")
        if self.ip_initial is not None and not (self.min <= self.ip_initial <= (
                self.max if self.max is not None else self.ip_initial)):
            raise ValueError(f"speed.ip_initial ({self.ip_initial}) is outside [min, max]")
        return self


class RetryRule(Model):
    """When to try a temporarily failed message again, and when to give up (expired)."""

    mode: Literal["fixed", "growing", "window"] = "growing"
    interval: Duration = Field(default=300.0, gt=0, description="fixed interval / first interval")
    factor: float = Field(default=2.0, ge=1.0, description="growing: interval multiplier")
    max_interval: Duration = Field(default=4 * 3600.0, gt=0, description="growing: cap")
    window: tuple[Duration, Duration] | None = Field(
        default=None, description="window: retry at a random moment between these delays"
    )
    jitter: float = Field(default=0.0, ge=0, le=1, description="fixed/growing: +- share")
    max_attempts: int | None = Field(default=None, ge=1)
    max_age: Duration | None = Field(default=3 * 86400.0, gt=0)

    @model_validator(mode="after")
    def _window(self) -> RetryRule:
        if self.mode == "window":
            if self.window is None:
                raise ValueError("retry mode 'window' needs window = [from, to]")
            if self.window[0] > self.window[1]:
                raise ValueError("retry window: from is after to")
        if self.max_attempts is None and self.max_age is None:
            raise ValueError("retry needs max_attempts or max_age, or messages never expire")
        return self


Action = Literal["lock", "throttle", "bounce", "defer", "ok"]


class ReplyRule(Model):
    """A provider reply pattern and what it deserves. ``match`` is a regex searched in
    ``"<code> <enhanced_code> <text>"``; ``internal`` rules match only replies kmta made up."""

    name: str = Field(min_length=1)
    match: str = Field(min_length=1)
    action: Action
    duration: Duration | None = None
    threshold: int = Field(default=1, ge=1, description="matches needed within `within`")
    within: Duration = Field(default=600.0, gt=0)
    scope: Literal["isp", "source_ip", "pool"] = Field(
        default="isp", description="what a lock stops: the ISP, the replying source IP, or "
        "every source IP of the message's pool")
    rate: float | None = Field(default=None, gt=0, description="throttle: speed cap per tact")
    max_connections: int | None = Field(default=None, ge=1)
    category: str | None = None
    internal: bool = False
    source: str | None = Field(default=None, description="public source of this fact")

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"bad regex {v!r}: {e}") from None
        return v

    @model_validator(mode="after")
    def _needs_duration(self) -> ReplyRule:
        if self.action in ("lock", "throttle") and not self.duration:
            raise ValueError(f"reply rule {self.name!r}: action {self.action} needs a duration")
        return self


class PoolRule(Model):
    """Rules narrowed to one source-IP pool (``[isp.<name>.pools.<pool>]``, or
    ``[default.pools.<pool>]`` for every ISP): merged over the ISP's rule for messages sent
    from that pool, e.g. a warm-up pool of new IPs with a lower ``speed.max``."""

    sending: SendingRule | None = None
    speed: SpeedRule | None = None
    retry: RetryRule | None = None
    replies: list[ReplyRule] = Field(default_factory=list)
    comment: str | None = None


class IspRule(Model):
    """Everything known about one ISP. Unset sections fall back to ``[default]``."""

    mx: list[str] = Field(default_factory=list, description="glob patterns on MX host names")
    domains: list[str] = Field(default_factory=list)
    partitions: int | None = Field(default=None, ge=1, le=64)
    sending: SendingRule | None = None
    speed: SpeedRule | None = None
    retry: RetryRule | None = None
    replies: list[ReplyRule] = Field(default_factory=list)
    pools: dict[str, PoolRule] = Field(default_factory=dict, description="narrowed per pool")
    comment: str | None = None


class RulesFile(Model):
    """A whole rules file: ``[default]`` plus ``[isp.<name>]`` tables."""

    default: IspRule | None = None
    isp: dict[str, IspRule] = Field(default_factory=dict)
