"""Bounce classification against a table of real reply lines (research notes, SFM, KumoMTA)."""

from __future__ import annotations

import pytest

from kmta.errors import ConfigError
from kmta.policy.classify import CATEGORIES, Classifier, is_recipient_problem, is_throttle
from kmta.policy.reply import Reply

CLASSIFIER = Classifier.load()

# (code, message as the SMTP client delivers it, expected category)
PROVIDER = [
    (250, "2.0.0 OK  1700000000 a1-20020a.123 - gsmtp", "delivered"),
    (250, "Ok: queued as 4Tq2Jk0xyz", "delivered"),
    (
        550,
        (
            "5.1.1 The email account that you tried to reach does not exist. Please try\n"
            "5.1.1 double-checking the recipient's email address for typos"
        ),
        "bad_mailbox",
    ),
    (
        550,
        "Message was not accepted -- invalid mailbox.  Local mailbox x@mail.ru is unavailable: user not found",
        "bad_mailbox",
    ),
    (
        554,
        "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - mta1.mail.ne1.yahoo.com",
        "bad_mailbox",
    ),
    (550, "5.5.0 Requested action not taken: mailbox unavailable (S2017062302)", "bad_mailbox"),
    (
        550,
        "5.1.1 Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416 [416]",
        "bad_mailbox",
    ),
    (
        550,
        "Mailbox not found. http://service.exmail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000728",
        "bad_mailbox",
    ),
    (552, "5.2.2 The email account that you tried to reach is over quota.", "mailbox_full"),
    (
        450,
        (
            "4.2.1 The user you are trying to contact is receiving mail at a rate that\n"
            "4.2.1 prevents additional messages from being delivered."
        ),
        "rate_limit",
    ),
    (
        421,
        "4.7.1 Messages to x@icloud.com deferred due to excessive volume. Try again later",
        "rate_limit",
    ),
    (552, "5.3.4 Message size exceeds fixed maximum message size", "message_too_large"),
    (
        550,
        "5.1.2 Host or domain name not found. Name service error for name=exmaple.com",
        "bad_domain",
    ),
    (
        421,
        (
            "4.7.28 [203.0.113.5      15] Gmail has detected an unusual rate of unsolicited mail\n"
            "4.7.28 originating from your IP address. To protect our users from spam, mail sent from your\n"
            "4.7.28 IP address has been temporarily rate limited."
        ),
        "rate_limit",
    ),
    (
        421,
        "4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your SPF domain",
        "rate_limit",
    ),
    (
        451,
        (
            "4.7.650 The mail server [203.0.113.5] has been temporarily rate limited due to IP reputation. "
            "For e-mail delivery information, see https://postmaster.live.com (S775)"
        ),
        "rate_limit",
    ),
    (
        451,
        "4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77714) [BL02EPF0001A0F9.namprd09.prod.outlook.com]",
        "rate_limit",
    ),
    (421, "Max message per connection reached, closing transmission channel", "rate_limit"),
    (
        550,
        "Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000722",
        "rate_limit",
    ),
    (
        550,
        "RP:ORQ 163 mx42,QMCowAD3u0,0 1700000000 http://mail.163.com/help/help_spam_16.htm?ip=203.0.113.5",
        "rate_limit",
    ),
    (554, "HL:ITC 163 mx42 http://mail.163.com/help/help_spam_16.htm?ip=203.0.113.5", "rate_limit"),
    (
        421,
        "mwinf5c10 ME Trop de connexions, veuillez verifier votre configuration. [OFR004_104]",
        "rate_limit",
    ),
    (421, "RL000010 Too many sessions from 203.0.113.5", "rate_limit"),
    (
        421,
        (
            "4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected volume or user "
            "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
        ),
        "spam_block",
    ),
    (
        553,
        "5.7.1 [BL21] Connections will not be accepted from 203.0.113.5, because the ip is in Spamhaus's list",
        "spam_block",
    ),
    (
        550,
        (
            "5.7.1 Unfortunately, messages from [203.0.113.5] weren't sent. Please contact your Internet service "
            "provider since part of their network is on our block list (S3150)."
        ),
        "spam_block",
    ),
    (
        421,
        "4.7.0 This message is suspicious due to the very low reputation of the sending domain.",
        "spam_block",
    ),
    (
        550,
        "5.7.1 [203.0.113.5] Our system has detected that this message is likely unsolicited mail.",
        "spam_content",
    ),
    (
        550,
        "spam message rejected. Please visit http://help.mail.ru/notspam-support/id?c=abc",
        "spam_content",
    ),
    (
        554,
        "5.7.1 [1] Message rejected under suspicion of SPAM; https://ya.cc/1IrBc 1700000000-abc",
        "spam_content",
    ),
    (
        554,
        "IP address is block listed.\nFor explanation visit https://postmaster.gmx.net/en/case?c=r0201",
        "spam_block",
    ),
    (
        550,
        "mwinf5c05 ME Client host blocked for spamming issues. OFR006_102 Ref http://csi.cloudmark.com",
        "spam_block",
    ),
    (
        421,
        "mwinf5c79 ME Service refuse. Veuillez essayer plus tard. [OFR004_105] [B]",
        "spam_block",
    ),
    (451, "DT:SPM 163 smtp10,DsCowAA 1700000000, please try again", "spam_block"),
    (421, "[HCM1] Your mail from 203.0.113.5 was deferred.", "spam_block"),
    (
        554,
        "resimta-h1p-028 Comcast block for spam. Please see http://postmaster.comcast.net/smtp-error-codes.php#BL000000",
        "spam_block",
    ),
    (
        550,
        (
            "5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all "
            "senders to authenticate with either SPF or DKIM."
        ),
        "auth_failure",
    ),
    (
        421,
        (
            "4.7.32 Your email has been rate limited because the From: header (RFC5322) in this message "
            "isn't aligned with either the authenticated SPF or DKIM organizational domain."
        ),
        "auth_failure",
    ),
    (554, "Message not allowed - [PH01] Email not accepted for policy reasons.", "policy"),
    (550, "5.7.1 [CS01] Message rejected due to local policy.", "policy"),
    (
        554,
        "Reject due to policy restrictions. For explanation visit https://postmaster.gmx.net",
        "policy",
    ),
    (451, "4.7.1 Greylisted, see http://postgrey.schweikert.ch/help/example.com.html", "greylist"),
    (454, "4.7.1 <x@example.net>: Relay access denied", "relay_denied"),
    (451, "4.7.0 Temporary server error. Please try again later. PRX6", "other_temporary"),
    (451, "[BS02] Temporary server error. Please try again later.", "other_temporary"),
    (451, "4.7.1 Sorry, the service is currently unavailable.", "other_temporary"),
    (421, "4.4.2 mx.example.net Error: timeout exceeded", "timeout"),
    (550, "Requested action not taken", "other_permanent"),
    (450, "Requested mail action not taken", "other_temporary"),
]

