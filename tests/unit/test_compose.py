"""Composition of the message text (kmta.policy.compose): what a recipient's server receives."""
from __future__ import annotations

import email
import email.generator
import email.policy
import email.utils
import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize("name", [*sorted(RESERVED_HEADERS), "SUBJECT", "Message-Id",
                                                             "x-KMTA-id"])
def test_reserved_headers_are_refused(name: str) -> None:
    with pytest.raises(InputError, match="set by kmta"):
        build(subject="s", text="t", headers={name: "v"})


@pytest.mark.parametrize("name", ["", "X Bad", "X:Bad", "X-Bad\r\nBcc", "X-Bad\n", "X-Tab\t",
                                  "X-Ünïcode", "X\x00", "X\x0bY", "X\x7f", "\x01", "X" * 77])
def test_invalid_header_names_are_refused(name: str) -> None:
    with pytest.raises(InputError, match="invalid header name"):
        build(subject="s", text="t", headers={name: "v"})


# every character some reader (str.splitlines, the email package, MUAs) takes for a line end
@pytest.mark.parametrize("value", [f"a{c}Bcc: evil@evil.test" for c in
                                   ["\r\n", "\n", "\r", "\x00", "\x0b", "\x0c", "\x1c", "\x1d",
                                    "\x1e", "\x85", "\u2028", "\u2029", "\x1f", "\x7f"]])
def test_header_injection_is_refused(value: str) -> None:
    with pytest.raises(InputError, match="line break"):
        build(subject=value, text="t")
    with pytest.raises(InputError, match="line break"):
        build(subject="s", text="t", headers={"X-Campaign": value})


def test_lone_surrogates_are_refused_by_the_model() -> None:
    from pydantic import ValidationError
    for fields in ({"subject": "a\ud800"}, {"text": "\udfff"}, {"headers": {"X-A": "\ud800"}},
                   {"meta": {"k": ["\ud800"]}}):
        with pytest.raises(ValidationError):
            build(**{"subject": "s", "text": "t", **fields})


def test_header_values_fold_within_78_and_unfold_to_themselves() -> None:
    value = "  lead " + "word\tword " * 120 + "tail  "
    text = build(subject="s", text="t", headers={"X-Long": value, "X-Run": "r" * 990})
    assert_line_limit(text)
    head = text.split("\r\n\r\n", 1)[0]
    long = head.split("\r\nX-Long: ", 1)[1].split("\r\nX-Run:", 1)[0]
    assert max(map(len, long.split("\r\n"))) <= 78
    assert long.replace("\r\n", "") == value  # folding only inserts CRLF before white space
    # a word too long for one line goes as encoded words (RFC 2047), which fold anywhere
    assert parse(text)["X-Run"] == "r" * 990


def test_text_that_reads_as_an_encoded_word_stays_text() -> None:
    subject = "Save 20% =?utf-8?q?x?= today"
    m = parse(build(subject=subject, text="t", headers={"X-A": "=?utf-8?b?eA==?="}))
    assert m["Subject"] == subject and m["X-A"] == "=?utf-8?b?eA==?="


def test_a_cjk_subject_is_folded() -> None:
    # as_string()'s default maxheaderlen=0 left this as one 1,221-octet line
    text = build(subject="日" * 300, text="t")
    assert_line_limit(text)
    assert max(map(len, text.split("\r\n\r\n")[0].split("\r\n"))) <= 78
    assert parse(text)["Subject"] == "日" * 300


def test_utf8_addresses_are_written_raw_with_a_domain_a_label() -> None:
    text = build(**{"from": "news@bücher.example", "to": "üser@Bücher.example"}, subject="s",
                 text="t")
    head = text.split("\r\n\r\n")[0]
    assert "\r\nFrom: news@xn--bcher-kva.example\r\n" in head  # ASCII: no SMTPUTF8 needed
    assert "\r\nTo: üser@xn--bcher-kva.example\r\n" in head  # RFC 6532: needs SMTPUTF8


