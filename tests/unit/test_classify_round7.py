"""Issue 12, round 7: classes of replies that the blind part heldout11 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout11.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from kmta.policy.classify import wording
from kmta.policy.reply import Reply
from tests.unit.classify_rounds import verdict

# ---- identifiers of three or more capitalised words are read as words (Exchange / Office 365
# ---- status names): a submission quota is a rate and defers, whatever the 5xx ----------------

@pytest.mark.parametrize(
    ("code", "text", "category", "v", "s"),
    [
        (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; id 42",
         "rate_limit", "defer", False),
        (550, "5.2.0 STOREDRV.Deliver.Exception:SendingQuotaExceededException", "rate_limit",
         "defer", False),
        (550, "5.4.1 RESOLVER.ADR.RecipientNotFound; not found in the directory", "bad_mailbox",
         "bounce", True),
        (550, "5.7.1 TRANSPORT.RULES.SenderNotAuthenticatedForGroup", "policy", "bounce", False),
    ],
)
def test_capitalised_identifiers_read_as_words(
    code: int, text: str, category: str, v: str, s: bool
) -> None:
    assert verdict(code, text) == (category, v, s)


def test_two_word_identifiers_stay_whole() -> None:
    # the rules name "DisabledUser" and "OverQuota" as tokens; they are left as they are
    line = wording(Reply.parse(550, "5.2.1 DisabledUser OverQuota SubmissionQuotaExceeded"))
    assert "disableduser overquota submission quota exceeded" in line


# ---- our host refused by an access list, our "location", a reputation score named -------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "5.7.1 <mx9.sender.example[]>: Client host rejected: Access denied"),
        (550, "5.7.1 Client host rejected: access denied, see our policy"),
        (553, "sorry, mail from your location [198.51.100.20] is administratively denied"),
        (550, "Connections from your network 192.0.2.0/24 are refused here"),
        (554, "relay9.example.net; SBRS score too low, see http://reputation.example/"),
        (550, "5.7.1 rejected: your SenderScore is below our threshold"),
        (554, "Your IP is poorly rated by SenderBase, message refused"),
    ],
)
def test_our_host_refused_or_rated_low_is_a_block(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


def test_client_host_rejected_for_ptr_stays_reverse_dns() -> None:
    assert verdict(450, "4.7.1 Client host rejected: cannot find your hostname")[0] == "reverse_dns"


# ---- greylisting: "not yet" allowed on a 4xx; a greylisting that names reverse DNS as its cause --

@pytest.mark.parametrize(
    "text",
    [
        "4.7.1 192.0.2.8 is not yet authorized to deliver mail from <a@s.example> to <b@r.example>."
        " Please try later.",
        "Sender 203.0.113.4 not yet allowed for this recipient, retry in a while",
        "4.7.0 Your triplet is not yet whitelisted",
    ],
)
def test_not_yet_allowed_is_greylisting(text: str) -> None:
    assert verdict(451, text) == ("greylist", "defer", False)


def test_not_yet_on_a_5xx_is_no_greylisting() -> None:
    assert verdict(550, "5.7.1 Sender not yet allowed for this recipient")[0] != "greylist"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (450, "You have no reverse DNS record. You are greylisted for 10 minutes, come back later"),
        (451, "4.7.1 Greylisted: no PTR record for 192.0.2.5, please retry"),
        (550, "greylisting in effect because your rDNS is missing; retry in 15 minutes"),
    ],
)
def test_greylisting_for_reverse_dns_is_reverse_dns_and_defers(code: int, text: str) -> None:
    assert verdict(code, text) == ("reverse_dns", "defer", False)


# ---- our sender identity refused for the authenticated client (Exchange 5.7.60 SendAsDenied) -----

@pytest.mark.parametrize(
    "text",
    [
        "5.7.60 SMTP; Client does not have permissions to send as this sender",
        "5.7.1 you have no permission to send as the sender <a@s.example>",
        "Send as sender denied for this account",
    ],
)
def test_no_permission_to_send_as_the_sender_is_our_sender(text: str) -> None:
    assert verdict(550, text) == ("bad_sender", "bounce", False)


# ---- the recipient in other words -------------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "RCPT (x1@r.example) dosn't exist",
        "RCPT <x2@r.example> does not exist here",
        "x3@r.example refused: user invalid",
        "5.1.1 the user is invalid",
        "E-mail address is not handled by this system",
        "Recipient <x4@r.example> is not served here",
    ],
)
def test_recipient_wording_variants_suppress(text: str) -> None:
    assert verdict(550, text) == ("bad_mailbox", "bounce", True)


def test_rcpt_wording_on_a_4xx_never_suppresses() -> None:
    assert verdict(450, "RCPT (x5@r.example) dosn't exist")[2] is False


# ---- "Unrouteable address": the enhanced code says which part; a domain named as gone ----------

@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("5.1.1 <x6@r.example>: Unrouteable address", "bad_mailbox"),
        ("5.1.2 <x7@r.example>: Unrouteable address", "bad_domain"),
        ("Unrouteable address", "bad_domain"),
        ("5.1.1 Domain r.example no longer available, see the postmaster page", "bad_domain"),
        ("5.1.2 This domain is no longer in use", "bad_domain"),
    ],
)
def test_unroutable_address_and_gone_domains(text: str, category: str) -> None:
    assert verdict(550, text) == (category, "bounce", True)


def test_a_sender_side_code_still_wins_over_unroutable() -> None:
    # the prior may choose between mailbox and domain, never make our sender's reply suppress
    assert verdict(553, "5.1.7 Unrouteable address")[2] is False


# ---- storage containers named full; MIME form before authentication header names --------------

@pytest.mark.parametrize("text", ["5.2.5 Folder full", "Inbox full, message refused", "folder is full"])
def test_a_full_folder_or_inbox_is_a_full_mailbox(text: str) -> None:
    assert verdict(552, text) == ("mailbox_full", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "Failed: Malformed MIME field: ARC-Message-Signature: i=1; a=rsa-sha256",
        "Malformed MIME header in message part 2",
        "Bad MIME boundary in message",
    ],
)
def test_malformed_mime_is_the_message_form_not_authentication(text: str) -> None:
    assert verdict(554, text)[0] in ("policy", "other_permanent")
    assert verdict(554, text)[0] != "auth_failure"