INTERNAL = [
    ("Connection refused by 203.0.113.5:25", "connection_failure"),
    ("connect to mx.example.com timed out after 30 s", "timeout"),
    ("TLS handshake failed: certificate verify failed", "connection_failure"),
    ("DNS lookup of example.com failed: SERVFAIL", "dns_failure"),
    ("example.com: NXDOMAIN", "bad_domain"),
    ("something odd happened", "connection_failure"),
]


@pytest.mark.parametrize(("code", "message", "expected"), PROVIDER)
def test_provider_reply_category(code: int, message: str, expected: str) -> None:
    assert CLASSIFIER.classify(Reply.parse(code, message)) == expected


@pytest.mark.parametrize(("message", "expected"), INTERNAL)
def test_internal_reply_category(message: str, expected: str) -> None:
    assert CLASSIFIER.classify(Reply.parse(None, message, internal=True)) == expected


def test_table_is_big_and_covers_most_categories() -> None:
    assert len(PROVIDER) >= 30
    seen = {e for *_, e in PROVIDER} | {e for _, e in INTERNAL}
    assert seen <= CATEGORIES
    assert len(seen) >= 15


def test_internal_text_does_not_match_provider_rules() -> None:
    # A provider's "Connection refused" is classified by provider rules, kmta's own by internal ones.
    text = "Connection refused from [203.0.113.5] due to exceed max concurrent connections. IB007"
    assert CLASSIFIER.classify(Reply.parse(451, text)) == "rate_limit"
    assert (
        CLASSIFIER.classify(Reply.parse(None, "spam message rejected", internal=True))
        == "connection_failure"
    )


