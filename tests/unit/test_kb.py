"""The shipped knowledge base against real provider replies; MX rollup; merging; validation."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from kmta.errors import ConfigError
from kmta.policy.classify import CATEGORIES
from kmta.policy.kb import SHIPPED_ISPS, KnowledgeBase, RulesError
from kmta.policy.reply import Reply
from kmta.policy.reply_rules import disposition, match_reply

SHIPPED: dict[str, Any] = tomllib.loads(SHIPPED_ISPS.read_text(encoding="utf-8"))
KB = KnowledgeBase.load()


def test_shipped_file_validates_and_is_complete() -> None:
    names = KB.isp_names()
    assert len(names) >= 16
    for isp in (
        "gmail",
        "yahoo",
        "outlook",
        "icloud",
        "mailru",
        "yandex",
        "gmx",
        "orange",
        "comcast",
        "qq",
        "netease",
        "zoho",
        "protonmail",
        "fastmail",
        "seznam",
    ):
        assert isp in names
    for isp in names:
        rule = KB.effective(isp)
        assert rule.speed.min <= (rule.speed.start or rule.speed.min) <= (
            rule.speed.max or float("inf"))
        assert rule.speed.max is None, f"{isp}: no estimated cap (the controller finds it)"
        assert 1 <= rule.partitions <= rule.sending.max_connections
        assert all(r.category in CATEGORIES for r in rule.replies if r.category)
        assert all(r.source for r in rule.replies), f"{isp}: every reply rule names its source"
    assert (KB.partitions("gmail"), KB.partitions("outlook"), KB.partitions("yahoo")) == (2, 2, 2)
    assert KB.partitions("mailru") == 1 and KB.partitions("example.com") == 0


def test_generic_catch_alls_come_last() -> None:
    names = [r.name for r in KB.effective("yahoo").replies]
    assert names[-1] == "generic_deferral"
    assert names.index("yahoo_tss04") < names.index("generic_deferral")


# (isp, code, message, expected rule name, expected action) — real replies from the research notes.
REAL = [
    (
        "gmail",
        421,
        (
            "4.7.28 [203.0.113.5      15] Our system has detected an unusual rate of\n4.7.28 "
            "unsolicited mail originating from your IP address. To protect our users from spam, mail sent\n4.7.28 "
            "from your IP address has been temporarily rate limited."
        ),
        "gmail_428_ip_rate",
        "throttle",
    ),
    (
        "gmail",
        421,
        (
            "4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your "
            "DKIM domain [example.com 5]."
        ),
        "gmail_428_domain_rate",
        "throttle",
    ),
    (
        "gmail",
        421,
        (
            "4.7.0 This message is suspicious due to the very low reputation of the sending domain. "
            "To best protect our users from spam, the message has been blocked."
        ),
        "gmail_low_reputation",
        "lock",
    ),
    (
        "gmail",
        421,
        (
            "4.7.32 Your email has been rate limited because the From: header (RFC5322) in this "
            "message isn't aligned with either the authenticated SPF or DKIM organizational domain."
        ),
        "gmail_dmarc_alignment",
        "defer",
    ),
    (
        "gmail",
        550,
        (
            "5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC "
            "policy."
        ),
        "gmail_unauthenticated",
        "bounce",
    ),
    (
        "gmail",
        550,
        (
            "5.7.1 [203.0.113.5] Our system has detected that this message is likely unsolicited "
            "mail."
        ),
        "gmail_likely_unsolicited",
        "bounce",
    ),
    (
        "gmail",
        450,
        (
            "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
            "additional messages from being delivered."
        ),
        "gmail_recipient_rate",
        "defer",
    ),
    (
        "yahoo",
        421,
        (
            "4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected volume "
            "or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
        ),
        "yahoo_tss04",
        "lock",
    ),
    (
        "yahoo",
        421,
        "4.7.0 [TSS05] Messages from 203.0.113.5 temporarily deferred due to user complaints",
        "yahoo_tss05",
        "lock",
    ),
    (
        "yahoo",
        421,
        (
            "[IPTS04] Messages from 203.0.113.5 temporarily deferred due to unexpected volume or "
            "user complaints"
        ),
        "yahoo_ipts04",
        "lock",
    ),
    (
        "yahoo",
        421,
        "4.7.0 [TS01] Messages from 203.0.113.5 temporarily deferred due to user complaints",
        "yahoo_ts01",
        "throttle",
    ),
    (
        "yahoo",
        421,
        (
            "4.7.1 [TS03] All messages from 203.0.113.5 will be permanently deferred; Retrying will "
            "NOT succeed. See https://postmaster.yahooinc.com/error-codes"
        ),
        "yahoo_ts03",
        "lock",
    ),
    (
        "yahoo",
        553,
        (
            "5.7.1 [BL21] Connections will not be accepted from 203.0.113.5, because the ip is in "
            "Spamhaus's list; see https://postmaster.yahooinc.com/error-codes"
        ),
        "yahoo_blocklist",
        "lock",
    ),
    (
        "yahoo",
        421,
        "Max message per connection reached, closing transmission channel",
        "yahoo_max_per_connection",
        "throttle",
    ),
    (
        "yahoo",
        554,
        "Message not allowed - [PH01] Email not accepted for policy reasons.",
        "yahoo_policy",
        "bounce",
    ),
    (
        "outlook",
        451,
        (
            "4.7.650 The mail server [203.0.113.5] has been temporarily rate limited due to IP "
            "reputation. For e-mail delivery information, see https://postmaster.live.com (S775) [Name=Protocol "
            "Filter Agent]"
        ),
        "outlook_ip_reputation",
        "lock",
    ),
    (
        "outlook",
        451,
        (
            "4.7.651 The mail server [203.0.113.5] has been temporarily rate limited due to IP "
            "reputation. (S3114)"
        ),
        "outlook_ip_reputation",
        "lock",
    ),
    (
        "outlook",
        550,
        (
            "5.7.1 Unfortunately, messages from [203.0.113.5] weren't sent. Please contact your "
            "Internet service provider since part of their network is on our block list (S3150). You can also "
            "refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors."
        ),
        "outlook_blocklist",
        "lock",
    ),
    (
        "outlook",
        451,
        (
            "4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77714) "
            "[AM0PR01MB1234.eurprd01.prod.exchangelabs.com]"
        ),
        "outlook_server_busy",
        "lock",
    ),
    (
        "outlook",
        451,
        (
            "4.7.0 Temporary server error. Please try again later. PRX6 "
            "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]"
        ),
        "outlook_prx6",
        "lock",
    ),
    (
        "outlook",
        421,
        "4.7.652 The mail server [203.0.113.5] has exceeded the maximum number of connections.",
        "outlook_max_connections",
        "throttle",
    ),
    (
        "outlook",
        550,
        (
            "5.7.511 Access denied, banned sender[203.0.113.5]. To request removal from this list "
            "please forward this message to delist@microsoft.com."
        ),
        "outlook_banned_sender",
        "bounce",
    ),
    (
        "icloud",
        421,
        (
            "[HCM1] Your mail from 203.0.113.5 was deferred. Please visit "
            "https://support.apple.com/en-us/HT204137"
        ),
        "icloud_hcm1",
        "lock",
    ),
    (
        "icloud",
        451,
        "[BS02] Temporary server error. Please try again later.",
        "icloud_bs02",
        "lock",
    ),
    (
        "icloud",
        451,
        "4.7.1 Service unavailable - try again later",
        "icloud_service_unavailable",
        "lock",
    ),
    (
        "icloud",
        550,
        (
            "5.7.1 [CS01] Message rejected due to local policy. Please visit "
            "https://support.apple.com/en-us/HT204137"
        ),
        "icloud_cs01",
        "bounce",
    ),
    (
        "mailru",
        550,
        (
            "spam message rejected. Please visit http://help.mail.ru/notspam-support/id?c=abcdef "
            "or report details to abuse@corp.mail.ru. Error code: ABCDEF."
        ),
        "mailru_spam",
        "lock",
    ),
    (
        "mailru",
        550,
        (
            "Message was not accepted -- invalid mailbox.  Local mailbox x@mail.ru is unavailable: "
            "user not found"
        ),
        "mailru_invalid_mailbox",
        "bounce",
    ),
    (
        "yandex",
        554,
        (
            "5.7.1 [1] Message rejected under suspicion of SPAM; https://ya.cc/1IrBc "
            "1700000000-AbCdEf"
        ),
        "yandex_suspected_spam",
        "bounce",
    ),
    (
        "yandex",
        451,
        "4.7.1 Sorry, the service is currently unavailable. Please come back later.",
        "yandex_unavailable",
        "throttle",  # a signal to the speed controller at every reply
    ),
    (
        "gmx",
        421,
        "gmx.net (mxgmx001) Nemesis ESMTP Service not available\nToo many connections",
        "gmx_too_many_connections",
        "throttle",
    ),
    (
        "gmx",
        554,
        (
            "Reject due to policy restrictions. For explanation visit "
            "https://postmaster.gmx.net/en/case?c=hi&i=ip&v=203.0.113.5"
        ),
        "gmx_policy_restrictions_554",
        "lock",
    ),
    ("gmx", 550, "Reject due to policy restrictions.", "gmx_policy_restrictions", "throttle"),
    (
        "gmx",
        554,
        "IP address is block listed.\nFor explanation visit https://postmaster.gmx.net/en/case?c=r0201",
        "gmx_ip_block_listed",
        "lock",
    ),
    (
        "orange",
        421,
        "mwinf5c10 ME Trop de connexions, veuillez verifier votre configuration. [OFR004_104]",
        "orange_too_many_connections",
        "throttle",
    ),
    (
        "orange",
        421,
        "mwinf5c79 ME Service refuse. Veuillez essayer plus tard. [OFR004_105] [B]",
        "orange_service_refused",
        "lock",
    ),
    (
        "orange",
        550,
        (
            "mwinf5c05 ME Client host blocked for spamming issues. OFR006_102 Ref "
            "http://csi.cloudmark.com/reset-request/?ip=203.0.113.5"
        ),
        "orange_blocked_spamming",
        "lock",
    ),
    (
        "comcast",
        421,
        (
            "resimta-po-22v.sys.comcast.net 203.0.113.5 rate limited, see "
            "https://spa.xfinity.com/postmaster?faq=comcast-mail-errors#RL000010"
        ),
        "comcast_rl000010",
        "lock",
    ),
    (
        "comcast",
        421,
        "resimta-po-22v.sys.comcast.net 203.0.113.5 throttled: RL000001",
        "comcast_rl0000",
        "throttle",
    ),
    (
        "comcast",
        554,
        (
            "resimta-h1p-028 Comcast block for spam. Please see "
            "http://postmaster.comcast.net/smtp-error-codes.php#BL000000"
        ),
        "comcast_spam_block",
        "lock",
    ),
    (
        "qq",
        550,
        "Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000722",
        "qq_frequency_limited",
        "lock",
    ),
    (
        "qq",
        550,
        "Connection frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022",
        "qq_frequency_limited",
        "lock",
    ),
    (
        "netease",
        451,
        "DT:SPM 163 smtp10,DsCowAA 1700000000, please try again",
        "netease_451_spm",
        "lock",
    ),
    (
        "netease",
        554,
        "DT:SPM 163 mx14,QMCowEC 1700000000, please see http://mail.163.com/help/help_spam_16.htm",
        "netease_554_spm",
        "throttle",
    ),
    (
        "netease",
        550,
        "RP:ORQ 163 mx42,QMCowAD3u0 1700000000 http://mail.163.com/help/help_spam_16.htm",
        "netease_daily_limit",
        "lock",
    ),
    (
        "netease",
        554,
        "HL:ITC 163 mx42 http://mail.163.com/help/help_spam_16.htm?ip=203.0.113.5",
        "netease_daily_limit",
        "lock",
    ),
    # An ISP without rules of its own still gets the generic catch-all.
    (
        "seznam",
        421,
        "4.7.0 Messages from 203.0.113.5 temporarily deferred",
        "generic_deferral",
        "throttle",
    ),
]


@pytest.mark.parametrize(
    ("isp", "code", "message", "name", "action"), REAL, ids=[f"{r[0]}-{r[3]}" for r in REAL]
)
def test_real_reply_matches_rule(isp: str, code: int, message: str, name: str, action: str) -> None:
    matched = match_reply(Reply.parse(code, message), KB.effective(isp))
    assert matched is not None, f"no rule matched {message!r}"
    assert (matched.name, matched.action) == (name, action)


def test_real_reply_table_is_large() -> None:
    assert len(REAL) >= 25 and len({r[0] for r in REAL}) >= 10


def test_qq_rate_limits_sent_as_550_are_deferred_not_bounced() -> None:
    reply = Reply.parse(550, "Sender frequency limited")
    assert disposition(reply, match_reply(reply, KB.effective("qq"))) == "defer"
    bounce = Reply.parse(550, "5.1.1 user unknown")
    assert disposition(bounce, match_reply(bounce, KB.effective("qq"))) == "bounce"
    assert disposition(Reply.parse(250, "2.0.0 OK"), None) == "delivered"
    assert disposition(Reply.parse(None, "Connection refused", internal=True), None) == "defer"


@pytest.mark.parametrize("isp", [*KB.isp_names(), "example.com"])
def test_internal_replies_never_match_provider_rules(isp: str) -> None:
    rule = KB.effective(isp)
    # Our own replies echo provider words: a timeout after "Server busy", a refused connection...
    for text in (
        "Server busy. Please try again later from [203.0.113.5]",
        "Messages from 203.0.113.5 temporarily deferred",
        "[TSS04] spam message rejected",
        "Too many connections",
        "frequency limited",
        "Reject due to policy restrictions",
    ):
        matched = match_reply(Reply.parse(None, text, internal=True), rule)
        assert matched is None or matched.internal
    for text in ("connect to mx.example.com: Connection refused", "read timed out after 300 s"):
        matched = match_reply(Reply.parse(None, text, internal=True), rule)
        assert matched is not None and matched.internal and matched.action == "throttle"
        # ...and the same words from a provider never hit an internal rule.
        provider = match_reply(Reply.parse(421, text), rule)
        assert provider is None or not provider.internal


ROLLUP = [
    ("gmail.com", [], "gmail"),
    ("GMail.COM.", [], "gmail"),
    ("example-workspace.com", ["aspmx.l.google.com", "alt1.aspmx.l.google.com"], "gmail"),
    ("foo.com", ["gmail-smtp-in.l.google.com."], "gmail"),
    ("aol.com", [], "yahoo"),
    ("foo.com", ["mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net"], "yahoo"),
    ("foo.com", ["mx-aol.mail.gm0.yahoodns.net"], "yahoo"),
    ("foo.com", ["x.olc.protection.outlook.com"], "outlook"),
    ("contoso.com", ["contoso-com.mail.protection.outlook.com"], "outlook"),
    ("contoso.com", ["contoso-com.j-v1.mx.microsoft."], "outlook"),
    ("foo.ru", ["mxs.mail.ru"], "mailru"),
    ("bk.ru", [], "mailru"),
    ("foo.ru", ["mx.yandex.net"], "yandex"),
    ("web.de", [], "gmx"),
    ("foo.de", ["mx00.emig.gmx.net"], "gmx"),
    ("wanadoo.fr", [], "orange"),
    ("foo.cn", ["mx3.qq.com"], "qq"),
    ("126.com", [], "netease"),
    ("foo.com", ["mx01.mail.icloud.com"], "icloud"),
    ("foo.org", ["other.example.net", "MX1.COMCAST.NET"], "comcast"),  # any MX host counts
    ("Unknown-Domain.Example", ["mx.unknown-domain.example"], "unknown-domain.example"),
    ("nomx.example.", [], "nomx.example"),
]


@pytest.mark.parametrize(("domain", "mx", "expected"), ROLLUP)
def test_mx_rollup(domain: str, mx: list[str], expected: str) -> None:
    assert KB.isp_for(domain, mx) == expected


def test_member_domain_beats_mx_patterns() -> None:
    assert KB.isp_for("hotmail.com", ["gmail-smtp-in.l.google.com"]) == "outlook"


# ---- merging ----------------------------------------------------------------------------------
def test_partial_override_keeps_other_shipped_keys() -> None:
    kb = KnowledgeBase.from_dicts(SHIPPED, {"isp": {"gmail": {"sending": {"max_connections": 2}}}})
    rule = kb.effective("gmail")
    assert rule.sending.max_connections == 2
    assert rule.sending.messages_per_connection == 50  # shipped isp.gmail
    assert rule.sending.tact == 60  # shipped default
    assert rule.speed == KB.effective("gmail").speed


def test_override_default_applies_under_shipped_isp_values() -> None:
    kb = KnowledgeBase.from_dicts(
        SHIPPED, {"default": {"sending": {"messages_per_connection": 7, "timeout": "2m"}}}
    )
    assert (
        kb.effective("gmail").sending.messages_per_connection == 50
    )  # shipped isp beats override default
    assert kb.effective("gmail").sending.timeout == 120
    assert kb.effective("example.com").sending.messages_per_connection == 7


def test_live_edit_wins() -> None:
    kb = KnowledgeBase.from_dicts(SHIPPED, {"isp": {"gmail": {"speed": {"max": 800}}}})
    assert kb.effective("gmail").speed.max == 800
    live = kb.effective("gmail", {"speed": {"max": 300}, "sending": {"max_connections": 3}})
    assert (live.speed.max, live.speed.min, live.sending.max_connections) == (300, 5, 3)
    assert kb.effective("gmail").speed.max == 800  # a live edit is not cached as the file rule


def test_inherited_start_is_clamped_when_a_later_layer_moves_the_bounds() -> None:
    assert KB.effective("gmail", {"speed": {"max": 30}}).speed.start == 30
    with pytest.raises(RulesError, match="start"):
        KB.validate_live("gmail", {"speed": {"max": 30, "start": 40}})


def test_replies_order_specific_first() -> None:
    override = {
        "default": {"replies": [{"name": "od", "match": "x", "action": "defer"}]},
        "isp": {"gmail": {"replies": [{"name": "og", "match": "x", "action": "defer"}]}},
    }
    kb = KnowledgeBase.from_dicts(SHIPPED, override)
    live = {"replies": [{"name": "live", "match": "x", "action": "defer"}]}
    names = [r.name for r in kb.effective("gmail", live).replies]
    shipped_gmail = [r["name"] for r in SHIPPED["isp"]["gmail"]["replies"]]
    shipped_default = [r["name"] for r in SHIPPED["default"]["replies"]]
    assert names == ["live", "og", *shipped_gmail, "od", *shipped_default]
    assert match_reply(Reply.parse(421, "x"), kb.effective("gmail", live)).name == "live"


def test_override_replaces_a_shipped_reply_rule_by_name() -> None:
    override = {
        "isp": {
            "yahoo": {
                "replies": [
                    {
                        "name": "yahoo_tss04",
                        "match": r"\[TSS04\]",
                        "action": "lock",
                        "duration": "30m",
                    }
                ]
            }
        }
    }
    rule = KnowledgeBase.from_dicts(SHIPPED, override).effective("yahoo")
    tss04 = [r for r in rule.replies if r.name == "yahoo_tss04"]
    assert len(tss04) == 1 and tss04[0].duration == 1800


def test_override_can_add_an_isp() -> None:
    override = {
        "isp": {
            "acme": {
                "mx": ["*.acme-mail.example"],
                "domains": ["acme.example"],
                "partitions": 1,
                "speed": {"max": 10, "start": 2},
            }
        }
    }
    kb = KnowledgeBase.from_dicts(SHIPPED, override)
    assert kb.isp_names()[-1] == "acme"
    assert kb.isp_for("foo.example", ["mx1.acme-mail.example"]) == "acme"
    assert kb.effective("acme").speed.max == 10 and kb.partitions("acme") == 1


def test_to_dict_for_display() -> None:
    data = KB.effective("gmail").to_dict()
    assert data["isp"] == "gmail" and data["partitions"] == 2
    assert data["sending"]["max_connections"] == 5
    assert data["replies"][0]["name"] == "gmail_428_ip_rate"


# ---- validation -------------------------------------------------------------------------------
def _problems(override: dict[str, Any]) -> str:
    with pytest.raises(RulesError) as e:
        KnowledgeBase.from_dicts(SHIPPED, override)
    assert isinstance(e.value, ConfigError)
    return str(e.value)


def test_unknown_key_with_location() -> None:
    text = _problems({"isp": {"gmail": {"sending": {"max_conections": 2}}}, "defualt": {}})
    assert "override: isp.gmail.sending.max_conections: unknown key" in text
    assert "override: defualt: unknown key" in text


def test_bad_regex_with_location() -> None:
    text = _problems(
        {"isp": {"gmail": {"replies": [{"name": "oops", "match": "([", "action": "defer"}]}}}
    )
    assert "isp.gmail.replies[0](oops).match: bad regex" in text


def test_min_above_max_with_location() -> None:
    text = _problems({"isp": {"gmail": {"speed": {"min": 2000, "max": 1200}}}})
    assert "isp.gmail.speed: speed.min (2000.0) is above speed.max (1200.0)" in text


def test_all_problems_listed_at_once() -> None:
    text = _problems(
        {
            "isp": {
                "gmail": {"speed": {"max": "fast"}, "partitions": 0},
                "yahoo": {"partitions": 50, "retry": {"mode": "window", "window": ["2h", "1h"]}},
                "outlook": {
                    "replies": [
                        {"name": "a", "match": "x", "action": "lock"},
                        {"name": "a", "match": "y", "action": "explode", "category": "odd"},
                    ]
                },
                "icloud": {"domains": ["gmail.com"]},
            },
            "default": {"mx": ["*.example"]},
        }
    )
    for expected in (
        "isp.gmail.speed.max: Input should be a valid number",
        "isp.gmail.partitions: Input should be greater than or equal to 1",
        "isp.yahoo.partitions: 50 partitions but sending.max_connections is 10",
        "isp.yahoo.retry: retry window: from is after to",
        "isp.outlook.replies[0](a): reply rule 'a': action lock needs a duration",
        "isp.outlook.replies[1](a).name: duplicate rule name",
        "isp.outlook.replies[1](a).action: Input should be",
        "isp.outlook.replies[1](a).category: unknown category 'odd'",
        "isp.icloud.domains: 'gmail.com' is also listed in isp.gmail",
        "default.mx: not allowed in [default]",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert len(text.splitlines()) == 10


def test_validate_live() -> None:
    assert KB.validate_live("gmail", {"speed": {"max": 200}}).speed.max == 200
    with pytest.raises(RulesError) as e:
        KB.validate_live("gmail", {"speed": {"max": -1, "bogus": 1}, "sending": 3})
    lines = e.value.problems
    assert any("isp.gmail.speed.max: Input should be greater than 0" in p for p in lines)
    assert any("isp.gmail.speed.bogus: unknown key" in p for p in lines)
    assert any("isp.gmail.sending: Input should be a valid dictionary" in p for p in lines)
    with pytest.raises(RulesError, match=r"isp.gmail.speed: speed.min \(500.0\) is above"):
        KB.validate_live("gmail", {"speed": {"min": 500, "max": 100}})
    with pytest.raises(ConfigError, match="rules for gmail"):
        KB.effective("gmail", {"retry": {"mode": "window"}})


def test_disposition_defers_a_5xx_that_means_later() -> None:
    reply = Reply.parse(552, "5.5.3 Too many recipients")
    assert disposition(reply, None, later=False) == "bounce"
    assert disposition(reply, None, later=True) == "defer"
    # not told: the shipped classifier reads the wording (callers that chain the steps by hand)
    assert disposition(reply, None) == "defer"
    assert disposition(Reply.parse(550, "5.1.1 User unknown"), None) == "bounce"
