"""Issue 12, round 19: classes of replies that the blind part heldout23 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout23.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- a block list of the message's content, URLs or links: the content, not our IP ---------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "ERR_BODY_BL, your message has blacklisted content; rejected"),
        (554, "rejected: blocklisted URL in message body"),
        (550, "5.7.1 message refused, it carries block-listed links"),
        (552, "denylisted URIs found (see https://example.net/uribl)"),
    ],
)
def test_listed_content_or_links_is_content(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_content", "bounce", False)


def test_listed_content_deferred_stays_a_deferral() -> None:
    assert verdict(451, "4.7.1 blacklisted content found, try again later") == (
        "spam_content",
        "defer",
        False,
    )


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 Service unavailable; client [192.0.2.5] is blacklisted",
        "your IP 198.51.100.2 is listed on a block list",
        "sender domain example.com is blacklisted",
    ],
)
def test_our_side_listed_stays_a_block(text: str) -> None:
    # the limit of the class: what is listed is our IP, host or domain
    assert verdict(550, text) == ("spam_block", "bounce", False)
