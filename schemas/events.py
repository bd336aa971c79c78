"""Delivery events (results topic) and dead letters (dlq topic)."""
from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field

from schemas.base import Model


class Status(str, Enum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    DEFERRED = "deferred"
    QUEUED = "queued"


FINAL_STATUSES = frozenset(s for s in Status if s not in (Status.DEFERRED, Status.QUEUED))


class TlsInfo(Model):
    """The TLS session a message went over (absent: plain SMTP)."""

    version: str | None = Field(default=None, description="e.g. TLSv1.3")
    cipher: str | None = None
    verified: bool = Field(default=False, description="chain and MX host name checked")


class DeliveryEvent(Model):
    """One event per delivery attempt or decision; every accepted id ends with exactly one final."""

    id: str
    to: str
    isp: str | None = None
    domain: str | None = None
    status: Status
    final: bool
    attempt: int = 0
    code: int | None = None
    enhanced_code: str | None = None
    response: str = ""
    category: str | None = None
    internal: bool = Field(default=False, description="reply made up by kmta, not the provider")
    mx: str | None = None
    source_ip: str | None = None
    pool: str | None = None
    node: str | None = None
    timestamp: float = Field(description="epoch seconds")
    accepted_at: float | None = None
    next_attempt_at: float | None = None
    campaign: str | None = None
    meta: dict[str, Any] | None = None
    sender: str | None = Field(default=None, description="the envelope sender (MAIL FROM): "
                               "b+TOKEN@<return_path> when the From domain has one (VERP)")
    size: int | None = None
    tls: TlsInfo | None = Field(default=None, description="absent or null when sent plain")
    dkim: list[str] | None = Field(
        default=None, description="queued events: the DKIM signatures added "
        "(selector._domainkey.domain); absent: unsigned")


class DeadLetter(Model):
    """What could not be read at all: the reason and the original bytes (utf-8, or base64)."""

    reason: str
    topic: str
    partition: int
    offset: int
    timestamp: float
    original: str
    original_encoding: str = "utf-8"
    id: str | None = None