def test_throttle_and_recipient_predicates() -> None:
    assert (
        is_throttle("rate_limit") and is_throttle("timeout") and is_throttle("connection_failure")
    )
    assert not is_throttle("spam_block") and is_throttle("spam_block", temporary=True)
    assert not is_throttle("bad_mailbox")
    assert is_recipient_problem("bad_mailbox") and is_recipient_problem("mailbox_full")
    assert not is_recipient_problem("rate_limit")


def test_bad_rules_listed_with_locations() -> None:
    with pytest.raises(ConfigError) as e:
        Classifier.from_dict(
            {
                "rule": [
                    {"category": "nonsense", "match": "x"},
                    {"category": "policy", "match": "(", "codes": [550]},
                    {"category": "policy", "match": "y", "codes": ["6xx"], "colour": "red"},
                ],
                "extra": 1,
            }
        )
    text = str(e.value)
    for where in ("rule[0].category", "rule[1].match", "rule[2].codes", "rule[2].colour", "extra"):
        assert where in text


def test_codes_restrict_a_rule() -> None:
    classifier = Classifier.from_dict(
        {"rule": [{"category": "greylist", "match": "later", "codes": ["45x"]}]}
    )
    assert classifier.classify(Reply.parse(451, "try later")) == "greylist"
    assert classifier.classify(Reply.parse(550, "try later")) == "other_permanent"


# Enhanced codes carry RFC 3463 meaning when the wording is unknown to every rule.
@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (550, "5.1.1 zzz", "bad_mailbox"),
        (550, "5.1.2 zzz", "bad_domain"),
        (550, "5.1.10 zzz", "bad_domain"),
        (553, "5.1.7 zzz", "bad_sender"),
        (550, "5.1.8 zzz", "bad_sender"),
        (550, "5.2.1 zzz", "inactive_mailbox"),
        (552, "5.2.2 zzz", "mailbox_full"),
        (552, "5.3.4 zzz", "message_too_large"),
        (452, "4.5.3 zzz", "rate_limit"),
        (552, "5.5.3 zzz", "rate_limit"),
        (550, "5.7.25 zzz", "reverse_dns"),
        (550, "5.7.23 zzz", "auth_failure"),
        (550, "5.7.606 zzz", "spam_block"),
        (550, "5.7.1 zzz", "policy"),
        (554, "5.6.7 zzz", "other_permanent"),
        (550, "zzz (#5.1.1)", "bad_mailbox"),  # quoted in the text when none leads it
        (550, "5.1.0 zzz", "other_permanent"),  # "other address status": no guess, no suppression
        (521, "mx.example.org does not accept mail", "bad_domain"),
    ],
)
def test_enhanced_code_meaning(code: int, message: str, expected: str) -> None:
    assert CLASSIFIER.classify(Reply.parse(code, message)) == expected


