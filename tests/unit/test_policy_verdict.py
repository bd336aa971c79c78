"""The shipped knowledge base against real provider replies, through the sender's own steps
(``judge``: classifier -> the ISP's reply rules -> bounce/defer -> suppression).

Texts from the smtp-field-manual (SFM), KumoMTA's bounce and shaping files (KC), RFC 5321 and
providers' postmaster pages; see tests/data/replies/ for the full labelled corpus."""

from __future__ import annotations

import pytest

from kmta.policy.classify import (
    AUTH_FAILURE,
    BAD_SENDER,
    CATEGORIES,
    POLICY,
    REVERSE_DNS,
    SPAM_BLOCK,
    SPAM_CONTENT,
    Classifier,
    suppresses,
)
from kmta.policy.kb import KnowledgeBase
from kmta.policy.reply import Reply
from kmta.policy.verdict import explain, judge

KB = KnowledgeBase.load()
CLASSIFIER = Classifier.load()

# (isp or None, code, message, category, verdict, suppress, action)
TABLE = [
    # recipient does not exist: bounce and suppress
    (
        "gmail",
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "5.1.1 double-checking the recipient's email address for typos",
        "bad_mailbox",
        "bounce",
        True,
        "none",
    ),
    (
        "yahoo",
        554,
        "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
        "bad_mailbox",
        "bounce",
        True,
        "bounce",
    ),
    (
        "outlook",
        550,
        "5.4.1 Recipient address rejected: Access denied. AS(201806281)",
        "bad_mailbox",
        "bounce",
        True,
        "bounce",
    ),
    (
        None,
        553,
        "5.1.2 We weren't able to find the recipient domain.",
        "bad_domain",
        "bounce",
        True,
        "none",
    ),
    (None, 556, "5.1.10 Recipient address has null MX", "bad_domain", "bounce", True, "none"),
    # the account exists but is disabled / inactive: named as such, bounced, never suppressed
    (
        "gmail",
        550,
        "5.2.1 The email account that you tried to reach is disabled. Learn more at "
        "https://support.google.com/mail/?p=DisabledUser",
        "inactive_mailbox",
        "bounce",
        False,
        "none",
    ),
    (
        "yahoo",
        554,
        "delivery error: dd Sorry, your message to x@yahoo.com cannot be delivered. This "
        "mailbox is disabled (554.30).",
        "inactive_mailbox",
        "bounce",
        False,
        "bounce",
    ),
    (
        "mailru",
        550,
        "Message was not accepted -- invalid mailbox. Local mailbox x@mail.ru is "
        "unavailable: account is disabled",
        "inactive_mailbox",
        "bounce",
        False,
        "bounce",
    ),
    (
        "free",
        550,
        "5.2.1 This mailbox has been blocked due to inactivity",
        "inactive_mailbox",
        "bounce",
        False,
        "bounce",
    ),
    (
        None,
        550,
        "<x@example.org>: Account is suspended",
        "inactive_mailbox",
        "bounce",
        False,
        "none",
    ),
    # full mailboxes, whatever the enhanced code claims: never suppressed
    (
        "orange",
        552,
        "5.1.1 Boite du destinataire pleine. Recipient overquota. OFR_417 [417]",
        "mailbox_full",
        "bounce",
        False,
        "none",
    ),
    (
        "comcast",
        552,
        "5.1.1 <x@comcast.net> recipient rejected - extended quota violation",
        "mailbox_full",
        "bounce",
        False,
        "ok",
    ),
    # sender-side problems: never suppress the recipient
    (
        None,
        550,
        "5.1.8 <bounce@ours.example>: Sender address rejected: Domain not found",
        BAD_SENDER,
        "bounce",
        False,
        "none",
    ),
    (
        None,
        553,
        "5.1.8 Domain of sender address bounce@ours.example does not exist",
        BAD_SENDER,
        "bounce",
        False,
        "none",
    ),
    (
        None,
        550,
        "5.1.1 <bounce@ours.example>: Sender address rejected: User unknown in virtual "
        "mailbox table",
        BAD_SENDER,
        "bounce",
        False,
        "none",
    ),
    (
        "gmail",
        550,
        "5.7.26 This message does not have authentication information or fails to pass "
        "authentication checks (SPF or DKIM).",
        AUTH_FAILURE,
        "bounce",
        False,
        "bounce",
    ),
    ("gmx", 550, "<x@web.de>: Bad DNS PTR resource record", REVERSE_DNS, "defer", False, "lock"),
    (
        "comcast",
        554,
        "resimta comcast 203.0.113.5 Comcast requires that all mail servers must have "
        "a PTR record with a valid Reverse DNS entry.",
        REVERSE_DNS,
        "defer",
        False,
        "lock",
    ),
    (
        "gmail",
        550,
        "5.7.1 [203.0.113.5] Our system has detected that this message is likely unsolicited mail.",
        SPAM_CONTENT,
        "bounce",
        False,
        "bounce",
    ),
    (
        "outlook",
        550,
        "5.7.1 Unfortunately, messages from [203.0.113.5] weren't sent. Please contact "
        "your Internet service provider since part of their network is on our block list (S3150).",
        SPAM_BLOCK,
        "defer",
        False,
        "lock",
    ),
    (
        "gmx",
        554,
        "Reject due to policy restrictions. For explanation visit https://postmaster.gmx.net",
        POLICY,
        "defer",
        False,
        "lock",
    ),
    # "later", even as 5xx: defer and tell the speed controller
    (None, 552, "5.5.3 Too many recipients", "rate_limit", "defer", False, "none"),
    (None, 552, "Too many recipients for this session", "rate_limit", "defer", False, "none"),
    (
        None,
        550,
        "5.7.1 This IP has sent too many messages this hour. IB504",
        "rate_limit",
        "defer",
        False,
        "none",
    ),
    (
        "gmail",
        550,
        "5.2.1 The user you are trying to contact is receiving mail at a rate that "
        "prevents additional messages from being delivered.",
        "rate_limit",
        "defer",
        False,
        "defer",
    ),
    (
        "outlook",
        554,
        "5.2.122 The recipient has exceeded their limit for the number of messages "
        "they can receive per hour.",
        "rate_limit",
        "defer",
        False,
        "defer",
    ),
    (
        "qq",
        550,
        "Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?no=1000722",
        "rate_limit",
        "defer",
        False,
        "lock",
    ),
    (
        "netease",
        550,
        "RP:ORQ 163 mx42 http://mail.163.com/help/help_spam_16.htm",
        "rate_limit",
        "defer",
        False,
        "lock",
    ),
    ("gmail", 550, "5.4.5 Daily sending quota exceeded.", "rate_limit", "defer", False, "none"),
    (
        None,
        451,
        "4.7.1 <x@example.org>: Recipient address rejected: Greylisted for 5 minutes",
        "greylist",
        "defer",
        False,
        "none",
    ),
    # "Retrying will NOT succeed": stop that source IP at once; nobody is suppressed
    (
        "yahoo",
        421,
        "4.7.0 [TS03] All messages from 203.0.113.5 will be permanently deferred; "
        "Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes",
        SPAM_BLOCK,
        "defer",
        False,
        "lock",
    ),
    (
        None,
        421,
        "4.7.0 [TS03] All messages from 203.0.113.5 will be permanently deferred; "
        "Retrying will NOT succeed.",
        SPAM_BLOCK,
        "defer",
        False,
        "lock",
    ),
    (
        "tonline",
        554,
        "IP=203.0.113.5 - None/bad reputation. Ask your postmaster for help or to "
        "contact tobr@rx.t-online.de for reset. (NOWL)",
        SPAM_BLOCK,
        "defer",
        False,
        "lock",
    ),
    (
        "sfr",
        450,
        "4.7.1 SFR_IN_101 Service refused due to bad behavior - Too many spam messages",
        SPAM_BLOCK,
        "defer",
        False,
        "lock",
    ),
]


