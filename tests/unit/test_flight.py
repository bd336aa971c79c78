"""kmta.policy.flight: which commands go together, and what the replies, matched in order, mean
(stage, kept or lost connection, RSET next, lone dot); senders/smtpclient's reply parser and
body encoding."""
from __future__ import annotations

import re

import pytest
from aiosmtplib.email import quote_address
from hypothesis import given, settings
from hypothesis import strategies as st

from kmta.policy.flight import Plan, Settled, plan, rides, settle, settle_pair, steps
from kmta.policy.reply import Reply
from senders.smtpclient import SmtpError, _dotted, message, parse_replies, quoted, wire_body


def r(code: int, text: str = "ok") -> Reply:
    return Reply.parse(code, text)


OFFERS = {"pipelining", "chunking", "8bitmime"}


def test_plan_follows_the_offer_and_the_config() -> None:
    assert plan(OFFERS.__contains__, True) == Plan(True, True)
    assert plan({"pipelining"}.__contains__, True) == Plan(True, False)
    assert plan({"chunking"}.__contains__, True) == Plan(False, True)  # BDAT, lock-step
    assert plan(set().__contains__, True) == Plan(False, False)
    assert plan(OFFERS.__contains__, False) == Plan(False, False)


def test_steps() -> None:
    assert steps(Plan(True, False), False) == ["mail", "rcpt", "data"]
    assert steps(Plan(True, True), True) == ["rset", "mail", "rcpt", "bdat"]
    assert steps(Plan(False, False), True) == ["rset", "mail", "rcpt", "data"]


DATA = ["mail", "rcpt", "data"]
BDAT = ["rset", "mail", "rcpt", "bdat"]


@pytest.mark.parametrize(("sent", "codes", "want"), [
    # everything as expected
    (DATA, [250, 250, 354], ("go", None, "data", False, False, False)),
    ([*DATA, "dot"], [250, 250, 354, 250], ("accepted", 250, "data", False, False, False)),
    (BDAT, [250, 250, 250, 250], ("accepted", 250, "data", False, False, False)),
    (["mail", "rcpt"], [250, 251], ("go", None, "data", False, False, False)),
    # the first refusal decides; the later 503s only follow from it
    (DATA, [550, 503, 503], ("failed", 550, "mail", False, True, False)),
    (DATA, [250, 550, 554], ("failed", 550, "rcpt", False, True, False)),
    (DATA, [250, 250, 451], ("failed", 451, "data", False, True, False)),
    ([*DATA, "dot"], [250, 250, 354, 552], ("failed", 552, "data", False, True, False)),
    (BDAT, [250, 250, 550, 503], ("failed", 550, "rcpt", False, True, False)),
    (BDAT, [250, 250, 250, 554], ("failed", 554, "data", False, True, False)),
    # a server that says 354 although RCPT failed: end the empty message with a lone dot
    (DATA, [250, 550, 354], ("failed", 550, "rcpt", False, True, True)),
    # 421: the session is over, wherever it comes
    (DATA, [250, 421], ("failed", 421, "rcpt", True, False, False)),
    (DATA, [421], ("failed", 421, "mail", True, False, False)),
    (DATA, [550, 421, 421], ("failed", 550, "mail", True, False, False)),
    (BDAT, [250, 250, 250, 421], ("failed", 421, "data", True, False, False)),
    # a refused RSET: nobody knows the session's state
    (BDAT, [500, 250, 250, 250], ("failed", 500, "mail", True, False, False)),
    # replies still to come
    (DATA, [250], ("go", None, "data", False, False, False)),
    (DATA, [250, 550], ("failed", 550, "rcpt", False, True, False)),
])
def test_settle(sent: list[str], codes: list[int], want: tuple) -> None:
    s = settle(sent, [r(c) for c in codes], "mx.test")
    assert (s.state, s.reply.code if s.reply else None, s.stage, s.lost, s.reset,
            s.lone_dot) == want


def test_a_closed_connection_before_all_replies() -> None:
    s = settle(DATA, [r(250)], "mx.test", "closed by the server")
    assert s == Settled("failed", Reply(451, "4.4.2", "connection to mx.test lost: closed by "
                                              "the server", internal=True), "data", True)
    # a refusal that came before the close is the outcome; the session is still over
    s = settle(DATA, [r(250), r(550, "5.1.1 unknown")], "mx.test", "closed by the server")
    assert (s.reply.code, s.reply.enhanced_code, s.stage, s.lost, s.reset) == (
        550, "5.1.1", "rcpt", True, False)
    # closed before anything could be written, or after the 354
    assert settle([], [], "mx.test", "closed").state == "failed"
    s = settle(DATA, [r(250), r(250), r(354)], "mx.test", "reset by peer")
    assert (s.state, s.reply.code, s.stage, s.lost) == ("failed", 451, "data", True)
    # every reply in: the close after it changes nothing
    s = settle([*DATA, "dot"], [r(250), r(250), r(354), r(250)], "mx.test", "closed")
    assert s.state == "accepted"