def test_text_whose_lines_fit_is_sent_as_it_is_never_re_encoded() -> None:
    for text, cte in (("Spring sale: 20 % off.\n" * 300, "7bit"),
                      ("日本語のテキスト\n" * 200, "8bit"),
                      ("Grüße aus Köln, bis bald.\n" * 20, "8bit")):
        for kind in ("text", "html"):
            composed = build(subject="s", **{kind: text})
            m = parse(composed)
            assert m["Content-Transfer-Encoding"] == cte  # 8bit: the sender adds BODY=8BITMIME
            assert m.get_content_charset() == ("us-ascii" if cte == "7bit" else "utf-8")
            assert body(m) == text
            # the body is the text itself, CRLF line ends, no octet added
            assert composed.encode().endswith(text.replace("\n", "\r\n").encode())
            assert_crlf_only(composed)
    both = parse(build(subject="s", text="Grüße\n", html="<p>Grüße</p>\n"))
    assert [p["Content-Transfer-Encoding"] for p in both.iter_parts()] == ["8bit", "8bit"]
    assert [body(p) for p in both.iter_parts()] == ["Grüße\n", "<p>Grüße</p>\n"]


def test_a_line_over_998_octets_is_encoded_base64_or_quoted_printable() -> None:
    cjk_text = "日本語のテキスト" * 200  # one line of 4,800 octets
    cjk = build(subject="s", text=cjk_text)
    assert "Content-Transfer-Encoding: base64" in cjk
    assert len(cjk) < 1.5 * len(cjk_text.encode())
    latin_text = "Grüße aus Köln, bis bald. " * 60
    latin = build(subject="s", text=latin_text)
    assert "Content-Transfer-Encoding: quoted-printable" in latin
    assert body(parse(latin)) == latin_text
    html_text = '<td class="c" width="10">x</td>' * 100  # minified HTML, ASCII
    html = build(subject="s", html=html_text)
    assert "Content-Transfer-Encoding: quoted-printable" in html
    assert body(parse(html)) == html_text
    for text in (cjk, latin, html):
        assert_line_limit(text)


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


@pytest.mark.parametrize(("raw", "error"), [
    ("Subject: a\r\n\r\nbody\x00", "NUL"),
    ("Subject: a\r\n\r\n" + "x" * 999 + "\r\n", "line 3 is 999 octets"),
    ("Subject: a\r\n\r\n" + "é" * 500 + "\r\n", "line 3 is 1000 octets"),
    ("Subject: a\r\nX-Bad name: v\r\n\r\nbody", "header line 2 is not a header field"),
    ("Subject: a\r\nno colon\r\n\r\nbody", "header line 2 is not a header field"),
    ("Subject: a\r\n \t\r\n\r\nbody", "only white space"),
])
def test_unsendable_data_is_refused(raw: str, error: str) -> None:
    with pytest.raises(InputError, match=error):
        build(data=raw)


def test_data_lines_of_998_octets_pass() -> None:
    raw = "Subject: a\r\n\r\n" + "x" * 998 + "\r\n" + "é" * 499 + "\r\n"
    assert build(data=raw).endswith(raw.split("\r\n\r\n", 1)[1])


# -- the generator ---------------------------------------------------------------------------
_LINE_ENDS = st.lists(st.sampled_from(["a", "é", " ", "\r", "\n", "\r\n", "=", "."]),
                      max_size=300).map("".join)


@settings(max_examples=300, deadline=None)
@given(_LINE_ENDS, _LINE_ENDS, st.booleans())
def test_the_fast_generator_writes_what_the_stock_one_writes(text: str, html: str,
                                                            both: bool) -> None:
    """compose's ``_Generator`` replaces the stock generator's line-by-line writing of a part's
    text; the output must not change (nor with a future Python's email package)."""
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    from kmta.policy.compose import _POLICY, _Generator

    def part(t: str, sub: str) -> MIMEText:
        return MIMEText(t, sub, "utf-8" if not t.isascii() else "us-ascii")

    msg: email.message.Message = part(text, "plain")
    if both:
        msg = MIMEMultipart("alternative", boundary="b0")
        msg.attach(part(text, "plain"))
        msg.attach(part(html, "html"))
    out = io.StringIO()
    _Generator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY).flatten(msg)
    assert out.getvalue() == msg.as_string(policy=_POLICY)
    # and what compose writes with it: CRLF line ends only, the text given
    composed = build(subject="s", text=text)
    assert_crlf_only(composed)
    assert body(parse(composed)) == text.replace("\r\n", "\n").replace("\r", "\n")


