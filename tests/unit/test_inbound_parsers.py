"""The inbound verdicts over fixture messages (tests/data/inbound/: RFC 3464/5965/3834 and the
major providers' layouts), classified by the shipped bounce classifier."""
from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

import pytest

from kmta.policy import arf, dsn, verp
from kmta.policy.classify import Classifier
from kmta.policy.inbound import Feedback, Ignored, Unreadable, read
from kmta.policy.unsubscribe import make_token, read_token

DATA = Path(__file__).resolve().parents[1] / "data" / "inbound"
SECRET = b"test-verp-secret"
USECRET = b"test-unsub-secret"
ID1 = "18c2f3a4b5c-0123456789abcdef"
ID2 = "18c2f3a4b5d-fedcba9876543210"
VERP1 = verp.envelope_sender(ID1, "bounces.shop.example", SECRET)
FBL = "fbl@bounces.shop.example"
CLASSIFIER = Classifier.load()


def verdict(name: str, rcpt: str = VERP1):
    return read((DATA / name).read_bytes(), rcpt, CLASSIFIER, SECRET, USECRET,
                our_domains=frozenset({"shop.example"}))


def test_fixture_verp_address_is_the_documented_one():
    assert VERP1 == "b+aeayylz2jnoaci2fm6e2xtppejv77bgc@bounces.shop.example"


# name, rcpt, (kind, id, to, tied_by, hard, code, enhanced, category)
BOUNCES = [
    ("gmail_nosuchuser.eml", VERP1,
     ("async_bounce", ID1, "nobody.here@gmail.com", "verp", True, 550, "5.1.1", "bad_mailbox")),
    ("outlook_ndr.eml", VERP1,
     ("async_bounce", ID1, "gone.user@outlook.com", "verp", True, 550, "5.5.0", "bad_mailbox")),
    # sent to the From address, no VERP: tied by the returned X-Kmta-Id
    ("exchange_resolver.eml", "news@bounces.shop.example",
     # Exchange's 5.1.10 is "recipient not found" (h12's classifier knows it)
     ("async_bounce", ID2, "left.company@corp.example", "x-kmta-id", True, 550, "5.1.10",
      "bad_mailbox")),
    ("postfix_user_unknown.eml", VERP1,
     ("async_bounce", ID1, "old.account@mailhost.example", "verp", True, 550, "5.1.1",
      "bad_mailbox")),
    ("gmail_overquota.eml", VERP1,
     ("async_bounce", ID1, "full.box@gmail.com", "verp", False, 552, "5.2.2", "mailbox_full")),
    ("yahoo_failure_notice.eml", VERP1,
     ("async_bounce", ID1, "no.account@yahoo.com", "verp", True, 554, None, "bad_mailbox")),
]


@pytest.mark.parametrize("name,rcpt,want", BOUNCES, ids=[b[0] for b in BOUNCES])
def test_bounces(name, rcpt, want):
    v = verdict(name, rcpt)
    assert isinstance(v, Feedback), v
    assert (v.kind, v.id, v.to, v.tied_by, v.hard, v.code, v.enhanced_code, v.category) == want


def test_gmail_bounce_details():
    v = verdict("gmail_nosuchuser.eml")
    assert v.campaign == "spring-sale"  # from the returned Feedback-ID
    assert v.sender == VERP1
    assert v.detail["reporting_mta"] == "googlemail.com"
    assert v.detail["remote_mta"].startswith("gmail-smtp-in.l.google.com.")
    assert "NoSuchUser" in v.response and "550-5.1.1" in v.response


def test_wrong_verp_mac_falls_back_to_headers():
    forged = VERP1.replace("b+a", "b+b", 1)
    v = verdict("gmail_nosuchuser.eml", forged)
    assert isinstance(v, Feedback) and v.tied_by == "x-kmta-id" and v.id == ID1


def test_untied_dsn_is_unreadable_not_guessed():
    v = verdict("rfc3464_untied.eml", "someone@bounces.shop.example")
    assert isinstance(v, Unreadable) and "not tied" in v.reason


def test_delayed_dsn_is_no_bounce():
    v = verdict("postfix_delayed.eml")
    assert isinstance(v, Ignored) and "delayed" in v.reason


COMPLAINTS = [
    ("arf_rfc5965.eml", (ID1, "complainer@mailbox.example", "verp", "abuse",
                         "mail.mailbox.example", "192.0.2.1", None)),
    ("arf_yahoo_cfl.eml", (ID1, "reader@yahoo.com", "verp", "abuse",
                           "Yahoo!-Mail-Feedback/2.0", None, "spring-sale")),
    ("arf_microsoft_jmrp.eml", (ID2, "reader@hotmail.com", "x-kmta-id", "abuse",
                                "Microsoft Junk Mail Reporting Program", "192.0.2.10", None)),
]


@pytest.mark.parametrize("name,want", COMPLAINTS, ids=[c[0] for c in COMPLAINTS])
def test_complaints(name, want):
    v = verdict(name, FBL)
    assert isinstance(v, Feedback) and v.kind == "complaint" and v.hard, v
    got = (v.id, v.to, v.tied_by, v.detail["feedback_type"], v.detail.get("source"),
           v.detail.get("source_ip"), v.campaign)
    assert got == want


