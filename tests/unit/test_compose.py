"""Composition of the message text (kmta.policy.compose): what a recipient's server receives."""
from __future__ import annotations

import email
import email.policy
import email.utils
import re

import pytest

from kmta.errors import InputError
from kmta.policy.compose import RESERVED_HEADERS, TRACE_HEADER, compose
from schemas import OutboxMessage

NOW = 1_790_000_000.0
BASE = {"from": "news@shop.example", "to": "ann@gmail.com"}


def build(**fields: object) -> str:
    doc = {**BASE, **fields}
    return compose(OutboxMessage.model_validate(doc), "m-1", "mta.kmta.test", NOW)


def parse(text: str) -> email.message.EmailMessage:
    return email.message_from_bytes(text.encode("utf-8"), policy=email.policy.default)


def body(part: email.message.EmailMessage) -> str:
    """Decoded text with line ends as LF (the parser keeps CRLF of unencoded parts)."""
    return part.get_content().replace("\r\n", "\n")


def assert_crlf_only(text: str) -> None:
    assert "\r\n" in text
    assert not re.search(r"(?<!\r)\n", text), "bare LF"
    assert not re.search(r"\r(?!\n)", text), "bare CR"


def assert_line_limit(text: str) -> None:
    assert max(len(line.encode()) for line in text.split("\r\n")) <= 998  # RFC 5322 2.1.1


# -- composed messages -----------------------------------------------------------------------
def test_headers_of_a_composed_message() -> None:
    text = build(subject="Spring sale", text="Hello\n")
    assert text.startswith(f"{TRACE_HEADER}: m-1\r\n")  # first line: the trace header
    m = parse(text)
    assert m["From"] == "news@shop.example"
    assert m["To"] == "ann@gmail.com"
    assert m["Subject"] == "Spring sale"
    assert m["Message-ID"] == "<m-1@mta.kmta.test>"
    assert email.utils.parsedate_to_datetime(m["Date"]).timestamp() == NOW
    assert m["MIME-Version"] == "1.0"
    assert m.get_all(TRACE_HEADER) == ["m-1"]
    assert m.get_content_type() == "text/plain"
    assert body(m) == "Hello\n"
    assert_crlf_only(text)
    head = text.split("\r\n\r\n", 1)[0]
    assert head.isascii()


def test_utf8_subject_is_encoded_and_reads_back() -> None:
    subject = "Grüße — ünïcödé 日本語 🎉"
    text = build(subject=subject, text="Hällo Wörld\n")
    head, _, _ = text.partition("\r\n\r\n")
    assert head.isascii(), "non-ASCII header text must be RFC 2047 encoded"
    assert "=?utf-8?" in head.lower()
    m = parse(text)
    assert m["Subject"] == subject
    assert m.get_content_charset() == "utf-8"
    assert body(m) == "Hällo Wörld\n"
    assert_crlf_only(text)


def test_text_and_html_make_a_multipart_alternative() -> None:
    text = build(subject="s", text="plain version\n", html="<p>html version</p>\n")
    m = parse(text)
    assert m.get_content_type() == "multipart/alternative"
    parts = list(m.iter_parts())
    # RFC 2046 5.1.4: the preferred (richest) alternative comes last
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert body(parts[0]) == "plain version\n"
    assert body(parts[1]) == "<p>html version</p>\n"
    assert m.get_all(TRACE_HEADER) == ["m-1"]
    assert_crlf_only(text)


def test_html_only_is_a_single_html_part() -> None:
    m = parse(build(subject="s", html="<h1>Hi</h1>"))
    assert m.get_content_type() == "text/html"
    assert not m.is_multipart()
    assert body(m).strip() == "<h1>Hi</h1>"


def test_bare_lf_and_cr_in_text_become_crlf() -> None:
    text = build(subject="s", text="one\ntwo\rthree\r\nfour\n")
    assert_crlf_only(text)
    assert body(parse(text)).splitlines() == ["one", "two", "three", "four"]


def test_long_lines_are_encoded_within_the_line_limit() -> None:
    long_text = "x" * 5000 + "\n" + "ü" * 3000 + "\n"
    text = build(subject="s" * 900, text=long_text)
    assert_line_limit(text)
    m = parse(text)
    assert body(m) == long_text
    assert m["Subject"] == "s" * 900


def test_custom_headers_are_added_and_encoded() -> None:
    text = build(subject="s", text="t", headers={
        "List-Unsubscribe": "<mailto:unsub@shop.example?subject=u1>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Campaign": "café"})
    m = parse(text)
    assert m["List-Unsubscribe"] == "<mailto:unsub@shop.example?subject=u1>"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert m["X-Campaign"] == "café"
    assert text.split("\r\n\r\n", 1)[0].isascii()


@pytest.mark.parametrize("name", sorted(RESERVED_HEADERS) + ["SUBJECT", "Message-Id",
                                                             "x-KMTA-id"])
def test_reserved_headers_are_refused(name: str) -> None:
    with pytest.raises(InputError, match="set by kmta"):
        build(subject="s", text="t", headers={name: "v"})


@pytest.mark.parametrize("name", ["", "X Bad", "X:Bad", "X-Bad\r\nBcc", "X-Bad\n", "X-Tab\t",
                                  "X-Ünïcode"])
def test_invalid_header_names_are_refused(name: str) -> None:
    with pytest.raises(InputError, match="invalid header name"):
        build(subject="s", text="t", headers={name: "v"})


@pytest.mark.parametrize("value", ["a\r\nBcc: evil@evil.test", "a\nBcc: evil@evil.test",
                                   "a\rBcc: evil@evil.test", "a\x00b"])
def test_header_injection_is_refused(value: str) -> None:
    with pytest.raises(InputError, match="line break"):
        build(subject=value, text="t")
    with pytest.raises(InputError, match="line break"):
        build(subject="s", text="t", headers={"X-Campaign": value})


# -- data passthrough ------------------------------------------------------------------------
def test_data_is_passed_through_with_crlf_normalised() -> None:
    raw = ("From: a@shop.example\nTo: ann@gmail.com\rSubject: hi\r\n"
           "Message-ID: <own@shop.example>\n\nline one\nline two\r\rend\r\n")
    text = build(data=raw)
    assert text == (f"{TRACE_HEADER}: m-1\r\n"
                    "From: a@shop.example\r\nTo: ann@gmail.com\r\nSubject: hi\r\n"
                    "Message-ID: <own@shop.example>\r\n\r\nline one\r\nline two\r\n\r\nend\r\n")
    m = parse(text)
    assert m["Message-ID"] == "<own@shop.example>"  # the user's own, none added
    assert m["Date"] is None
    assert m.get_all(TRACE_HEADER) == ["m-1"]


def test_data_keeps_non_ascii_and_mime_structure() -> None:
    raw = ('From: a@shop.example\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n'
           'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n'
           '\r\nGrüße\r\n')
    text = build(data=raw)
    assert text == f"{TRACE_HEADER}: m-1\r\n" + raw
    assert body(parse(text)) == "Grüße\n"


@pytest.mark.parametrize("raw", ["just a body without headers", "\n\nbody after a blank line",
                                 "no blank line: never ends the header section"])
def test_data_without_a_header_section_is_refused(raw: str) -> None:
    with pytest.raises(InputError, match="no header section"):
        build(data=raw)