def test_a_boundary_found_in_the_text_is_not_used() -> None:
    """compose picks the multipart boundary as the stock generator does (random) but tests
    it with a substring search: one that occurs in a part's text is drawn again."""
    import random

    from kmta.policy.compose import _boundary

    random.seed(13)
    first = _boundary(())
    random.seed(13)
    assert _boundary((b"plain", f"<p>\r\n--{first}\r\n</p>".encode())) != first
    random.seed(13)
    assert _boundary((b"no boundary here",)) == first
    composed = build(subject="s", text="t", html="<p>x</p>\n" * 3)
    boundary = parse(composed).get_boundary()
    assert composed.count(f"--{boundary}") == 3  # two parts and the close delimiter


@settings(max_examples=300, deadline=None)
@given(_LINE_ENDS, _LINE_ENDS, st.sampled_from(["both", "text", "html"]))
def test_compose_writes_the_body_the_stock_generator_writes(text: str, html: str,
                                                           shape: str) -> None:
    """compose writes placeholder payloads through the email package and puts the texts in
    afterwards: the body must be what the stock generator writes for the same parts."""
    from email.mime.multipart import MIMEMultipart
    from email.mime.nonmultipart import MIMENonMultipart
    from email.mime.text import MIMEText

    from kmta.policy.compose import _POLICY

    def part(t: str, sub: str) -> email.message.Message:
        if t.isascii():
            p: email.message.Message = MIMEText(t, sub, "us-ascii")
        else:
            p = MIMENonMultipart("text", sub, charset="utf-8")
            p["Content-Transfer-Encoding"] = "8bit"
            p.set_payload(t)
        del p["MIME-Version"]
        return p

    given_parts = {"both": {"text": text, "html": html}, "text": {"text": text},
                   "html": {"html": html}}[shape]
    composed = build(subject="s", **given_parts)
    if shape == "both":
        ref: email.message.Message = MIMEMultipart(
            "alternative", boundary=parse(composed).get_boundary())
        ref.attach(part(text, "plain"))
        ref.attach(part(html, "html"))
    else:
        ref = part(text if shape == "text" else html, "plain" if shape == "text" else "html")
    out = io.StringIO()
    email.generator.Generator(out, mangle_from_=False, maxheaderlen=0,
                              policy=_POLICY).flatten(ref)
    assert composed.split("\r\n\r\n", 1)[1] == out.getvalue().split("\r\n\r\n", 1)[1]
    head = composed.split("\r\n\r\n", 1)[0].split("\r\n")
    assert all(f"{k}: {v}" in head for k, v in ref.items())


@pytest.mark.parametrize(("value", "lone"), [
    ("plain ascii", False), ("caf\u00e9 \u20ac \u2019 \U0001f600", False), ("a\ud800b", True),
    ("\udfff", True), ("\ud83d\ude00", True),  # two surrogate code points are no character
])
def test_has_surrogate(value: str, lone: bool) -> None:
    from schemas.text import has_surrogate

    assert has_surrogate(value) is lone


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["Content-Type", "X-A", "Message-ID", "Date"]),
       st.lists(st.sampled_from(["a", "bc", "=", ";", " ", "  ", "\t", "\u00e9", '"', "x" * 40,
                                 "=?utf-8?q?x?="]), max_size=12).map("".join))
