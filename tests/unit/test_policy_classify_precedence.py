"""Which part of a reply decides, for classes of replies rather than single texts: the enhanced
code against vague words, the sender's own account and block lists against recipient words, and
the two conservative rules (a 4xx never bounces on a pattern; a 5.1.1 unknown user always does).

Texts are made up per class (placeholders, varied wording); real ones are in tests/data/replies/.
"""

from __future__ import annotations

import pytest

from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase
from kmta.policy.reply import Reply
from kmta.policy.reply_rules import disposition
from kmta.policy.verdict import judge
from schemas.rules import ReplyRule

CLASSIFIER = Classifier.load()
KB = KnowledgeBase.load()


def category(code: int, text: str) -> str:
    return CLASSIFIER.classify(Reply.parse(code, text))


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds"),
        (554, "5.6.13 The message contains characters the next hop cannot convert"),
        (554, "5.6.7 Message contains a non-ASCII address not permitted here"),
    ],
)
def test_media_codes_win_over_vague_content_words(code: int, text: str) -> None:
    # RFC 3463 X.6 names a format problem; "message contains" alone is no spam verdict
    assert category(code, text) == "other_permanent"
    assert category(450, text.replace("5.6.", "4.6.", 1)) == "other_temporary"


@pytest.mark.parametrize(
    "text",
    [
        "5.7.705 Access denied, tenant has exceeded threshold",
        "5.7.708 Access denied, traffic not accepted from this IP",
        "5.7.750 Service unavailable. Client blocked from sending from unregistered domains",
    ],
)
def test_provider_three_digit_codes_win_over_rate_words(text: str) -> None:
    v = judge(Reply.parse(550, text), CLASSIFIER, None)
    assert (v.category, v.verdict, v.suppress) == ("spam_block", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (432, "4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", "rate_limit"),
        (451, "4.7.0 connection threshold reached for your network, slow down", "rate_limit"),
        (550, "ReceivingRateExceeded", "rate_limit"),
        (452, "4.2.2 Quota limit exceeded for this mailbox", "mailbox_full"),
        (552, "5.2.2 storage limit exceeded", "mailbox_full"),
    ],
)
def test_limit_wording_in_either_order_and_x22_first(code: int, text: str, expected: str) -> None:
    assert category(code, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "5.7.0 Mail Sending denied. The sender account is disabled",
        "Your account has been suspended for sending spam",
        "5.7.1 sending user not allowed: mailbox locked",
    ],
)
def test_our_own_account_is_not_the_recipients(text: str) -> None:
    v = judge(Reply.parse(550, text), CLASSIFIER, None)
    assert (v.category, v.suppress) == ("bad_sender", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.0.1 Invalid Sender. Your domain has been blacklisted",
        "Sender address rejected: your IP is listed on a block list",
        "Sender domain rejected, currently blocklisted by our provider",
    ],
)
def test_an_asserted_block_listing_beats_sender_words(text: str) -> None:
    assert category(550, text) == "spam_block"