@pytest.mark.parametrize(
    ("code", "message", "later"),
    [
        (552, "5.5.3 Too many recipients", True),
        (550, "5.7.1 Service temporarily unavailable, please try again later", True),
        (550, "Your IP has been temporarily blocked, try again in 30 minutes", True),
        (421, "4.7.0 [TS03] All messages from 203.0.113.5 will be permanently deferred; "
              "Retrying will NOT succeed. Try later is pointless", False),  # the veto wins
        (550, "5.1.1 User unknown", False),
    ],
)
def test_later_wording(code: int, message: str, later: bool) -> None:
    assert CLASSIFIER.explain(Reply.parse(code, message)).later is later


def test_sender_wording_beats_recipient_codes() -> None:
    # the expensive mistake: suppressing a good recipient for our own envelope sender
    for text in ("5.1.1 <b@ours.example>: Sender address rejected: User unknown in virtual table",
                 "5.1.1 Sender address rejected: Domain not found",
                 "5.7.1 Sender domain must exist",
                 "From: Domain is invalid. Please provide a valid From: IB506",
                 "Your domain has no DNS/MX entries"):
        assert CLASSIFIER.classify(Reply.parse(550, text)) == "bad_sender", text


def test_enhanced_and_later_keys_are_validated() -> None:
    with pytest.raises(ConfigError) as e:
        Classifier.from_dict({"rule": [
            {"category": "policy", "enhanced": ["5.7"]},
            {"match": "x"},
            {"later": "yes", "match": "y"},
            {"category": "policy"},
        ]})
    text = str(e.value)
    for where in ("rule[0].enhanced", "rule[1].category", "rule[2].later", "rule[3].match"):
        assert where in text
    c = Classifier.from_dict({"rule": [
        {"category": "bad_mailbox", "enhanced": ["x.1.1"], "name": "r"},
        {"later": True, "match": "later"},
    ]})
    assert c.explain(Reply.parse(450, "4.1.1 later")).rule == "r"
    assert c.explain(Reply.parse(550, "5.7.1 later")).later


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (550, "5.1.1 <x@example.de>: Benutzer unbekannt", "bad_mailbox"),
        (550, "Utilisateur inconnu", "bad_mailbox"),
        (550, "5.1.1 utente inesistente", "bad_mailbox"),
        (550, "5.1.1 Usuario desconocido", "bad_mailbox"),
        (550, "5.1.1 Пользователь не найден", "bad_mailbox"),
        (550, "5.1.1 用户不存在", "bad_mailbox"),
        (552, "5.2.2 Postfach voll", "mailbox_full"),
        (552, "5.2.2 Boîte aux lettres pleine", "mailbox_full"),
        (552, "5.1.1 Quota dépassé", "mailbox_full"),
        (550, "5.2.1 Konto deaktiviert", "inactive_mailbox"),
        (550, "Cuenta suspendida", "inactive_mailbox"),
    ],
)
def test_other_languages(code: int, message: str, expected: str) -> None:
    assert CLASSIFIER.classify(Reply.parse(code, message)) == expected


def test_recipient_domain_wording() -> None:
    for text in ("5.1.2 The domain of the recipient does not exist",
                 "5.1.2 Host or domain name not found. Name service error for name=x.example"):
        assert CLASSIFIER.classify(Reply.parse(550, text)) == "bad_domain", text


def test_addresses_in_a_reply_are_not_its_wording() -> None:
    """The recipient's or sender's address quoted in a reply never decides its class: a domain
    named greylist-example.test or a mailbox named spam@ says nothing about the reply."""
    from kmta.policy.classify import Classifier
    from kmta.policy.reply import Reply

    c = Classifier.shipped()
    assert c.classify(Reply.parse(
        550, "5.1.1 <unknown7@greylist-example.test> recipient rejected: user unknown")) \
        == "bad_mailbox"
    assert c.classify(Reply.parse(550, "5.1.1 <ratelimit@quota-example.test>: user unknown")) \
        == "bad_mailbox"
    assert c.classify(Reply.parse(451, "4.7.1 Greylisted, try again in 300 seconds")) \
        == "greylist"
