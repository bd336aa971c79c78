"""Issue 12, round 28: part 31's blind misses (amavisd-new's and Mireka's replies), part 30's last.

A content filter's verdict tag ("BANNED: <file>", "UNCHECKED: encrypted") is the message's
content; a scanner that failed is the receiver's trouble, and a file path in a reply is no word
("virus" in a quarantine directory's name finds no virus). A broken connection, a bad connection
and no answer from the host are connection failures; no response to a command is a timeout. The
envelope's own syntax named in words (a usage line "Syntax: MAIL FROM:<address>", a syntax error
in the reverse path or the mailbox name) names whose address; an SRS return address the receiver
will not decode takes no mail. Mail from our IP literal "restricted" is a block of the IP, even
when it calls the mail unauthenticated. "Go away" and a reply that is only a security vendor's
name are blocks. Made-up texts (placeholder names and documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- content: verdict tags, scanner failures, paths --------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "5.7.0 Reject, id=1234-05 - BANNED: payload.exe"),
        (554, "5.7.1 Rejected - BANNED: .zip,.js,invoice.js"),
        (554, "5.7.0 Reject, id=1234-05 - UNCHECKED: encrypted"),
        (550, "5.7.0 Message UNCHECKED: over limits"),
    ],
)
def test_content_filter_verdict_tags_are_spam_content(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_content", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.7.1 Banned: your IP 203.0.113.9"),
        (550, "5.7.1 Banned: <s@example.org>"),
    ],
)
def test_banned_our_side_is_no_content_verdict(code: int, text: str) -> None:
    assert verdict(code, text)[0] != "spam_content"


@pytest.mark.parametrize(
    "text",
    [
        "4.5.0 Error in processing, id=1234-05, virus_scan FAILED: scanners unavailable",
        "4.3.0 all antivirus scanners failed",
        "4.3.0 spam filters error, try later",
    ],
)
def test_scanner_failures_are_the_receivers_trouble(text: str) -> None:
    assert verdict(451, text) == ("other_temporary", "defer", False)


@pytest.mark.parametrize(
    ("code", "text", "category"),
    [
        (450, "4.4.2 Local delivery to /var/spool/virus-quarantine/v-Ab12 timed out", "timeout"),
        (451, "4.3.0 Writing /srv/malware/store/q-77 failed: write error", "other_temporary"),
    ],
)
def test_a_file_path_is_no_content_word(code: int, text: str, category: str) -> None:
    assert verdict(code, text) == (category, "defer", False)


def test_a_url_path_still_reads() -> None:
    # URLs are not file paths: the block list named in one still decides
    text = "5.7.1 Blocked - see https://www.spamhaus.org/query/ip/203.0.113.9"
    assert verdict(554, text)[0] == "spam_block"


# ---- connections and timeouts ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "4.3.2 Service shutting down, connection broken while reading data",
        "4.4.0 No answer from remote host",
        "4.4.2 bad connection to next hop",
    ],
)
def test_broken_or_bad_connections_are_connection_failures(text: str) -> None:
    assert verdict(421, text) == ("connection_failure", "defer", False)


@pytest.mark.parametrize("text", ["4.5.0 No response to DATA", "4.5.0 no reply after end of data"])
def test_no_response_to_a_command_is_a_timeout(text: str) -> None:
    assert verdict(450, text) == ("timeout", "defer", False)


# ---- whose address: usage lines, syntax errors, SRS ------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (501, "5.5.4 Syntax: MAIL FROM:<address>"),
        (553, "Syntax error in reverse path <s@@example.org>"),
        (553, "5.1.7 Invalid reverse-path"),
    ],
)
def test_sender_syntax_is_our_sender(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_sender", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (501, "5.5.4 Syntax: RCPT TO:<address>"),
        (553, "Syntax error in mailbox name <r@@example.org>"),
        (553, "5.1.3 syntax error in recipient address"),
    ],
)
def test_recipient_syntax_is_a_bad_mailbox(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_mailbox", "bounce", True)


@pytest.mark.parametrize(
    "text",
    ["5.1.0 SRS signature is invalid", "5.1.0 SRS address has expired", "Invalid SRS hash"],
)
def test_an_srs_address_not_decoded_is_a_bad_mailbox(text: str) -> None:
    assert verdict(553, text) == ("bad_mailbox", "bounce", True)


def test_an_srs_rewritten_sender_stays_ours() -> None:
    text = "5.7.1 <SRS0=Ab1=XY=example.org=s@example.net>: Sender address rejected: Access denied"
    category, _, suppress = verdict(554, text)
    assert category != "bad_mailbox"
    assert suppress is False


def test_an_invalid_message_body_is_its_form() -> None:
    assert verdict(554, "5.6.0 message body malformed") == ("policy", "bounce", False)


# ---- our IP restricted; go away; a vendor named alone ---------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.7.1 Rejected: unauthenticated mail from 203.0.113.9 is restricted."),
        (530, "5.7.1 e-mail from [203.0.113.9] is blocked. Contact the postmaster"),
    ],
)
def test_mail_from_our_ip_restricted_is_a_block(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


def test_mail_from_our_ip_with_spf_named_stays_authentication() -> None:
    text = "5.7.1 mail from 203.0.113.9 is blocked: SPF fail for example.org"
    assert verdict(550, text)[0] == "auth_failure"


def test_unauthenticated_mail_from_a_domain_stays_authentication() -> None:
    text = "5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC policy"
    assert verdict(550, text)[0] == "auth_failure"


@pytest.mark.parametrize(
    ("code", "text"),
    [(552, "go away"), (550, "Go away!"), (554, "5.7.1 Proofpoint"), (500, "5.7.1 Barracuda")],
)
def test_go_away_and_a_vendor_alone_are_blocks(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


def test_go_away_after_a_policy_reason_stays_policy() -> None:
    text = "4.7.1 <r@example.org>: Recipient address rejected: Policy Rejection- Abuse. Go away."
    assert verdict(450, text) == ("policy", "defer", False)


def test_a_vendor_named_in_a_sentence_is_not_alone() -> None:
    text = "5.1.1 The email account does not exist (Proofpoint relay)"
    assert verdict(550, text)[0] == "bad_mailbox"


def test_an_srs_reply_that_names_the_sender_keeps_the_recipient() -> None:
    category, _, suppress = verdict(553, "5.1.0 Sender address rejected: SRS hash is invalid")
    assert category != "bad_mailbox"
    assert suppress is False
