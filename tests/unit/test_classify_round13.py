"""Issue 12, round 13: classes of replies that the blind part heldout17 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout17.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- a message that does not comply with RFC 5322 or "the ... standard": its form, policy ------


@pytest.mark.parametrize(
    "text",
    [
        "5.6.0 message does not conform to RFC5322: no Message-ID",
        "5.6.0 your mail doesn't comply with rfc 2822, rejected",
        "5.6.0 message not conforming to the MIME standard",
    ],
)
def test_message_not_complying_with_a_standard_is_policy(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


# ---- the connecting side's own mail exchangers, and a sending domain it may not use: our sender --


@pytest.mark.parametrize(
    "text",
    [
        "5.4.0 your mail exchangers are all unreachable from here",
        "5.4.0 none of your MX hosts resolves to a public address",
        "5.7.1 client not authorized to send mail as this domain",
    ],
)
def test_our_mx_hosts_and_sending_domain_are_bad_sender(text: str) -> None:
    assert verdict(501, text) == ("bad_sender", "bounce", False)


# ---- RFC 5321's "too much mail data", and "exceeded storage allocation" under a size code: the
# ---- message's size, never the recipient's quota nor our sending rate -----------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (552, "Too much mail data, sorry"),
        (552, "4.3.1 too much message data for this server"),
        (554, "transaction aborted: too much mail data"),
        (552, "5.3.4 exceeded storage allocation for a single message"),
        (552, "5.2.3 storage allocation exceeded by this message"),
    ],
)
def test_size_in_rfc5321_words_is_message_too_large(code: int, text: str) -> None:
    assert verdict(code, text) == ("message_too_large", "bounce", False)


# ---- a client that did not wait for the server: the receiver's policy, not a protocol failure ----


@pytest.mark.parametrize(
    "text",
    [
        "5.5.0 please wait for my greeting before talking",
        "5.5.1 RCPT sent after end of pipelining group, closing",
        "5.5.1 you sent the pipelining command group too early",
    ],
)
def test_unsynchronised_client_is_policy(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


# ---- "authentication has failed", and relaying refused for the connecting side ------------------


def test_authentication_has_failed_is_auth_failure() -> None:
    assert verdict(554, "authentication has failed 3 times, goodbye") == (
        "auth_failure",
        "bounce",
        False,
    )


@pytest.mark.parametrize(
    "text",
    [
        "relay from your IP address 203.0.113.9 is denied",
        "relaying from host mx.example.net not permitted",
    ],
)
def test_relay_from_us_refused_is_relay_denied(text: str) -> None:
    assert verdict(554, text) == ("relay_denied", "bounce", False)