def test_only_pipelined_data_takes_the_next_message_behind_its_dot() -> None:
    assert rides(Plan(True, False))
    assert not rides(Plan(True, True))  # BDAT: a message is one write already
    assert not rides(Plan(False, False)) and not rides(Plan(False, True))


FIRST = [*DATA, "dot"]  # its MAIL, RCPT and DATA replies came before the body was written
OK3 = [250, 250, 354]


@pytest.mark.parametrize(("codes", "closed", "want_first", "want_second"), [
    # the final reply of the first message, then the second's MAIL, RCPT and DATA replies
    ([250], None, ("accepted", 250, "data", False), ("go", None, "data", False)),
    ([250, 250, 250, 354], None, ("accepted", 250, "data", False),
     ("go", None, "data", False)),  # 354: the second's body (and maybe a third behind it)
    ([250, 250], None, ("accepted", 250, "data", False), ("go", None, "data", False)),
    # the second refused while the first went through; the refusal keeps its stage
    ([250, 550, 503, 503], None, ("accepted", 250, "data", False),
     ("failed", 550, "mail", False)),
    ([250, 250, 550, 503], None, ("accepted", 250, "data", False),
     ("failed", 550, "rcpt", False)),
    ([250, 250, 450], None, ("accepted", 250, "data", False), ("failed", 450, "rcpt", False)),
    ([250, 250, 250, 451], None, ("accepted", 250, "data", False),
     ("failed", 451, "data", False)),
    # the first refused at its end of data: the transaction is over, the second goes on
    ([554, 250, 250, 354], None, ("failed", 554, "data", False), ("go", None, "data", False)),
    # 421 after the first's dot: the session is over and the second was never attempted,
    # whatever the server said after the 421
    ([421], None, ("failed", 421, "data", True), ("unsent", None, "data", True)),
    ([421, 503, 503, 503], None, ("failed", 421, "data", True),
     ("unsent", None, "data", True)),
    # 421 to the second's MAIL (e.g. "idle too long" said unasked): as it is on its own
    ([250, 421], None, ("accepted", 250, "data", False), ("failed", 421, "mail", True)),
    ([250, 250, 421], None, ("accepted", 250, "data", False), ("failed", 421, "rcpt", True)),
    # the connection closed: before the first's reply, and between the two
    ([], "closed", ("failed", 451, "data", True), ("unsent", None, "data", True)),
    ([250], "closed", ("accepted", 250, "data", False), ("unsent", None, "data", True)),
    ([554], "closed", ("failed", 554, "data", True), ("unsent", None, "data", True)),
    # ... and after the second had replies of its own: a lost connection, as on its own
    ([250, 250], "reset by peer", ("accepted", 250, "data", False),
     ("failed", 451, "data", True)),
    ([250, 250, 550], "closed", ("accepted", 250, "data", False),
     ("failed", 550, "rcpt", True)),
])
def test_settle_pair(codes: list[int], closed: str | None, want_first: tuple,
                     want_second: tuple) -> None:
    a, b = settle_pair(FIRST, DATA, [r(c) for c in OK3 + codes], "mx.test", closed)
    assert (a.state, a.reply.code if a.reply else None, a.stage, a.lost) == want_first
    assert (b.state, b.reply.code if b.reply else None, b.stage, b.lost) == want_second
    # the first message's outcome is the one it has on its own
    assert a == settle(FIRST, [r(c) for c in OK3 + codes[:1]], "mx.test", closed)


def test_settle_pair_second_replies_as_on_their_own() -> None:
    """With the first's 250 in, the second's replies mean what they mean alone (lone dot,
    RSET next included)."""
    got = [r(c) for c in [*OK3, 250, 250, 550, 354]]
    _, b = settle_pair(FIRST, DATA, got, "mx.test")
    assert b == settle(DATA, got[4:], "mx.test")
    assert (b.state, b.stage, b.reset, b.lone_dot) == ("failed", "rcpt", True, True)
    # with RSET in front (not the case behind a dot, but the table holds for any steps)
    _, b = settle_pair(FIRST, ["rset", *DATA], [*got[:4], r(500)], "mx.test")
    assert (b.state, b.lost) == ("failed", True)