def test_arf_fields():
    rep = arf.parse(message_from_bytes((DATA / "arf_rfc5965.eml").read_bytes()))
    assert rep.original_mail_from == VERP1
    assert rep.reported_domain == "shop.example"
    assert rep.arrival_date == "Thu, 8 Mar 2026 14:00:00 EDT"
    assert rep.original["subject"] == "Spring sale"


def test_not_spam_report_is_no_complaint():
    v = verdict("arf_not_spam.eml", FBL)
    assert isinstance(v, Ignored) and "not-spam" in v.reason


@pytest.mark.parametrize("name,kind", [
    ("vacation_exchange.eml", "vacation"), ("vacation_gmail.eml", "vacation"),
    ("challenge_boxbe.eml", "challenge"), ("human_reply.eml", None)])
def test_automatic_replies_are_not_bounces(name, kind):
    v = verdict(name)
    assert isinstance(v, Ignored), v
    if kind:
        assert v.reason == kind
    else:
        assert v.reason.startswith("not a report")


def test_unsubscribe_by_mail():
    v = verdict("unsubscribe_mailto.eml", "unsubscribe@bounces.shop.example")
    assert isinstance(v, Feedback)
    assert (v.kind, v.id, v.to, v.campaign, v.hard, v.tied_by) == (
        "unsubscribe", ID1, "reader@gmail.com", "spring-sale", True, "token")
    assert v.detail["method"] == "mailto"


def test_forged_unsubscribe_by_mail_refused():
    v = verdict("unsubscribe_forged.eml", "unsubscribe@bounces.shop.example")
    assert isinstance(v, Ignored) and "forged" in v.reason


def test_garbage_is_unreadable():
    assert isinstance(verdict("garbage.eml"), Unreadable)
    assert isinstance(read(b"", VERP1, CLASSIFIER, SECRET), Unreadable)


def test_dsn_recipient_blocks():
    d = dsn.parse(message_from_bytes((DATA / "postfix_user_unknown.eml").read_bytes()))
    assert d.reporting_mta == "mx.mailhost.example"
    [r] = d.recipients
    assert (r.recipient, r.original_recipient, r.action, r.status, r.diagnostic_type,
            r.remote_mta) == ("old.account@mailhost.example", "old.account@mailhost.example",
                              "failed", "5.1.1", "smtp", "127.0.0.1")
    assert r.reply().code == 550 and "User unknown" in r.reply().text
    assert d.original["x-kmta-id"] == ID1


def test_global_dsn_text_part():
    raw = (b"From: m@x.example\nTo: " + VERP1.encode() + b"\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
           b"--b\nContent-Type: text/plain\n\nfailed\n--b\n"
           b"Content-Type: message/global-delivery-status\n\n"
           b"Reporting-MTA: dns; x.example\n\nFinal-Recipient: rfc822; \xc3\xa9l\xc3\xa8ve@x.example\n"
           b"Action: failed\nStatus: 5.1.1\n\n--b--\n")
    v = read(raw, VERP1, CLASSIFIER, SECRET)
    assert isinstance(v, Feedback) and v.to == "élève@x.example" and v.hard
    assert v.code is None and v.enhanced_code == "5.1.1"


def test_unsubscribe_token_round_trip_and_forgery():
    t = make_token(USECRET, ID1, "Reader@Gmail.com", None)
    u = read_token(USECRET, t)
    assert (u.id, u.address, u.list) == (ID1, "reader@gmail.com", None)
    assert read_token(b"other", t) is None
    body, mac = t.split(".")
    assert read_token(USECRET, body[:-2] + "AA." + mac) is None
    assert read_token(USECRET, "garbage") is None
    assert read_token(USECRET, "a.b") is None


def test_unsubscribe_token_carries_the_sending_domain():
    from kmta.policy.suppression import unsubscribe_scope
    from kmta.policy.unsubscribe import links
    t = make_token(USECRET, ID1, "r@x.example", "spring", "Shop.Example")
    u = read_token(USECRET, t)
    assert (u.list, u.domain) == ("spring", "shop.example")
    old = read_token(USECRET, make_token(USECRET, ID1, "r@x.example", "spring"))
    assert old.domain is None  # a link made before tokens carried the domain still works
    url, mailto = links(USECRET, "https://u.example/x", ID1, "r@x.example", None,
                        "unsubscribe@b.example", "shop.example")
    tok = url.rsplit("/", 1)[1]
    assert read_token(USECRET, tok).domain == "shop.example" and mailto.endswith(tok)
    assert unsubscribe_scope("domain", "spring", "Shop.Example") == ("domain", "shop.example")
    assert unsubscribe_scope("campaign", "spring", "shop.example") == ("campaign", "spring")
    assert unsubscribe_scope("domain", "spring", None) == ("global", None)
    assert unsubscribe_scope("campaign", None, "shop.example") == ("global", None)
    assert unsubscribe_scope("global", "spring", "shop.example") == ("global", None)
