"""What a message received on a return-path domain is, decided from its bytes and envelope:
an asynchronous bounce, a complaint, an unsubscribe request, an automatic reply that is none
of those, or something unreadable (for the dead-letter topic). Pure: stdlib only.

Order matters: reports first (a DSN carries ``Auto-Submitted`` too), then unsubscribe mail to
the unsubscribe address, then RFC 3834 automatic replies, then plain-text bounces.

A report is tied to the message it is about by, in order: the VERP token of the envelope
recipient (``b+TOKEN@``, or of an ARF report's ``Original-Mail-From``), authenticated by its
MAC; the returned message's ``X-Kmta-Id``; its ``Message-ID`` when that is ``<id@domain>``
with a domain of ours. A report tied by none is unreadable (dead-lettered, never guessed).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser

from kmta.policy import arf, autoreply, dsn, verp
from kmta.policy.classify import Classifier, suppresses
from kmta.policy.unsubscribe import SUBJECT_PREFIX, read_token

__all__ = [
    "ASYNC_BOUNCE",
    "COMPLAINT",
    "UNSUBSCRIBE",
    "Feedback",
    "Ignored",
    "Unreadable",
    "Verdict",
    "read",
]

ASYNC_BOUNCE = "async_bounce"
COMPLAINT = "complaint"
UNSUBSCRIBE = "unsubscribe"
_MSGID = re.compile(r"<([A-Za-z0-9._:+=-]{1,200})@([^<>@\s]+)>")
_ID = re.compile(r"^[A-Za-z0-9._:@+=-]{1,200}$")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


@dataclass(frozen=True)
class Feedback:
    """A results event to write: ``kind`` is its status."""

    kind: str  # async_bounce | complaint | unsubscribe
    id: str
    to: str
    tied_by: str  # verp | x-kmta-id | message-id | token
    hard: bool = False  # suppress the address
    code: int | None = None
    enhanced_code: str | None = None
    response: str = ""
    category: str | None = None
    campaign: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    sender: str | None = None  # the envelope sender the message went out with (VERP)
    domain: str | None = None  # the sending domain (an unsubscribe token's)


@dataclass(frozen=True)
class Ignored:
    """Read and understood, nothing to record (a vacation notice, a ``delayed`` DSN...)."""

    reason: str


@dataclass(frozen=True)
class Unreadable:
    reason: str


Verdict = Feedback | Ignored | Unreadable


def _text(msg: Message) -> str:
    """The readable text: every text/plain part outside returned messages, then text/html
    with tags dropped when there is no plain part."""
    plain: list[str] = []
    html: list[str] = []

    def walk(m: Message) -> None:
        if m.is_multipart():
            if m.get_content_type() in ("message/rfc822", "message/global"):
                return
            for p in m.get_payload():
                walk(p)
            return
        ctype = m.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            return
        raw = m.get_payload(decode=True) or b""
        s = raw.decode(m.get_content_charset() or "utf-8", "replace")
        (plain if ctype == "text/plain" else html).append(s)
    walk(msg)
    if plain:
        return "\n".join(plain).replace("\r\n", "\n")
    return re.sub(r"<[^>]+>", " ", "\n".join(html))


def _tie(envelope: list[str | None], original: dict[str, str], secret: bytes | None,
         our_domains: frozenset[str]) -> tuple[str, str, str | None] | None:
    """(message id, how, the VERP address when tied by one)."""
    if secret is not None:
        for addr in envelope:
            if addr:
                mid = verp.message_id_of(addr.strip("<>"), secret)
                if mid:
                    return mid, "verp", addr.strip("<>").lower()
    kid = original.get("x-kmta-id", "").strip()
    if _ID.match(kid):
        return kid, "x-kmta-id", None
    m = _MSGID.search(original.get("message-id", ""))
    if m and m.group(2).lower().rstrip(".") in our_domains:
        return m.group(1), "message-id", None
    return None


def _campaign(original: dict[str, str]) -> str | None:
    """The first field of the Feedback-ID kmta wrote (``kmta/policy/listheaders.py``)."""
    fid = original.get("feedback-id", "")
    return fid.split(":", 1)[0] or None if ":" in fid else None


def read(raw: bytes, rcpt: str, classifier: Classifier, verp_secret: bytes | None,
         unsubscribe_secret: bytes | None = None, unsubscribe_local: str = "unsubscribe",
         our_domains: frozenset[str] = frozenset()) -> Verdict:
    """The verdict on one received message; ``rcpt`` is its envelope recipient."""
    try:
        msg = BytesParser(policy=email_policy.compat32).parsebytes(raw)
    except Exception as e:  # noqa: BLE001 - the parser is lenient; anything left is unreadable
        return Unreadable(f"not a message: {e}")
    if not raw.strip() or not msg.keys():
        return Unreadable("no header fields")
    if arf.is_arf(msg):
        return _complaint(msg, verp_secret, our_domains)
    if dsn.is_dsn(msg):
        report = dsn.parse(msg)
        if report is None:
            return Unreadable("delivery-status report without a recipient block")
        return _bounce(report, rcpt, classifier, verp_secret, our_domains)
    text = _text(msg)
    local = rcpt.rpartition("@")[0].lower()
    if local == unsubscribe_local.lower():
        return _unsubscribe_mail(msg, text, unsubscribe_secret)
    kind = autoreply.kind_of(msg, text)
    report = dsn.parse_plain(msg, text)
    if report is not None and kind != autoreply.CHALLENGE:
        return _bounce(report, rcpt, classifier, verp_secret, our_domains)
    if kind is not None:
        return Ignored(kind)
    return Ignored("not a report or automatic reply (kept for nobody: a person's reply to "
                   "the return path)")


def _bounce(report: dsn.Dsn, rcpt: str, classifier: Classifier, secret: bytes | None,
            our_domains: frozenset[str]) -> Verdict:
    failed = report.failures()
    if not failed:
        actions = ",".join(sorted({r.action for r in report.recipients}))
        return Ignored(f"DSN without a failure ({actions})")
    tie = _tie([rcpt], report.original, secret, our_domains)
    if tie is None:
        return Unreadable("DSN not tied to a message of ours (no VERP token, X-Kmta-Id or "
                          "Message-ID)")
    r = failed[0]
    reply = r.reply()
    # classified like a synchronous reply; a DSN without a diagnostic still has its class
    code = reply.code or (550 if r.permanent else 450)
    category = classifier.classify(type(reply)(code, reply.enhanced_code, reply.text))
    detail = {k: v for k, v in (("reporting_mta", report.reporting_mta),
                                ("remote_mta", r.remote_mta), ("action", r.action),
                                ("format", "rfc3464" if report.rfc3464 else "plain")) if v}
    return Feedback(ASYNC_BOUNCE, tie[0], r.recipient, tie[1],
                    hard=r.permanent and suppresses(category), code=reply.code,
                    enhanced_code=reply.enhanced_code, response=(r.diagnostic or "")[:1000],
                    category=category, campaign=_campaign(report.original), detail=detail,
                    sender=tie[2])


def _complaint(msg: Message, secret: bytes | None, our_domains: frozenset[str]) -> Verdict:
    rep = arf.parse(msg)
    if rep is None:
        return Unreadable("feedback-report without a message/feedback-report part")
    tie = _tie([rep.original_mail_from, rep.original.get("return-path")], rep.original,
               secret, our_domains)
    if tie is None:
        return Unreadable("feedback report not tied to a message of ours")
    to = rep.recipient()
    if to is None:
        return Unreadable(f"feedback report on {tie[0]} names no recipient (redacted)")
    if not rep.complaint:
        return Ignored(f"feedback report of type {rep.feedback_type}")
    detail = {k: v for k, v in (("feedback_type", rep.feedback_type), ("source", rep.source),
                                ("source_ip", rep.source_ip),
                                ("reported_domain", rep.reported_domain),
                                ("arrival_date", rep.arrival_date)) if v}
    return Feedback(COMPLAINT, tie[0], to, tie[1], hard=True,
                    response=f"{rep.feedback_type} report from {rep.source or 'unknown'}",
                    category="complaint", campaign=_campaign(rep.original), detail=detail,
                    sender=tie[2])


def _unsubscribe_mail(msg: Message, text: str, secret: bytes | None) -> Verdict:
    if secret is None:
        return Ignored("unsubscribe mail, but [unsubscribe] has no secret")
    subject = " ".join(str(msg.get("Subject", "")).split())
    for m in _TOKEN.finditer(subject + "\n" + text[:4000]):
        u = read_token(secret, m.group(0))
        if u is not None:
            return Feedback(UNSUBSCRIBE, u.id, u.address, "token", hard=True,
                            response="unsubscribed by mail (RFC 2369 mailto)",
                            category="unsubscribe", campaign=u.list, domain=u.domain,
                            detail={"method": "mailto", **({"list": u.list} if u.list else {})})
    why = "forged or garbled token" if SUBJECT_PREFIX.strip() in subject.lower() else "no token"
    return Ignored(f"unsubscribe mail refused: {why}")
