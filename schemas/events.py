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
    # feedback after the final event (kmta inbound, kmta unsubscribe): never final, and they
    # do not change the message's outcome
    ASYNC_BOUNCE = "async_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


FEEDBACK_STATUSES = frozenset({Status.ASYNC_BOUNCE, Status.COMPLAINT, Status.UNSUBSCRIBE})
FINAL_STATUSES = frozenset(s for s in Status if s not in (Status.DEFERRED, Status.QUEUED)
                           and s not in FEEDBACK_STATUSES)


class TlsInfo(Model):
    """The TLS session a message went over (absent: plain SMTP)."""

    version: str | None = Field(default=None, description="e.g. TLSv1.3")
    cipher: str | None = None
    verified: bool = Field(default=False, description="chain and MX host name checked")


class FeedbackInfo(Model):
    """What a feedback event (``async_bounce``, ``complaint``, ``unsubscribe``) was read from."""

    tied_by: str = Field(description="how it was tied to the message: verp, x-kmta-id, "
                         "message-id or token (unsubscribe)")
    hard: bool = Field(default=False, description="the address was suppressed for it")
    feedback_type: str | None = Field(default=None, description="ARF Feedback-Type (RFC 5965)")
    source: str | None = Field(default=None, description="who reported it (ARF User-Agent or "
                               "Reporting-MTA)")
    source_ip: str | None = None
    reported_domain: str | None = None
    arrival_date: str | None = None
    reporting_mta: str | None = Field(default=None, description="DSN Reporting-MTA")
    remote_mta: str | None = Field(default=None, description="DSN Remote-MTA")
    action: str | None = Field(default=None, description="DSN Action (failed)")
    format: str | None = Field(default=None, description="rfc3464, or plain for a text bounce")
    method: str | None = Field(default=None, description="unsubscribe: one-click, "
                               "mailto or page")
    list: str | None = Field(default=None, description="unsubscribe: the list (campaign)")
    received_at: float | None = Field(default=None, description="when kmta received it")


class DeliveryEvent(Model):
    """One event per delivery attempt or decision; every accepted id ends with exactly one
    final. Feedback events (``async_bounce``, ``complaint``, ``unsubscribe``) may follow the
    final one, with ``final: false``; they do not change the outcome."""

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
    feedback: FeedbackInfo | None = Field(default=None, description="feedback events only")


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