def test_parse_replies_takes_every_complete_reply_and_keeps_the_rest() -> None:
    buf = bytearray(b"250 2.1.0 ok\r\n250-first\r\n250-second\r\n250 last\r\n354 go")
    got = parse_replies(buf)
    assert [(x.code, x.text) for x in got] == [(250, "2.1.0 ok"), (250, "first\nsecond\nlast")]
    assert buf == bytearray(b"354 go")
    buf += b" ahead\r\n"
    assert [(x.code, x.text) for x in parse_replies(buf)] == [(354, "go ahead")]
    assert buf == bytearray()
    buf += b"250-par"
    assert parse_replies(buf) == [] and buf == bytearray(b"250-par")
    buf += b"tial\n250 \n"  # bare LF and an empty last line (smtp-sink's EHLO)
    assert [(x.code, x.text) for x in parse_replies(buf)] == [(250, "partial\n")]
    assert got[1].reply() == Reply.parse(250, "first\nsecond\nlast")


@pytest.mark.parametrize("bad", [b"hello\r\n", b"25x ok\r\n", b"250+ok\r\n",
                                 b"250 " + b"x" * 9000 + b"\r\n", b"250-x\r\n" * 5000])
def test_parse_replies_refuses_garbage(bad: bytes) -> None:
    with pytest.raises(SmtpError):
        parse_replies(bytearray(bad))


def test_body_line_ends_and_dot_stuffing() -> None:
    assert wire_body(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n"
    assert wire_body(b"a\r\n") == b"a\r\n"
    assert _dotted(wire_body(b".x\n..y\nz.\n.")) == b"..x\r\n...y\r\nz.\r\n..\r\n.\r\n"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b" ", b"\xc3\xa9"]),
                max_size=60).map(b"".join))
def test_body_conversion_matches_the_regex_it_replaced(data: bytes) -> None:
    """wire_body and _dotted use bytes methods; the output must be what the regular
    expressions they replaced gave (line ends to CRLF, a dot more at each line start)."""
    want = re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", data)
    want = want if want.endswith(b"\r\n") else want + b"\r\n"
    assert wire_body(data) == want
    assert _dotted(wire_body(data)) == re.sub(rb"(?m)^\.", b"..", want) + b".\r\n"


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_atoms = st.lists(st.text(ATEXT, min_size=1, max_size=6), min_size=1, max_size=4)
_labels = st.lists(st.text("abz09-", min_size=1, max_size=6), min_size=1, max_size=4)
# plain addresses (the fast path) and near misses: quotes, brackets, spaces, CR/LF, dots at
# the ends or doubled, comments, several @, non-ASCII, display names
_noise = st.text(ATEXT + ' .@"<>()[]\\,;:\r\n\té', max_size=30)


def _quote_or_error(f, a: str) -> str:
    try:
        return f(a)
    except ValueError as e:
        return f"ValueError: {e}"


@settings(max_examples=1000, deadline=None)
@given(st.one_of(
    st.builds(lambda lo, do: ".".join(lo) + "@" + ".".join(do), _atoms, _labels),
    st.builds(lambda lo, do, n: ".".join(lo) + "@" + ".".join(do) + n, _atoms, _labels, _noise),
    st.builds(lambda n, lo, do: n + ".".join(lo) + "@" + ".".join(do), _noise, _atoms, _labels),
    st.builds(lambda lo, do, n, i: (lambda a: a[:i % (len(a) + 1)] + n + a[i % (len(a) + 1):])(
        ".".join(lo) + "@" + ".".join(do)), _atoms, _labels, _noise, st.integers(0, 60)),
    _noise, st.text(max_size=30)))
def test_quoted_is_aiosmtplibs_quote_address(addr: str) -> None:
    assert _quote_or_error(quoted, addr) == _quote_or_error(quote_address, addr)


def test_quoted_takes_the_fast_path_only_for_plain_addresses() -> None:
    assert quoted("bounce+a1-b=c.d@news.example.com") == "<bounce+a1-b=c.d@news.example.com>"
    assert quoted("Ann <ann@example.com>") == "<ann@example.com>"  # parsed, as before
    # not plain: parsed as before (parseaddr keeps only the address: nothing is injected)
    assert quoted("ann@example.com> SIZE=1\r\nRSET") == "<ann@example.com>"
    assert quoted('"a b"@example.com') == '<"a b"@example.com>'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b" ", b"\xc3\xa9"]),
                max_size=60).map(b"".join), st.booleans())
def test_a_body_marked_crlf_is_sent_as_when_it_is_checked(data: bytes, cut: bool) -> None:
    """``crlf`` (``Envelope.crlf``, set by the router) spares the check, never the bytes:
    for a body with CRLF line ends only, with or without its last one, the same body as
    without the mark (BDAT sends it; DATA dot-stuffs it)."""
    body = wire_body(data)
    if cut:
        body = body[:-2]
    assert wire_body(body, crlf=True) == wire_body(body)
    assert message("a@x.test", "b@y.test", [], body, crlf=True) == message(
        "a@x.test", "b@y.test", [], body)
