"""The queue and delay record (schemas.envelope_codec): the body once, as bytes, after a JSON
head; records of the old JSON form still read; dead letters of either stay readable."""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import DeadLetter, Envelope, MxHost, TlsPolicy, envelope_codec
from schemas.envelope_codec import MAGIC, decode, encode, readable

BODY = ("X-Kmta-Id: m-1\r\nFrom: news@shop.example\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        "Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: 8bit\r\n"
        "\r\nGrüße \"aus\" Köln\\n\r\n.a dot line\r\n").encode()


def env(**kw: object) -> Envelope:
    fields: dict[str, object] = dict(
        id="m-1", sender="news@shop.example", rcpt="ann@gmail.com", domain="gmail.com",
        isp="gmail", data=BODY, campaign="spring", meta={"u": [1, "zwei", None]},
        accepted_at=1_790_000_000.25, routed_at=1_790_000_001.5, attempt=2,
        mx=[MxHost(host="gmail-smtp-in.l.google.com", pref=5, ips=["127.0.1.1"])],
        mx_resolved_at=1_790_000_000.0, mx_ttl=300.0, last_code=451,
        last_response="4.7.0 try later", tls_policy=TlsPolicy(mx=["*.google.com"], id="1"),
        dkim=["s1._domainkey.shop.example"])
    fields.update(kw)
    return Envelope.model_validate(fields)


def test_the_body_follows_a_json_head_as_it_is() -> None:
    e = env()
    value = encode(e)
    assert value.startswith(MAGIC)
    n = int.from_bytes(value[4:8], "big")
    head = json.loads(value[8:8 + n])
    assert "data" not in head and head["id"] == "m-1" and head["mx"][0]["pref"] == 5
    assert value[8 + n:] == BODY  # not escaped, not re-encoded
    assert len(value) < len(e.to_json())  # the JSON form escapes every CRLF and quote
    assert decode(value) == e


# a record as kmta wrote it before the binary form (Envelope.to_json of the old model, whose
# data was text): a queue may still hold such records after an upgrade
OLD_RECORD = (
    b'{"id":"old-1","sender":"news@shop.example","rcpt":"ann@gmail.com","domain":"gmail.com",'
    b'"isp":"gmail","data":"X-Kmta-Id: old-1\\r\\nSubject: hi\\r\\n\\r\\nGr\xc3\xbc\xc3\x9fe '
    b'\\"x\\"\\r\\n","pool":"default","accepted_at":1790000000.0,"routed_at":1790000000.0,'
    b'"attempt":1,"due_at":1790000030.0,"mx":[{"host":"mx.gmail.com","pref":10,'
    b'"ips":["127.0.1.1"]}],"mx_resolved_at":1790000000.0,"mx_ttl":300.0}')


def test_a_record_of_the_old_json_form_is_read() -> None:
    e = decode(OLD_RECORD)
    assert e.id == "old-1" and e.attempt == 1 and e.due_at == 1_790_000_030.0
    assert e.data == 'X-Kmta-Id: old-1\r\nSubject: hi\r\n\r\nGrüße "x"\r\n'.encode()
    assert e.mx == [MxHost(host="mx.gmail.com", pref=10, ips=["127.0.1.1"])]
    # written again (a retry, a park), it takes the binary form
    assert encode(e).startswith(MAGIC) and decode(encode(e)) == e


@pytest.mark.parametrize("value", [
    b"", b"\x00KE", MAGIC + b"\x00\x00", MAGIC + b"\x00\x00\x00\x10{}",  # cut short
    MAGIC + b"\x00\x00\x00\x02[]body",  # a head that is no object
    MAGIC + b"\x00\x00\x00\x03{x}body",  # nor JSON
    MAGIC + b"\x00\x00\x00\x0b{\"data\":\"\"}body",  # a body in the head
    MAGIC + b"\x00\x00\x00\x02{}body",  # an envelope without its fields
    b"{not json", b"\xff\xfe", b'{"id": "x"}',
])
def test_what_is_neither_form_raises_value_error(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode(value)


def test_a_dead_letter_shows_the_envelope_as_json_with_the_body_as_text() -> None:
    e = env()
    original, encoding = readable(encode(e))
    assert encoding == "utf-8"
    doc = json.loads(original)
    assert doc["data"] == BODY.decode() and doc["id"] == "m-1"
    assert decode(original.encode()) == e  # and it can be written back to the queue
    dl = DeadLetter(reason="r", topic="t.queue", partition=0, offset=1, timestamp=0,
                    original=original, original_encoding=encoding)
    assert DeadLetter.model_validate_json(dl.to_json()) == dl


def test_a_dead_letter_of_a_body_that_is_not_utf8_keeps_the_record_in_base64() -> None:
    value = encode(env(data=b"Subject: x\r\n\r\n\xff\xfe\r\n"))
    original, encoding = readable(value)
    assert encoding == "base64" and base64.b64decode(original) == value
    assert decode(base64.b64decode(original)).data.endswith(b"\xff\xfe\r\n")


def test_a_dead_letter_of_an_undecodable_record_keeps_its_bytes() -> None:
    assert readable(b"{not json") == ("{not json", "utf-8")
    assert readable(b"\xff\x00") == (base64.b64encode(b"\xff\x00").decode(), "base64")
    cut = encode(env())[:20]  # the head's length is binary: base64 unless it happens to be text
    original, encoding = readable(cut)
    assert (original.encode() if encoding == "utf-8" else base64.b64decode(original)) == cut


def test_is_binary() -> None:
    assert envelope_codec.is_binary(encode(env()))
    assert not envelope_codec.is_binary(OLD_RECORD)
    assert not envelope_codec.is_binary(b"")


# -- any body, any envelope ------------------------------------------------------------------
_text = st.text(max_size=40)
_float = st.floats(allow_nan=False, allow_infinity=False)
_json = st.recursive(st.none() | st.booleans() | st.integers() | _float | _text,
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_text, inner, max_size=4), max_leaves=12)
envelopes = st.builds(
    Envelope, id=_text, sender=_text, rcpt=_text, domain=_text, isp=_text,
    data=st.binary(max_size=4096), pool=st.none() | _text, campaign=st.none() | _text,
    meta=st.none() | st.dictionaries(_text, _json, max_size=4),
    expires_at=st.none() | _float, accepted_at=_float, routed_at=_float,
    attempt=st.integers(min_value=0, max_value=2**40), due_at=st.none() | _float,
    mx=st.lists(st.builds(MxHost, host=_text, pref=st.integers(-2**31, 2**31),
                          ips=st.lists(_text, max_size=3)), max_size=3),
    mx_resolved_at=st.none() | _float, mx_ttl=st.none() | _float,
    last_code=st.none() | st.integers(0, 999), last_response=st.none() | _text,
    tls_policy=st.none() | st.builds(TlsPolicy, mode=_text, mx=st.lists(_text, max_size=3),
                                     id=st.none() | _text),
    dkim=st.none() | st.lists(_text, max_size=3), crlf=st.booleans())


