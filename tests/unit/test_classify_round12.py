"""Issue 12, round 12: classes of replies that the blind part heldout16 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout16.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- relaying refused in qmail-style words ("we don't relay", "not allowed to be relayed thru
# ---- this MTA"): relay_denied, not a generic 5.7.1 policy nor an unknown permanent failure ------


@pytest.mark.parametrize(
    "text",
    [
        "sorry, we don't relay for that domain (#5.7.1)",
        "that recipient is not allowed to be relayed thru this MTA",
        "mail for example.net isn't allowed to be relayed through this server without login",
    ],
)
def test_qmail_style_relay_refusals_are_relay_denied(text: str) -> None:
    assert verdict(553, text) == ("relay_denied", "bounce", False)