@pytest.mark.parametrize(
    ("isp", "code", "message", "category", "verdict", "suppress", "action"), TABLE
)
def test_shipped_kb_on_real_replies(
    isp: str | None,
    code: int,
    message: str,
    category: str,
    verdict: str,
    suppress: bool,
    action: str,
) -> None:
    _, v = explain(Reply.parse(code, message), CLASSIFIER, KB, isp)
    assert (v.category, v.verdict, v.suppress, v.action) == (category, verdict, suppress, action)


def test_yahoo_ts03_locks_the_source_ip_at_the_first_reply() -> None:
    reply = Reply.parse(
        421,
        "4.7.0 [TS03] All messages from 203.0.113.5 will be permanently "
        "deferred; Retrying will NOT succeed.",
    )
    for isp in ("yahoo", "example.org"):
        v = judge(reply, CLASSIFIER, KB.effective(isp))
        assert v.scope == "source_ip" and v.reply_rule is not None
        assert v.reply_rule.threshold == 1 and not v.later


def test_later_replies_slow_the_sender_down() -> None:
    for code, text in [
        (552, "5.5.3 Too many recipients"),
        (550, "You have sent too many messages"),
    ]:
        v = judge(Reply.parse(code, text), CLASSIFIER, KB.effective("example.org"))
        assert v.verdict == "defer" and v.speed == "throttle" and v.later


def test_content_and_sender_problems_do_not_slow_the_sender_down() -> None:
    for code, text in [(550, "5.7.1 virus detected"), (550, "5.1.8 Sender address rejected")]:
        v = judge(Reply.parse(code, text), CLASSIFIER, KB.effective("example.org"))
        assert v.speed == "neutral" and not v.suppress


def test_only_unknown_addresses_and_domains_suppress() -> None:
    assert {c for c in CATEGORIES if suppresses(c)} == {"bad_mailbox", "bad_domain"}


def test_every_isp_rule_category_is_known_and_every_rule_has_a_source() -> None:
    for name in KB.isp_names():
        for r in KB.effective(name).replies:
            assert r.category is None or r.category in CATEGORIES, (name, r.name)
            assert r.source, f"{name}: reply rule {r.name} has no source"


# the list, and the rest of the top mailbox providers by users
TOP_PROVIDERS = [
    "gmail",
    "outlook",
    "yahoo",
    "icloud",
    "qq",
    "netease",
    "mailru",
    "yandex",
    "gmx",
    "zoho",
    "protonmail",
    "comcast",
    "att",
    "orange",
    "tonline",
    "free",
    "sfr",
    "libero",
    "godaddy",
    "naver",
    "rambler",
    "wp",
    "interia",
    "centrum",
    "virginmedia",
    "cox",
    "seznam",
]


def test_top_providers_have_reply_rules_of_their_own() -> None:
    default = {r.name for r in KB.effective("example.org").replies}
    for isp in TOP_PROVIDERS:
        own = [r for r in KB.effective(isp).replies if r.name not in default]
        assert own, f"{isp}: no reply rules of its own"
