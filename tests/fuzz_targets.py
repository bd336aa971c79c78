"""Property targets over the input paths: hypothesis strategies for hostile input, the oracles
every output must pass, and one function per path that returns an outcome label or raises.

Used by the unit tier (tests/unit/test_properties.py, a small fixed budget) and by
``make fuzz`` (tests/fuzz.py, >= 100,000 examples with the counts printed). A target raises
AssertionError for a broken property and lets any exception other than the module's own
validation error escape: both are failures.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError

from kmta.config import Config
from kmta.errors import InputError, KmtaError
from kmta.pipeline.control import ControlError, check_fresh, parse_command, remember, sign
from kmta.pipeline.kafkaio import record_limit
from kmta.policy.addresses import split_address
from kmta.policy.compose import MAX_LINE, TRACE_HEADER, compose
from kmta.policy.kb import KnowledgeBase
from schemas import (
    ControlCommand,
    ControlRecord,
    DeadLetter,
    DeliveryEvent,
    OutboxMessage,
    Status,
    envelope_codec,
)
from schemas.message import ID_PATTERN

__all__ = [
    "TARGETS",
    "address_target",
    "addresses",
    "check_message",
    "compose_target",
    "control_raw",
    "control_target",
    "outbox_docs",
    "outbox_raw",
    "outbox_target",
]

# -- strategies ---------------------------------------------------------------------------------
# characters that have broken mail software: line ends of every kind, controls, invisible and
# space characters, lone surrogates, header syntax, non-ASCII of 2, 3 and 4 UTF-8 octets
NASTY = list("\x00\x01\x08\t\n\x0b\x0c\r\x1b\x1c\x1d\x1e\x1f\x7f\x85\xa0\u2028\u2029\ufeff\u200b"
             "\u202e\ud800\udbff\udc00\udfff:;=? \"'\\<>@.,()[]é日🎉")
NASTY += ["\r\n", "=?utf-8?q?x?=", "\r\nBcc: x@y.z", "\n\n"]
_char = st.one_of(st.characters(codec=None), st.sampled_from(NASTY),
                  st.characters(min_codepoint=0x20, max_codepoint=0x7e))
_run = st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "日", " ", "ab ", "\t"]),
                 st.integers(0, 1300))
# few characters, mostly nasty ones between header syntax: what finds an injection quickly
nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.sampled_from(
    ["a", "Bcc: x@y.z", "X-Injected: 1", " ", "word", ":"])), max_size=8).map("".join)
hostile_text = st.one_of(nasty_text, st.lists(st.one_of(_char, _run), max_size=12).map("".join))
short_text = st.lists(_char, max_size=8).map("".join)
benign_text = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=120)
# a field is mostly benign, sometimes hostile: so that the later steps get to run too
long_text = st.builds(lambda w, n: w * n,
                      st.sampled_from(["a", "日", "word ", "é ", "a\t", "  "]),
                      st.sampled_from([70, 500, 989, 990, 1000, 1100]))
field_text = st.one_of(benign_text, st.just("Spring sale"), nasty_text, hostile_text, long_text)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text)
json_values = st.one_of(
    st.recursive(json_scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(short_text, inner, max_size=4)),
        max_leaves=12),
    st.builds(nested, st.sampled_from([31, 32, 33, 500, 900])))

_local = st.one_of(st.sampled_from(["ann", "a.b+tag", '"quoted x"', "ü", "用户", "a\xa0b", "",
                                    "a..b", ".a", "x" * 64, "x" * 65, "a\u200bb", "\ud800"]),
                   short_text)
_domain = st.one_of(st.sampled_from(["gmail.com", "Example.COM", "bücher.example",
                                     "xn--bcher-kva.example", "[127.0.0.1]", "a", "-a.com",
                                     "a.123", "x" * 64 + ".com", "gmail.com.", "b\ud800.com",
                                     "nullmx.example", "flaky.example"]),
                    short_text)
addresses = st.one_of(st.builds(lambda lp, d: f"{lp}@{d}", _local, _domain), short_text,
                      hostile_text)
_good_addresses = st.sampled_from(["ann@gmail.com", "ü@gmail.com", "A.b+tag@Example.COM",
                                   "x@bücher.example", '"q x"@gmail.com', "bob@nullmx.example",
                                   "eve@flaky.example", "用户@例子.example"])
field_address = st.one_of(_good_addresses, _good_addresses, addresses)

_names = st.one_of(st.sampled_from(["X-Tag", "List-Unsubscribe", "Reply-To", "subject", "From",
                                    "x-kmta-id", "X Bad", "X:Bad", "X\x00", "Ünï", "", "X" * 77,
                                    "Content-Type", "Bcc", "X\x0bY", "X\x7f", "\x01"]),
                   st.text(st.characters(max_codepoint=0x7f), min_size=1, max_size=6),
                   st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1,
                           max_size=80),
                   short_text)
header_maps = st.dictionaries(st.one_of(_names, st.sampled_from(["X-Tag", "X-Campaign"])),
                              st.one_of(st.just("v"), field_text), max_size=4)
_ids = st.one_of(st.from_regex(ID_PATTERN, fullmatch=True),
                 st.sampled_from(["m-1", "a" * 200, "a" * 201, "bad id", "ü", "", "m\ud800"]),
                 short_text)
_data = st.one_of(
    hostile_text,
    st.builds(lambda h, b: f"Subject: x\r\nX-H: {h}\r\n\r\n{b}", field_text, field_text),
    st.builds(lambda h, b: f"{h}\r\n\r\n{b}", nasty_text, long_text))


# st.integers favours its bounds; a uniform choice out of n
_ONE_IN = {n: st.sampled_from([False] * (n - 1) + [True]) for n in (2, 4, 8, 16)}


@st.composite
def outbox_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Outbox JSON documents: a well-formed message, then none, one or a few of its fields made
    hostile (so that most documents reach compose, and every field is sometimes hostile)."""
    doc: dict[str, Any] = {"from": "news@shop.example", "to": draw(_good_addresses)}
    if draw(_ONE_IN[8]):
        doc["data"] = draw(st.sampled_from([
            "Subject: hi\r\nFrom: a@b.example\r\n\r\nbody\r\n",
            "Subject: =?utf-8?q?x?=\nX-A: 1\n\nbody é\n",
            "Subject: hi\r\n\r\n" + "x" * 998 + "\r\n"]))
    else:
        doc["subject"] = draw(st.one_of(st.just("Spring sale"), benign_text))
        for part in draw(st.sampled_from([("text",), ("html",), ("text", "html")])):
            doc[part] = draw(st.one_of(st.just("Hello\n"), benign_text))
        if draw(_ONE_IN[2]):
            doc["headers"] = {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@x.example>"}
    hostile = {"from": field_address, "to": field_address, "subject": hostile_text,
               "text": hostile_text, "html": hostile_text, "headers": header_maps,
               "data": _data, "id": _ids, "meta": json_values, "campaign": short_text,
               "pool": st.sampled_from(["default", "bulk", "nope"]),
               "expires_at": st.one_of(st.floats(), st.sampled_from(
                   ["2099-01-01T00:00:00Z", "x"])), "junk": json_values}
    # the header fields twice as often: that is where injections live
    keys = [*sorted(hostile), "subject", "headers", "headers"]
    for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
        if key == "data":  # data alone, or the message is refused before compose
            for k in ("subject", "text", "html", "headers"):
                doc.pop(k, None)
        doc[key] = draw(hostile[key])
    return doc


def _dump(doc: Any, how: int) -> bytes:
    if how == 0:
        return json.dumps(doc).encode()  # surrogates escaped as \ud800
    text = json.dumps(doc, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")  # surrogates as invalid UTF-8


@st.composite
def outbox_raw(draw: st.DrawFn) -> bytes | None:
    """Any record a producer can write to the outbox."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.one_of(st.none(), st.binary(max_size=200)))
    if kind == 1:
        return _dump(draw(json_values), draw(st.integers(0, 1)))
    if kind == 2:
        depth = draw(st.sampled_from([100, 999, 1000, 1001, 3000, 100_000]))
        return b"[" * depth + b"]" * depth
    raw = _dump(draw(outbox_docs()), draw(st.integers(0, 1)))
    if kind == 4 and raw.startswith(b"{"):  # a field nested deeper than json.dumps can write
        depth = draw(st.sampled_from([990, 1000, 5000]))
        raw = b'{"meta":' + b'{"a":' * depth + b"1" + b"}" * depth + b"," + raw[1:]
    if kind == 3 and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + draw(st.binary(min_size=1, max_size=3)) + raw[i + 1:]
    return raw


@st.composite
def control_raw(draw: st.DrawFn) -> tuple[bytes | None, bool]:
    """A control record and whether its signature is right (signed with SECRET)."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.one_of(st.none(), st.binary(max_size=100))), False
    if kind == 1:
        return _dump(draw(json_values), 0), False
    # a valid command, then none, one or a few fields hostile
    action = draw(st.sampled_from(["pause", "resume", "clear", "unlock", "set_rules",
                                   "reset_rules"]))
    doc: dict[str, Any] = {"id": draw(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True)),
                           "action": action, "isp": "gmail", "actor": "ops",
                           "timestamp": NOW + draw(st.integers(-10, 10))}
    if action == "set_rules":
        doc["rules"] = {"speed": {"max": 5}}
    hostile = {"id": short_text, "isp": short_text, "actor": short_text,
               "action": st.sampled_from(["explode", "PAUSE", ""]),
               "timestamp": st.one_of(st.floats(), st.just(NOW - 301.0), st.just("x")),
               "rules": st.one_of(json_values, st.just({"speed": {"max": 5}})),
               "source_ip": st.one_of(st.just("127.0.0.2"), short_text), "pool": short_text,
               "reason": hostile_text, "signature": st.one_of(short_text, st.just("é" * 64)),
               "junk": json_values}
    for key in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True)):
        doc[key] = draw(hostile[key])
    signed = False
    if draw(st.booleans()):
        try:
            cmd = ControlCommand.model_validate({k: v for k, v in doc.items() if k != "signature"})
            doc["signature"] = sign(cmd, SECRET)
            signed = True
        except (ValidationError, ValueError, KmtaError):
            pass
    return _dump(doc, draw(st.integers(0, 1))), signed


