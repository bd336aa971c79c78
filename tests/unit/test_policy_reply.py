"""Reply parsing: enhanced codes off the text, multi-line replies kept readable."""

from __future__ import annotations

import pytest

from kmta.policy.reply import Reply


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (
            250,
            "2.0.0 OK  1700000000 a1si123 - gsmtp",
            Reply(250, "2.0.0", "OK 1700000000 a1si123 - gsmtp"),
        ),
        (
            421,
            (
                "4.7.28 Gmail has detected an unusual rate of unsolicited mail\n4.7.28 originating from your IP "
                "address."
            ),
            Reply(
                421,
                "4.7.28",
                "Gmail has detected an unusual rate of unsolicited mail "
                "originating from your IP address.",
            ),
        ),
        (
            554,
            "IP address is block listed.\nFor explanation visit https://postmaster.gmx.net/en/case?c=r0201",
            Reply(
                554,
                None,
                "IP address is block listed. For explanation visit "
                "https://postmaster.gmx.net/en/case?c=r0201",
            ),
        ),
        (
            554,
            "554-IP address is block listed.\r\n554 For explanation visit x",
            Reply(554, None, "IP address is block listed. For explanation visit x"),
        ),
        (
            None,
            "421-4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred",
            Reply(421, "4.7.0", "[TSS04] Messages from 203.0.113.5 temporarily deferred"),
        ),
        (
            451,
            "DT:SPM 163 smtp10, please try again",
            Reply(451, None, "DT:SPM 163 smtp10, please try again"),
        ),
        (
            550,
            "5.1.1 <x@example.com>: Recipient address rejected: User unknown",
            Reply(550, "5.1.1", "<x@example.com>: Recipient address rejected: User unknown"),
        ),
        (421, "4.16.55.1 odd", Reply(421, None, "4.16.55.1 odd")),
    ],
)
def test_parse(code: int | None, message: str, expected: Reply) -> None:
    assert Reply.parse(code, message) == expected


def test_line_leaves_out_missing_parts() -> None:
    assert Reply(421, "4.7.0", "busy").line() == "421 4.7.0 busy"
    assert Reply(421, None, "busy").line() == "421 busy"
    internal = Reply.parse(None, "Connection refused", internal=True)
    assert internal == Reply(None, None, "Connection refused", True)
    assert internal.line() == "Connection refused" and internal.temporary


def test_a_different_enhanced_code_in_a_later_line_stays_in_the_text() -> None:
    reply = Reply.parse(550, "5.7.1 blocked\n5.7.1 see below\n4.4.4 routing note")
    assert reply.enhanced_code == "5.7.1" and reply.text == "blocked see below 4.4.4 routing note"


def test_a_multi_line_reply_folded_into_one_line_loses_its_line_prefixes() -> None:
    # a DSN's Diagnostic-Code carries the reply's lines joined by spaces, prefixes and all
    folded = "550-5.7.1 Message not compliant. There are multiple 550-5.7.1 headers. 550 5.7.1 Bye"
    r = Reply.parse(550, folded)
    assert (r.enhanced_code, r.text) == ("5.7.1", "Message not compliant. There are multiple headers. Bye")
    assert Reply.parse(None, "421-4.7.0 Try later 421 4.7.0 please").text == "Try later please"
    # a one-line reply keeps a code it quotes: only folded replies (starting "<code>-") change
    assert Reply.parse(550, "5.7.1 error 550-limit 550 5.7.1 seen").text == "error 550-limit 550 5.7.1 seen"
