"""Input messages (outbox topic) and the routed envelope (queue and delay topics)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from schemas.base import Model
from schemas.text import check_tree

ID_PATTERN = r"^[A-Za-z0-9._:@+=-]{1,200}$"

# pydantic reads a datetime from an ISO 8601 string or from epoch seconds
Timestamp = Annotated[datetime, WithJsonSchema(
    {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]})]


def _given(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


# The body rule of ``OutboxMessage._body`` for JSON Schema users (kept equal by a unit test).
_BODY_RULE: dict[str, Any] = {"oneOf": [
    {"title": "data: a complete RFC 5322 message", **_given("data"),
     "not": {"anyOf": [_given("subject"), _given("text"), _given("html"),
                       {"required": ["headers"],
                        "properties": {"headers": {"type": "object", "minProperties": 1}}}]}},
    {"title": "subject with text and/or html, composed by kmta", **_given("subject"),
     "not": _given("data"), "anyOf": [_given("text"), _given("html")]},
]}


class OutboxMessage(Model):
    """What a user produces to ``<prefix>outbox``: one recipient per message.

    Either ``data`` (a complete RFC 5322 message) or ``subject`` with ``text`` and/or ``html``
    (plus optional ``headers``), which kmta composes.
    """

    # input from users: only the JSON names ("from", not the Python name "from_")
    model_config = ConfigDict(populate_by_name=False, json_schema_extra=_BODY_RULE)

    id: str | None = Field(default=None, pattern=ID_PATTERN, description="generated when absent")
    from_: str = Field(alias="from", min_length=3, max_length=320)
    to: str = Field(min_length=3, max_length=320)
    data: str | None = None
    subject: str | None = Field(default=None, max_length=998)
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] | None = None
    pool: str | None = Field(default=None, max_length=100)
    campaign: str | None = Field(default=None, max_length=200,
                                 description="also the first field of Feedback-ID")
    unsubscribe_url: str | None = Field(
        default=None, max_length=900, pattern=r"^https://",
        description="one-click unsubscribe (RFC 8058): List-Unsubscribe + List-Unsubscribe-Post")
    unsubscribe_mailto: str | None = Field(
        default=None, max_length=320, description="address (or mailto: URI) in List-Unsubscribe")
    meta: dict[str, Any] | None = None
    expires_at: Timestamp | None = Field(
        default=None, description="ISO 8601 or epoch seconds; after it the message ends expired"
    )

    @field_validator("from_", "to", "data", "subject", "text", "html", "headers", "pool",
                     "campaign", "meta")
    @classmethod
    def _text(cls, v: Any) -> Any:
        # lone surrogates and deep nesting fail here, not later when the message is encoded
        check_tree(v, what="the value")
        return v

    @model_validator(mode="after")
    def _body(self) -> OutboxMessage:
        if self.data is not None:
            if self.subject is not None or self.text is not None or self.html is not None:
                raise ValueError("give either data or subject+text/html, not both")
            if self.headers:
                raise ValueError("headers go with subject+text/html; put them inside data")
        else:
            if self.subject is None:
                raise ValueError("missing body: give data, or subject with text and/or html")
            if self.text is None and self.html is None:
                raise ValueError("subject needs text and/or html")
        return self


class MxHost(Model):
    """One resolved mail exchanger: its name, preference and addresses."""

    host: str
    pref: int = 0
    ips: list[str] = Field(default_factory=list)


class TlsPolicy(Model):
    """An MTA-STS (RFC 8461) policy in ``enforce`` mode, as the router found it: deliver only
    to MX hosts matching ``mx`` over TLS with a certificate valid for that host name."""

    mode: str = "enforce"
    mx: list[str] = Field(default_factory=list, description="MX patterns, e.g. *.example.net")
    id: str | None = Field(default=None, description="the policy id of the _mta-sts TXT record")


class Envelope(Model):
    """A routed message on the queue and delay topics (internal). ``data`` is the message as it
    goes over SMTP, composed, signed and encoded once by the router; the records carry it as
    bytes, beside a JSON head of the other fields (``schemas.envelope_codec``)."""

    id: str
    sender: str
    rcpt: str
    domain: str
    isp: str
    data: bytes = Field(description="the RFC 5322 message, CRLF line ends, as sent")
    pool: str | None = None
    campaign: str | None = None
    meta: dict[str, Any] | None = None
    expires_at: float | None = None
    accepted_at: float = Field(description="epoch seconds when the router accepted it")
    routed_at: float = Field(description="epoch seconds when it was (last) put on the queue")
    attempt: int = Field(default=0, ge=0, description="delivery attempts made so far")
    due_at: float | None = Field(default=None, description="not to be attempted before this")
    mx: list[MxHost] = Field(default_factory=list)
    mx_resolved_at: float | None = None
    mx_ttl: float | None = None
    last_code: int | None = None
    last_response: str | None = None
    tls_policy: TlsPolicy | None = Field(
        default=None, description="the recipient domain's MTA-STS policy in enforce mode")
    dkim: list[str] | None = Field(
        default=None, description="signatures added at routing: selector._domainkey.domain")
    # never in the JSON head nor the JSON form: the record carries it apart, where a reader of
    # before this field ignores it (``schemas.envelope_codec``); a JSON form (a dead letter
    # written back) is read without it, so its body is checked again
    crlf: bool = Field(
        default=False, exclude=True,
        description="data has CRLF line ends only, no lone CR or LF (the router composed it "
                    "so): the sender sends it without its line-end check")
