"""Issue 12, round 25: part 28's blind misses (LBBS's SMTP server and its modules), by wording classes.

The identity we send under, refused, is our sender; a 4xx for a sender/recipient set "not seen
before" is greylisting; a message refused as long, or over a maximum character length, is its size
(a line's length stays the message's form); a recipient not authorized to receive outside mail is
the receiver's policy and is kept, whatever its code; a receiver that takes only plain text states
a policy, before the media codes; the receiver unable to save or store the message is its own
failure, not a policy decision. Made-up texts (placeholder names); each asserts the category,
bounce or defer, and whether the recipient is suppressed.
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- the identity we send under, refused: our sender ------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.7.1 You are not authorized to send email using this identity"),
        (553, "Not permitted to send mail with that identity"),
        (554, "5.7.1 Sender not allowed to send messages under the identity <s@example.org>"),
    ],
)
def test_identity_refused_is_our_sender(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_sender", "bounce", False)


# ---- a pair not seen before, held back: greylisting ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "From/Recipient set not seen before, resubmit if intentional",
        "4.7.1 Sender and recipient never seen before, please retry",
        "Triplet first seen, come back later",
    ],
)
def test_not_seen_before_is_greylisting(text: str) -> None:
    assert verdict(451, text) == ("greylist", "defer", False)


def test_not_seen_before_under_5xx_is_no_greylisting() -> None:
    assert verdict(550, "5.1.1 Recipient not seen before")[0] != "greylist"


# ---- a long message, a maximum character length: the message's size -----------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.6.0 Long message rejected, exceeds max character length"),
        (554, "Long messages not accepted by this gateway"),
        (552, "Text exceeds the maximum character count"),
    ],
)
def test_long_message_is_its_size(code: int, text: str) -> None:
    assert verdict(code, text) == ("message_too_large", "bounce", False)


def test_line_length_stays_form() -> None:
    assert verdict(550, "Maximum line length exceeded")[0] == "policy"


# ---- not authorized to receive outside mail: the receiver's policy, kept --------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.1.1 User unauthorized to receive external mail"),
        (550, "5.1.1 <r@example.net> is not allowed to receive internet mail"),
        (554, "This mailbox cannot receive outside messages"),
    ],
)
def test_closed_to_outside_mail_is_policy_and_kept(code: int, text: str) -> None:
    assert verdict(code, text) == ("policy", "bounce", False)


# ---- only plain text: the receiver's rule for the form, before the media codes ---------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.6.3 Only plain text emails permitted to this mailing list"),
        (554, "5.6.0 HTML messages are not accepted"),
        (550, "5.6.3 Conversion impossible, please resend as plain text"),
    ],
)
def test_plain_text_only_is_policy(code: int, text: str) -> None:
    assert verdict(code, text) == ("policy", "bounce", False)


# ---- the receiver unable to save the message: its own failure ---------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.7.0 Unable to save sent message", ("other_permanent", "bounce", False)),
        (554, "5.7.1 Could not store the message", ("other_permanent", "bounce", False)),
        (451, "4.7.0 Failed to write message, try later", ("other_temporary", "defer", False)),
    ],
)
def test_unable_to_save_is_the_receivers_failure(
    code: int, text: str, expected: tuple[str, str, bool]
) -> None:
    assert verdict(code, text) == expected
