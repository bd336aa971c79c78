"""Pure DKIM decisions, VERP tokens and bulk-mail header fields (kmta/policy)."""
from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from kmta.errors import InputError
from kmta.policy.listheaders import feedback_id, unsubscribe_headers
from kmta.policy.signing import active_keys, headers_to_sign, signing_domain
from kmta.policy.verp import decode, encode, envelope_sender, message_id_of

SECRET = b"verp-test-secret"


def test_signing_domain_is_the_closest_aligned_parent() -> None:
    names = ["example.com", "mail.example.com", "other.org"]
    assert signing_domain("example.com", names) == "example.com"
    assert signing_domain("News.Example.COM", names) == "example.com"
    assert signing_domain("x.mail.example.com", names) == "mail.example.com"
    assert signing_domain("badexample.com", names) is None  # not a subdomain
    assert signing_domain("example.net", names) is None


@dataclass
class Key:
    selector: str
    nb: float | None
    na: float | None

    def window(self) -> tuple[float | None, float | None]:
        return self.nb, self.na


def test_rotation_windows_hand_over_at_the_instant() -> None:
    old, new, always = Key("old", None, 1000.0), Key("new", 1000.0, None), Key("ed", None, None)
    keys = [old, new, always]
    assert [k.selector for k in active_keys(keys, 999.999)] == ["old", "ed"]
    assert [k.selector for k in active_keys(keys, 1000.0)] == ["new", "ed"]
    assert active_keys([Key("x", 10, 20)], 20) == []


def test_header_list_oversigns_from_and_signs_only_present_fields() -> None:
    present = ["X-Kmta-Id", "Content-Type", "From", "To", "Subject", "Date", "Message-ID",
               "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID", "MIME-Version",
               "Received", "DKIM-Signature"]
    h = headers_to_sign(present)
    assert h == ["from", "from", "to", "subject", "date", "message-id", "mime-version",
                 "content-type", "list-unsubscribe", "list-unsubscribe-post", "feedback-id"]
    assert headers_to_sign(["from", "to", "to", "list-id"]) == ["from", "from", "to", "to",
                                                                 "list-id"]


@pytest.mark.parametrize("msg_id", ["18c1f2a3b4d-0123456789abcdef", "order-42", "a",
                                    "ü-ñ@x", "0123-0123456789abcdef"])
def test_verp_round_trip(msg_id: str) -> None:
    token = encode(msg_id, SECRET)
    assert token == token.lower() and token.isalnum()
    assert decode(token, SECRET) == msg_id
    assert decode(token.upper(), SECRET) == msg_id  # receivers may change the case
    assert decode(token, b"another secret") is None
    addr = envelope_sender(msg_id, "bounce.example.com", SECRET)
    assert addr.endswith("@bounce.example.com")
    assert len(addr.split("@")[0]) <= 64
    assert message_id_of(addr, SECRET) == msg_id


def test_verp_kmta_ids_are_packed() -> None:
    token = encode("18c1f2a3b4d-0123456789abcdef", SECRET)
    assert len(token) == 32


def test_verp_rejects_tampering_and_garbage() -> None:
    rng = random.Random(7)
    token = encode("18c1f2a3b4d-0123456789abcdef", SECRET)
    for _ in range(200):
        i = rng.randrange(len(token))
        c = rng.choice([ch for ch in "abcdefghijklmnopqrstuvwxyz234567" if ch != token[i]])
        assert decode(token[:i] + c + token[i + 1:], SECRET) is None
    for junk in ["", "!!!", "a", "b" * 200, "0189"]:
        assert decode(junk, SECRET) is None
    assert message_id_of("someone@bounce.example.com", SECRET) is None
    assert message_id_of(f"x+{token}@bounce.example.com", SECRET) is None


def test_verp_long_id_gets_the_plain_bounce_address() -> None:
    assert envelope_sender("x" * 100, "bounce.example.com", SECRET) == "b@bounce.example.com"


def test_unsubscribe_headers() -> None:
    assert unsubscribe_headers(None, None) == []
    assert unsubscribe_headers("https://u.example.com/u?t=1", "unsub@example.com") == [
        ("List-Unsubscribe", "<https://u.example.com/u?t=1>, <mailto:unsub@example.com>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
    # mailto only: no one-click (RFC 8058 needs an HTTPS URI)
    assert unsubscribe_headers(None, "mailto:u@example.com?subject=stop") == [
        ("List-Unsubscribe", "<mailto:u@example.com?subject=stop>")]
    for bad in ["http://u.example.com/", "https://", "https://x.example/a b",
                "https://x.example/>, <https://evil.test/"]:
        with pytest.raises(InputError):
            unsubscribe_headers(bad, None)
    with pytest.raises(InputError):
        unsubscribe_headers(None, "not an address")


def test_feedback_id() -> None:
    assert feedback_id(None, "shop.example", None, "esp") is None
    assert feedback_id("spring:sale", "shop.example", "bulk", "esp1") == (
        "spring-sale:shop.example:bulk:esp1")
    assert feedback_id("c1", "shop.example", None, "esp1") == "c1:shop.example:default:esp1"