# -- oracles -----------------------------------------------------------------------------------
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
KMTA_FIELDS = ("x-kmta-id", "from", "to", "subject", "date", "message-id", "mime-version",
               "content-type")


def check_message(text: str, named: list[str] | None) -> Counter[str]:
    """Assert the message text is sendable: CRLF line ends only, every line <= 998 octets, a
    header section of well-formed field lines. With ``named`` (the header names the input gave,
    for a message kmta composed) also assert that its header lines are exactly kmta's own
    fields and those names: nothing the input did not name. Returns the field-name counts."""
    raw = text.encode("utf-8")
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", raw), "a bare CR or LF"
    assert b"\x00" not in raw, "a NUL"
    lines = raw.split(b"\r\n")
    longest = max(map(len, lines))
    assert longest <= MAX_LINE, f"a line of {longest} octets"
    assert b"" in lines, "no end of the header section"
    names: Counter[str] = Counter()
    for line in lines[:lines.index(b"")]:
        if line[:1] in (b" ", b"\t"):
            assert names, "a continuation line before the first field"
            assert line.strip(b" \t"), "a continuation line of only white space"
            continue
        name, colon, _ = line.partition(b":")
        assert colon and _FIELD.fullmatch(name), f"not a header field line: {line[:80]!r}"
        names[name.decode().lower()] += 1
    if named is not None:
        want = Counter(KMTA_FIELDS) + Counter(n.lower() for n in named)
        # what the broadest reader sees: one that also ends lines at \x0b \x0c \x1c-\x1e
        # \x85 U+2028/9 (str.splitlines; parts of Python's email package do)
        for line in text[:text.index("\r\n\r\n")].splitlines():
            if line[:1] not in (" ", "\t"):
                name = line.partition(":")[0].encode("utf-8")
                assert _FIELD.fullmatch(name) and name.decode().lower() in names, (
                    f"a reader sees a header line {line[:80]!r}")
        cte = names.pop("content-transfer-encoding", 0)
        assert cte <= 1
        assert names == want, f"header fields {dict(names)} != named {dict(want)}"
    return names


