"""Mail received by ``kmta inbound`` (the inbound topic, internal): written before the 250."""
from __future__ import annotations

import base64

from pydantic import Field

from schemas.base import Model


class InboundMail(Model):
    """One received message with its envelope; ``data`` is the raw message in base64 (it may
    be any bytes: 8BITMIME, broken encodings)."""

    mail_from: str = Field(description="envelope sender (empty for a DSN: RFC 3464 §2)")
    rcpt: list[str] = Field(min_length=1, description="accepted envelope recipients")
    data: str = Field(description="the message as received, base64")
    peer: str | None = Field(default=None, description="client address host:port")
    helo: str | None = None
    received_at: float = Field(description="epoch seconds")
    node: str | None = Field(default=None, description="the inbound process that took it")

    @classmethod
    def of(cls, raw: bytes, **kw: object) -> InboundMail:
        return cls(data=base64.b64encode(raw).decode(), **kw)

    def raw(self) -> bytes:
        return base64.b64decode(self.data)