@settings(max_examples=300, deadline=None)
@given(envelopes)
def test_any_envelope_with_any_body_round_trips(e: Envelope) -> None:
    value = encode(e)
    assert decode(value) == e
    assert value.endswith(e.data)
    original, encoding = readable(value)
    if encoding == "utf-8":  # the body is UTF-8: the old JSON form, read back the same
        # but for the CRLF mark, which JSON never carries: the body is checked again
        assert decode(original.encode()) == e.model_copy(update={"crlf": False})
    else:
        assert decode(base64.b64decode(original)) == e
    # a reader of before the mark takes every record as it did
    assert _decode_before_the_mark(value) == e.model_copy(update={"crlf": False})
    assert encode(e.model_copy(update={"crlf": False})) == _encode_before_the_mark(e)


# -- the CRLF mark (Envelope.crlf): JSON white space after the head ---------------------------
def _encode_before_the_mark(env: Envelope) -> bytes:
    """``encode`` as it was before the mark (086dd53)."""
    head = env.model_dump_json(by_alias=True, exclude_none=True, exclude={"data"}).encode()
    return b"".join((MAGIC, len(head).to_bytes(4, "big"), head, env.data))


def _decode_before_the_mark(value: bytes) -> Envelope:
    """``decode`` of a binary record as it was before the mark (086dd53), its reading of the
    head as it was (without the checks of a cut record): during a rolling upgrade such
    readers share the topics with writers of now."""
    n = int.from_bytes(value[4:8], "big")
    doc = json.loads(value[8:8 + n])
    if not isinstance(doc, dict) or "data" in doc:
        raise ValueError("queue record head is not an envelope without its body")
    doc["data"] = value[8 + n:]
    return Envelope.model_validate(doc)


def test_the_crlf_mark_is_a_space_after_the_head() -> None:
    e = env(crlf=True)
    value = encode(e)
    n = int.from_bytes(value[4:8], "big")
    assert value[8 + n - 2:8 + n] == b"} " and value[8 + n:] == BODY
    assert "crlf" not in json.loads(value[8:8 + n])  # not a field of the head
    assert decode(value).crlf and decode(value) == e
    assert not decode(encode(env())).crlf  # unmarked: nothing known about the body
    assert len(value) == len(encode(env())) + 1


def test_a_record_of_before_the_mark_reads_unmarked_and_a_marked_one_reads_before() -> None:
    """Both ways of a rolling upgrade: a sender of now reads a router's of before (its body
    is checked, as then), a sender or delay scheduler of before reads a router's of now (the
    mark is white space to its ``json.loads``)."""
    before = _encode_before_the_mark(env())
    assert decode(before) == env() and not decode(before).crlf
    assert _decode_before_the_mark(encode(env(crlf=True))) == env()
    assert not decode(OLD_RECORD).crlf  # the JSON form of before that


@pytest.mark.parametrize("white", [b"\t", b"\n", b"\r", b"\t\n\r"])
def test_white_space_that_is_not_a_known_flag_is_ignored(white: bytes) -> None:
    """Tab, LF and CR are free for flags to come: a reader of now ignores them, as a reader
    of before ignores the space."""
    value = encode(env())
    n = int.from_bytes(value[4:8], "big")
    head = value[8:8 + n]
    for flags, crlf in ((white, False), (white + b" ", True), (b" " + white, True)):
        other = MAGIC + (n + len(flags)).to_bytes(4, "big") + head + flags + BODY
        assert decode(other) == env(crlf=crlf)


def test_a_head_that_names_the_mark_is_refused() -> None:
    head = b'{"crlf":true}'
    with pytest.raises(ValueError, match="not an envelope without its body"):
        decode(MAGIC + len(head).to_bytes(4, "big") + head + BODY)