def _unfold(value: str) -> str:
    return " ".join(value.split())


# -- targets ------------------------------------------------------------------------------------
NOW = 1_790_000_000.0
SECRET = "fuzz-secret"


def compose_target(doc: dict[str, Any]) -> str:
    """Validate + compose one outbox document."""
    try:
        msg = OutboxMessage.model_validate(doc)
    except ValidationError:
        return "invalid:model"
    try:
        text = compose(msg, "m-1", "mta.kmta.test", NOW)
    except InputError:
        return "invalid:compose"
    named = None if msg.data is not None else list(msg.headers or {})
    check_message(text, named)
    if msg.data is None:
        parsed = email.message_from_bytes(text.encode(), policy=email.policy.default)
        assert _unfold(str(parsed["Subject"])) == _unfold(msg.subject or ""), "subject changed"
        assert parsed[TRACE_HEADER] == "m-1"
    return "composed" if msg.data is None else "data"


def address_target(address: str) -> str:
    try:
        local, domain = split_address(address)
    except InputError:
        return "invalid"
    assert domain.isascii() and domain == domain.lower() and "." in domain
    whole = f"{local}@{domain}".encode()  # never a lone surrogate
    assert len(whole) <= 254 and not re.search(rb"[\x00-\x20\x7f<>]", whole.replace(b" ", b"")
                                               if local.startswith('"') else whole)
    return "valid-utf8" if not local.isascii() else "valid"


