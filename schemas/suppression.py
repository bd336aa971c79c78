"""Suppression records (the compacted ``suppression`` topic, keyed by ``key()``).

Scopes: ``global`` (every message to the address), ``domain`` (mail from one sending domain)
and ``campaign`` (one list). A tombstone (null value) under the same key removes it; every
add and removal also goes to the audit topic with who did it.
"""
from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field, model_validator

from schemas.base import Model

Scope = Literal["global", "domain", "campaign"]


class Reason(str, Enum):
    HARD_BOUNCE = "hard_bounce"  # synchronous 5xx (bad mailbox, bad domain)
    ASYNC_BOUNCE = "async_bounce"  # a DSN that arrived later
    COMPLAINT = "complaint"  # ARF feedback report
    UNSUBSCRIBE = "unsubscribe"  # RFC 8058 one-click, mailto, the confirmation page
    MANUAL = "manual"  # an operator (kmta suppression add/import, the panel)


class Suppression(Model):
    address: str = Field(min_length=3, max_length=320, description="lower-case")
    scope: Scope = "global"
    value: str | None = Field(default=None, max_length=253,
                              description="the sending domain or campaign of a scoped record")
    reason: Reason
    category: str | None = Field(default=None, description="bounce category, feedback type")
    detail: str | None = Field(default=None, max_length=300, description="the reply or report")
    id: str | None = Field(default=None, description="the message that caused it")
    by: str | None = Field(default=None, description="operator, or the process that wrote it")
    at: float = Field(description="epoch seconds")

    @model_validator(mode="after")
    def _scoped(self) -> Suppression:
        self.address = self.address.strip().lower()
        if (self.scope == "global") != (self.value is None):
            raise ValueError("a domain or campaign scope needs a value; global has none")
        if self.scope == "domain" and self.value is not None:
            self.value = self.value.lower()
        return self

    def key(self) -> str:
        return key_of(self.address, self.scope, self.value)


def key_of(address: str, scope: str = "global", value: str | None = None) -> str:
    """The topic key: the address for global records (as before scopes), else
    ``<scope>:<value>|<address>``."""
    address = address.strip().lower()
    if scope == "global":
        return address
    if scope == "domain" and value is not None:
        value = value.lower()
    return f"{scope}:{value}|{address}"


class SuppressionChange(Model):
    """An audit entry (audit topic, inside a ``ControlRecord``): who added or removed what."""

    op: Literal["add", "remove"]
    key: str
    record: Suppression | None = Field(default=None, description="the record added, or the "
                                       "one removed when it was known")
    actor: str = Field(min_length=1, max_length=100)
    reason: str | None = Field(default=None, max_length=500)
