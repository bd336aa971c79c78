"""Which addresses the router accepts (kmta.policy.addresses): RFC 5321/5322 syntax and limits,
IDN domains, and nothing that could inject SMTP commands or headers."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmta.errors import InputError
from kmta.policy.addresses import normalize_domain, split_address

VALID = [
    ("ann@example.com", ("ann", "example.com")),
    ("Ann@Example.COM", ("Ann", "example.com")),  # the domain is case-free, the local part not
    ("a.b+tag@sub.example.co.uk", ("a.b+tag", "sub.example.co.uk")),
    ("o'brien@example.com", ("o'brien", "example.com")),
    ("x!#$%&*/=?^_`{|}~-@example.com", ("x!#$%&*/=?^_`{|}~-", "example.com")),
    ('"john doe"@example.com', ('"john doe"', "example.com")),
    ('"a\\"b"@example.com', ('"a\\"b"', "example.com")),
    ("ann@example.com.", ("ann", "example.com")),  # a trailing root dot
    ("a@b.cc", ("a", "b.cc")),
    ("ann@example.c0m", ("ann", "example.c0m")),
    ("ann@a-b.example", ("ann", "a-b.example")),
    ("l" * 64 + "@example.com", ("l" * 64, "example.com")),
    ("ann@" + "d" * 63 + ".com", ("ann", "d" * 63 + ".com")),
    # IDN: U-labels become A-labels (what DNS and SMTP without SMTPUTF8 need)
    ("user@bücher.example", ("user", "xn--bcher-kva.example")),
    ("user@BÜCHER.example", ("user", "xn--bcher-kva.example")),
    ("user@bu\u0308cher.example", ("user", "xn--bcher-kva.example")),  # decomposed ü
    ("user@xn--bcher-kva.example", ("user", "xn--bcher-kva.example")),
    ("ann@١٢.example", ("ann", "xn--9hbc.example")),
    ("用户@例子.广告", ("用户", "xn--fsqu00a.xn--4rr70v")),  # SMTPUTF8 local part
    ("пользователь@пример.рф", ("пользователь", "xn--e1afmkfd.xn--p1ai")),
]


@pytest.mark.parametrize(("address", "parts"), VALID, ids=[v[0][:40] for v in VALID])
def test_valid(address: str, parts: tuple[str, str]) -> None:
    assert split_address(address, "to") == parts


INVALID = [
    ("", "empty"),
    ("ann", "no local part or domain"),
    ("@example.com", "no local part or domain"),
    ("ann@", "no local part or domain"),
    ("ann@example", "invalid domain"),
    ("ann@@example.com", "invalid local part"),
    ("a..b@example.com", "invalid local part"),
    (".a@example.com", "invalid local part"),
    ("a.@example.com", "invalid local part"),
    ('"unclosed@example.com', "invalid local part"),
    ("a b@example.com", "spaces"),
    (" ann@example.com", "spaces"),
    ("ann@example.com ", "spaces"),
    ("ann@exa mple.com", "spaces"),
    # SMTP command / header injection
    ("x\r\nRCPT TO:<e@evil.test>@gmail.com", "control characters"),
    ("ann@example.com\r\nDATA", "control characters"),
    ("ann@example.com\n", "control characters"),
    ("ann\r@example.com", "control characters"),
    ("ann@exam\x00ple.com", "control characters"),
    ("a\tb@example.com", "control characters"),
    ("ann@example.com\x7f", "control characters"),
    ("<ann@example.com>", "angle brackets"),
    ("Ann <ann@example.com>", "angle brackets"),
    ("ann@example.com>\r\nRCPT TO:<e@evil.test", "control characters"),
    # domains
    ("ann@[127.0.0.1]", "address literals"),
    ("ann@1.2.3.4", "numeric"),
    ("ann@example.123", "numeric"),
    ("ann@-example.com", "invalid domain"),
    ("ann@example-.com", "invalid domain"),
    ("ann@exa_mple.com", "invalid domain"),
    ("ann@ex%ample.com", "invalid domain"),
    ("ann@example..com", "invalid domain"),
    ("ann@.example.com", "invalid domain"),
    ("ann@" + "d" * 64 + ".com", "invalid domain"),
    ("ann@" + ".".join(["d" * 60] * 5) + ".com", "longer than 254"),
    # IDN names the IDNA 2003 codec would silently turn into another domain
    ("ann@straße.example", "internationalized"),
    ("ann@ex\u200bample.com", "internationalized"),  # zero-width space dropped
    ("ann@ｅｘａｍｐｌｅ.com", "internationalized"),  # full-width letters folded
    # UTF-8 local parts (RFC 6531) without spaces, invisible or unencodable characters
    ("a\u00a0b@gmail.com", "U\\+00A0 \\(NO-BREAK SPACE\\)"),
    ("\u00a0@gmail.com", "spaces"),
    ('"a\u00a0b"@gmail.com', "U\\+00A0"),
    ("a\u3000b@gmail.com", "U\\+3000 \\(IDEOGRAPHIC SPACE\\)"),
    ("a\u200bb@gmail.com", "U\\+200B \\(ZERO WIDTH SPACE\\)"),
    ("a\u202eb@gmail.com", "U\\+202E"),  # right-to-left override
    ("a\u2028b@gmail.com", "U\\+2028"),
    ("a\x85b@gmail.com", "U\\+0085"),
    ("ü\U000e0001@gmail.com", "U\\+E0001"),
    ("a\ud800@gmail.com", "lone surrogate"),
    ("ann@gm\udfffail.com", "lone surrogate"),
    ("ann@gm\u00a0ail.com", "internationalized"),
    # limits
    ("l" * 65 + "@example.com", "longer than 64"),
    ("l" * 64 + "@" + ".".join(["d" * 60] * 3) + ".example", "longer than 254"),
]


@pytest.mark.parametrize(("address", "reason"), INVALID, ids=[repr(v[0])[:40] for v in INVALID])
def test_invalid(address: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        split_address(address, "to")


def test_reason_names_the_field() -> None:
    with pytest.raises(InputError, match=r"^from 'nobody' has no local part"):
        split_address("nobody", "from")


def test_normalize_domain() -> None:
    assert normalize_domain("Mail.Example.ORG.") == "mail.example.org"
    assert normalize_domain("пример.рф") == "xn--e1afmkfd.xn--p1ai"
    with pytest.raises(InputError):
        normalize_domain("localhost")


def _uncached(address: str, what: str) -> tuple[str, str] | str:
    from unittest import mock

    from kmta.policy import addresses

    with mock.patch.object(addresses, "_split", addresses._split.__wrapped__):
        try:
            return addresses.split_address(address, what)
        except InputError as e:
            return str(e)


def _cached(address: str, what: str) -> tuple[str, str] | str:
    try:
        return split_address(address, what)
    except InputError as e:
        return str(e)


_PIECES = st.lists(st.sampled_from(["a", "B", "@", ".", " ", '"', "\u00fc", "\u00a0", "\r",
                                    "<", "-", "x" * 30, "ex.com", "\ud800"]),
                   max_size=10).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_PIECES, st.sampled_from(["to", "from"])), min_size=1, max_size=6))
def test_remembered_answers_are_the_checks_answers(calls: list[tuple[str, str]]) -> None:
    """split_address remembers its answers: each call, a first or a repeated one, answers what
    the checks answer (the same parts, or the same error naming the field asked about)."""
    for address, what in calls + calls:
        assert _cached(address, what) == _uncached(address, what)
    for address, _ in calls:  # the field named in an error is the one asked about now
        assert _cached(address, "sender") == _uncached(address, "sender")