class _Router:
    """The real router over a table resolver (as in tests/unit/test_router.py), one loop."""

    def __init__(self) -> None:
        from kmta.pipeline.outputs import Out
        from kmta.pipeline.resolver import MxResult, MxStatus
        from kmta.pipeline.rules import partition_map
        from schemas import MxHost
        from streams.router import Router

        class Resolver:
            async def mx(self, domain: str) -> MxResult:
                if domain in ("nullmx.example",):
                    return MxResult(MxStatus.NULL_MX, detail="null MX")
                if domain == "flaky.example":
                    return MxResult(MxStatus.TEMPFAIL, detail="SERVFAIL")
                return MxResult(MxStatus.OK, [MxHost(host=f"mx.{domain}", ips=["127.0.1.1"])],
                                ttl=60)

            async def txt(self, name: str) -> list[str]:
                return []  # no MTA-STS anywhere

            async def addresses(self, host: str) -> list[str]:
                return []

        self.config = Config.model_validate({
            "kafka": {"topic_prefix": "f."},
            "delivery": {"helo_name": "mta.kmta.test", "max_message_bytes": 200_000,
                         "unsigned": "allow"},  # no DKIM keys here
            "pools": [{"name": "default", "source_ips": ["127.0.0.2"]},
                      {"name": "bulk", "source_ips": ["127.0.0.3"]}]})
        kb = KnowledgeBase.load()
        self.router = Router(self.config, kb, partition_map(self.config, kb), Resolver(),
                             {}, retry_first=lambda env, now: [
                                 Out("f.delay.5s", env.to_json(), env.isp.encode())],
                             clock=lambda: NOW)
        self.loop = asyncio.new_event_loop()
        self.limit = record_limit(self.config)
        self.offset = 0

    def route(self, raw: bytes | None) -> list:
        self.offset += 1
        return self.loop.run_until_complete(self.router.route(raw, "f.outbox", 0, self.offset))