def test_the_fast_header_writer_writes_what_compat32_folds(name: str, value: str) -> None:
    """compose's ``_Generator`` writes short plain header values itself; every value must come
    out as compat32's folding writes it."""
    from email.message import Message

    from kmta.policy.compose import _POLICY, _Generator

    msg = Message()
    msg[name] = value
    msg.set_payload("x")
    out = io.StringIO()
    _Generator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY).flatten(msg)
    stock = io.StringIO()
    email.generator.Generator(stock, mangle_from_=False, maxheaderlen=0,
                              policy=_POLICY).flatten(msg)
    assert out.getvalue() == stock.getvalue()


_HEADER_TEXT = st.lists(st.sampled_from(["a", "bc", " ", "\u00e9", "=?", "x" * 40, "\u4e2d",
                                         ";", '"']), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(_LINE_ENDS, _LINE_ENDS, st.sampled_from(["both", "text", "html"]), _HEADER_TEXT,
       st.dictionaries(st.sampled_from(["X-A", "X-Campaign", "Reply-To", "x-a"]), _HEADER_TEXT,
                       max_size=3),
       st.sampled_from(["m-1", "0190b1c2d3e-" + "f" * 16, "i" * 70]),
       st.sampled_from(["news@shop.example", "n\u00e9ws@b\u00fccher.example"]))
def test_the_direct_writer_writes_what_the_email_package_path_writes(
        text: str, html: str, shape: str, subject: str, headers: dict[str, str], msg_id: str,
        sender: str) -> None:
    """``compose_bytes`` writes a message whose texts need no encoding directly; it must be
    byte for byte what the email package path writes (the same boundary drawn)."""
    import random

    from kmta.policy import compose as c

    parts = {"both": {"text": text, "html": html}, "text": {"text": text},
             "html": {"html": html}}[shape]
    msg = OutboxMessage.model_validate({**BASE, "from": sender, "subject": subject,
                                        "headers": headers or None, **parts})
    extra = [("List-Unsubscribe", "<https://u.example/" + "u" * 60 + ">"),
             ("Feedback-ID", "c:shop.example")]
    assert c._DIRECT  # this Python's compat32 writes the multipart header on one line
    random.seed(7)
    direct = c.compose_bytes(msg, msg_id, "mta.kmta.test", NOW, extra)
    try:
        c._DIRECT = False
        random.seed(7)
        stock = c.compose_bytes(msg, msg_id, "mta.kmta.test", NOW, extra)
    finally:
        c._DIRECT = True
    assert direct == stock


def crlf_only(raw: bytes) -> bool:
    """Every CR and LF in ``raw`` is part of a CRLF (what ``Envelope.crlf`` promises)."""
    return raw.count(b"\r") == raw.count(b"\n") == raw.count(b"\r\n")


_ANY_LINES = st.lists(st.sampled_from(["a", "é", " ", "\r", "\n", "\r\n", "=", ".", "中",
                                       "x" * 600]), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(_ANY_LINES, _ANY_LINES, st.sampled_from(["both", "text", "html", "data"]), _HEADER_TEXT)
def test_every_message_composed_has_crlf_line_ends_only(text: str, html: str, shape: str,
                                                        subject: str) -> None:
    """The router marks what it composed as CRLF only (``Envelope.crlf``: the senders then
    skip their check), so every path of ``compose_bytes`` must write nothing else: a given
    ``data`` with any line ends, texts sent as they are (the direct writer) and texts with
    lines over 998 octets (quoted-printable or base64, through the email package), with
    headers that fold."""
    from kmta.policy.compose import compose_bytes

    parts = {"both": {"subject": subject, "text": text, "html": html},
             "text": {"subject": subject, "text": text}, "html": {"subject": subject,
                                                                  "html": html},
             "data": {"data": f"Subject: {subject or 's'}\nX-A: b\r\rc\r\n\n{text}"}}[shape]
    msg = OutboxMessage.model_validate({**BASE, **parts})
    extra = [("List-Unsubscribe", "<https://u.example/" + "u" * 90 + ">"),
             ("Feedback-ID", "c:shop.example")]
    try:
        raw = compose_bytes(msg, "m-1", "mta.kmta.test", NOW, extra)
    except InputError:  # a data line over 998 octets: refused, nothing is routed
        assert shape == "data"
        return
    assert crlf_only(raw)
