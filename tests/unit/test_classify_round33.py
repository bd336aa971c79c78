"""Issue 12, round 33: part 36's blind misses (mail servers' own reply strings: Apache James,
Exim's test suite, Courier-MTA, Proxmox Mail Gateway).

A 521 that closes the session over too many unknown commands is the session, not a domain that
accepts no mail (it must not suppress). A connection the receiver says it lost is a connection
failure. A closed mailing list and a bounce allowed only one recipient are the receiver's policy.
A HELO argument that does not match the calling host is our host's name. A failed CSA check is
authentication. The address we send as refused as not matching our login is our sender. Made-up
texts (placeholder names and documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict


@pytest.mark.parametrize(
    "text",
    [
        "Closing connection as too many unknown commands received",
        "too many bad commands, closing connection",
    ],
)
def test_a_521_over_our_commands_does_not_suppress(text: str) -> None:
    assert verdict(521, text) == ("other_permanent", "bounce", False)


def test_a_521_alone_is_still_a_domain_without_mail() -> None:
    assert verdict(521, "5.3.2 mx.example.net does not accept mail")[2] is True


@pytest.mark.parametrize(
    "text", ["mx.example.net lost input connection", "lost incoming connection from 192.0.2.7"]
)
def test_a_lost_connection_is_a_connection_failure(text: str) -> None:
    assert verdict(421, text) == ("connection_failure", "defer", False)


@pytest.mark.parametrize(
    "text",
    [
        "news@lists.example.net is a closed mailing list",
        "bounce message may have only one recipient",
    ],
)
def test_a_closed_list_or_a_one_recipient_bounce_is_policy(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


def test_a_helo_argument_not_matching_the_calling_host_is_our_name() -> None:
    assert verdict(550, "EHLO argument does not match calling host")[0] == "reverse_dns"
    assert verdict(451, "HELO name does not match connecting ip")[1] == "defer"


def test_a_failed_csa_check_is_authentication() -> None:
    assert verdict(550, "CSA status is fail") == ("auth_failure", "bounce", False)


def test_the_sender_not_matching_our_login_is_our_sender() -> None:
    text = "5.7.1 Incorrect Authentication for Specified Email Address"
    assert verdict(553, text) == ("bad_sender", "bounce", False)