_router: _Router | None = None
_ID = re.compile(ID_PATTERN)


def outbox_target(raw: bytes | None) -> str:
    """One record through the real router; every output checked."""
    global _router
    if _router is None:
        _router = _Router()
    outs = _router.route(raw)
    assert outs, "a record with no output"
    labels = []
    for o in outs:
        assert isinstance(o.value, bytes) and len(o.value) <= _router.limit
        kind = o.topic.split(".", 1)[1]
        if kind == "dlq":
            dl = DeadLetter.model_validate_json(o.value)
            assert "internal error" not in dl.reason, dl.reason
            labels.append("dlq:" + dl.reason.split(":", 1)[0].split(" '", 1)[0][:40])
        elif kind == "results":
            ev = DeliveryEvent.model_validate_json(o.value)
            assert _ID.match(ev.id), f"event for an invalid id {ev.id!r}"
            if ev.status is not Status.QUEUED:
                labels.append(ev.status.value)
        elif kind in ("queue", "delay.5s"):
            env = envelope_codec.decode(o.value)
            check_message(env.data.decode("utf-8"), None)  # UTF-8, as sent
            labels.append("queued" if kind == "queue" else "retry")
    return "+".join(sorted(labels)) or "other"


_kb: KnowledgeBase | None = None


def control_target(record: tuple[bytes | None, bool]) -> str:
    """One control record as the obey agent takes it: parse, freshness, apply, audit."""
    global _kb
    from streams.brain import Row, apply_command

    if _kb is None:
        _kb = KnowledgeBase.load()
    raw, signed = record
    try:
        cmd = parse_command(raw, SECRET)
    except ControlError as e:
        ControlRecord(command=e.command, raw=None if e.command else (raw or b"").decode(
            "utf-8", "replace"), applied=False, error=str(e), timestamp=NOW).to_json()
        return "refused:" + str(e).split(":", 1)[0]
    assert signed, "a command without the right signature was accepted"
    row = Row(isp=cmd.isp)
    try:
        check_fresh(cmd, NOW, 300.0, row.commands, row.commands_floor)
        apply_command(row, cmd, _kb, NOW)
        row.commands_floor = remember(row.commands, cmd, NOW, 300.0, row.commands_floor)
    except (KmtaError, ValueError) as e:
        ControlRecord(command=cmd, applied=False, error=str(e), timestamp=NOW).to_json()
        return "refused:" + str(e).split(":", 1)[0][:40]
    assert math.isfinite(cmd.timestamp)
    with_replay = ControlError
    try:
        check_fresh(cmd, NOW, 300.0, row.commands, row.commands_floor)
        raise AssertionError("a replayed command passed")
    except with_replay:
        pass
    Row.model_validate(row.model_dump(mode="json"))
    ControlRecord(command=cmd, applied=True, timestamp=NOW).to_json()
    return "applied:" + cmd.action.value


TARGETS: dict[str, tuple[Callable[[Any], str], st.SearchStrategy]] = {
    "outbox": (outbox_target, outbox_raw()),
    "compose": (compose_target, outbox_docs()),
    # a uniform choice of kind (one_of leans to the hostile branches here)
    "address": (address_target, st.sampled_from([
        _good_addresses, addresses, st.builds(lambda lp, d: f"{lp}@{d}", st.one_of(
            st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_-]{1,10}){0,2}",
                          fullmatch=True),
            st.text(st.characters(min_codepoint=0xA1, max_codepoint=0x2FFF, exclude_categories=(
                "Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")), min_size=1, max_size=10)),
            st.one_of(_domain, st.from_regex(
                r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\.(com|example|de|co\.uk|xn--p1ai)",
                fullmatch=True)))]).flatmap(lambda s: s)),
    "control": (control_target, control_raw()),
}