def test_a_block_list_merely_mentioned_is_not_a_listing() -> None:
    # "may be blacklisted" among other guesses asserts nothing
    text = "The account or domain may not exist, they may be blacklisted, or missing dns entries"
    assert category(550, text) != "spam_block"


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (554, "5.7.1 <x@example.net>: Recipient address rejected: Access denied", "policy"),
        (550, "permanent failure for one or more recipients (x@example.net:blocked)", "policy"),
        (550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", "bad_mailbox"),
    ],
)
def test_access_lists_are_policy_unless_the_code_says_unknown(
        code: int, text: str, expected: str) -> None:
    assert category(code, text) == expected


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (451, "4.4.316 Connection refused [Message=Socket error code 10061]", "connection_failure"),
        (421, "4.4.2 lost connection with the next hop, network unreachable", "connection_failure"),
        (450, "4.1.1 <x@example.net>: Recipient address rejected: unverified address: "
              "host mx.example.net said: lost connection", "other_temporary"),
        (451, "4.4.8 MX hosts of example.net failed MTA-STS validation", "policy"),
        (451, "4.7.5 DANE TLSA records did not match", "policy"),
        (451, "4.7.19 RRVS test cannot be completed", "other_temporary"),
        (550, "5.7.19 RRVS test cannot be completed", "other_permanent"),
        (553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", "relay_denied"),
    ],
)
def test_transport_and_relay_wording(code: int, text: str, expected: str) -> None:
    assert category(code, text) == expected


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "Uživatel neexistuje", "bad_mailbox"),
        (550, "Adres odbiorcy nie istnieje", "bad_mailbox"),
        (550, "Usuário desconhecido", "bad_mailbox"),
        (550, "Ontvanger bestaat niet", "bad_mailbox"),
        (552, "Schránka je přeplněná", "mailbox_full"),
        (552, "Skrzynka odbiorcy jest pełna", "mailbox_full"),
        (552, "Caixa postal cheia", "mailbox_full"),
        (550, "Konto zostało zablokowane", "inactive_mailbox"),
    ],
)
def test_more_languages(code: int, text: str, expected: str) -> None:
    assert category(code, text) == expected


def test_a_bounce_pattern_never_bounces_a_temporary_reply() -> None:
    rule = ReplyRule(name="perm", match="mailbox not found", action="bounce",
                     category="bad_mailbox")
    assert disposition(Reply.parse(550, "5.1.1 Mailbox not found"), rule) == "bounce"
    assert disposition(Reply.parse(450, "4.1.1 Mailbox not found"), rule) == "defer"
    internal = Reply.parse(None, "mailbox not found", internal=True)
    assert disposition(internal, rule) == "defer"


@pytest.mark.parametrize(
    "text",
    [
        "5.1.1 The email account that you tried to reach does not exist. Please try again",
        "5.1.1 <x@example.net>: user unknown; please retry with a valid address",
        "5.1.2 Host or domain name not found, try again later",
    ],
)
def test_an_unknown_user_with_a_5_1_1_bounces_whatever_else_it_says(text: str) -> None:
    v = judge(Reply.parse(550, text), CLASSIFIER, None)
    assert (v.verdict, v.suppress, v.later) == ("bounce", True, False)
    # without the enhanced code the "try again" words still defer: nothing is sure then
    assert judge(Reply.parse(450, text.replace("5.1.", "4.1.", 1)), CLASSIFIER, None).verdict \
        == "defer"


def test_seznam_unknown_user() -> None:
    reply = Reply.parse(550, "5.1.1 szn; User hasn't got the service mapped")
    v = judge(reply, CLASSIFIER, KB.effective("seznam"))
    assert (v.category, v.verdict, v.suppress, v.rule) == (
        "bad_mailbox", "bounce", True, "seznam_user_unknown")


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "Server does not accept mail from bounce@example.org", "bad_sender"),
        (550, "5.1.0 Null sender is not allowed", "bad_sender"),
        (550, "Bad sender IP address 192.0.2.1", "spam_block"),
        (554, "5.7.1 Your host looks like a spammer", "spam_block"),
        (554, "Blocked - see https://blocklist.example.net/lookup", "spam_block"),
        (554, "5.7.1 Sending is refused: authentication is required", "auth_failure"),
        (550, "5.2.1 recipient suspended the service", "inactive_mailbox"),
        (550, "5.7.1 Client rejected: IP name lookup failed", "reverse_dns"),
        (550, "5.7.1 This system is not configured to relay mail", "relay_denied"),
        (421, "4.7.0 Per-IP connection limit reached, please send slower", "rate_limit"),
    ],
)
def test_who_is_meant_sender_ip_or_recipient(code: int, text: str, expected: str) -> None:
    # "does not accept mail from <sender>" is about us, not a domain that takes no mail
    v = judge(Reply.parse(code, text), CLASSIFIER, None)
    assert v.category == expected
    assert not v.suppress
