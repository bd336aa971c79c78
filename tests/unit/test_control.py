"""Signing, verifying and parsing operator commands (kmta.pipeline.control)."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from kmta.errors import KmtaError
from kmta.pipeline.control import (
    ControlError,
    canonical,
    check_fresh,
    make_command,
    parse_command,
    remember,
    verify,
)
from schemas.control import ControlAction

SECRET = "s3cret"
NOW = 1_700_000_000.0


def test_unsigned_without_secret_passes() -> None:
    cmd = make_command("pause", "gmail", "alice", now=NOW, secret=None)
    assert cmd.signature is None
    assert cmd.action is ControlAction.PAUSE and cmd.isp == "gmail" and cmd.actor == "alice"
    assert cmd.timestamp == NOW and len(cmd.id) == 32
    verify(cmd, None)
    assert parse_command(cmd.to_json(), None) == cmd


def test_ids_are_unique() -> None:
    ids = {make_command("resume", "gmail", "a", now=NOW, secret=None).id for _ in range(100)}
    assert len(ids) == 100


def test_signed_roundtrip_and_secretstr() -> None:
    cmd = make_command(
        ControlAction.SET_RULES,
        "yahoo",
        "bob",
        rules={"speed": {"max": 5}},
        reason="test",
        now=NOW,
        secret=SECRET,
    )
    assert cmd.signature and len(cmd.signature) == 64
    verify(cmd, SECRET)
    verify(cmd, SecretStr(SECRET))
    assert parse_command(cmd.to_json(), SecretStr(SECRET)) == cmd
    for scope in ({"source_ip": "192.0.2.1"}, {"pool": "warmup"}):
        scoped = make_command(ControlAction.PAUSE, "yahoo", "bob", now=NOW, secret=SECRET,
                              **scope)
        assert parse_command(scoped.to_json(), SecretStr(SECRET)) == scoped
        # the scope is signed: moving a signed pause to another scope breaks the signature
        other = scoped.model_copy(update={"pool": "main", "source_ip": None})
        with pytest.raises(ControlError, match="bad signature"):
            parse_command(other.to_json(), SECRET)


@pytest.mark.parametrize(("fields", "error"), [
    ({"action": "pause", "source_ip": "192.0.2.1", "pool": "warmup"}, "not both"),
    ({"action": "clear", "pool": "warmup"}, "clear applies to a whole ISP, not a pool"),
    ({"action": "set_rules", "rules": {"speed": {"max": 5}}, "source_ip": "192.0.2.1"},
     "rule edits apply to a whole ISP"),
    ({"action": "reset_rules", "pool": "warmup"}, "rule edits apply to a whole ISP"),
])
def test_scope_mistakes_are_refused_on_both_ends(fields: dict, error: str) -> None:
    action = fields.pop("action")
    with pytest.raises(ControlError, match=error):
        make_command(action, "yahoo", "bob", now=NOW, **fields)
    raw = {"id": "x1", "action": action, "isp": "yahoo", "actor": "bob", "timestamp": NOW,
           **fields}
    with pytest.raises(ControlError, match=error):
        parse_command(json.dumps(raw), None)


def test_canonical_is_sorted_compact_without_signature() -> None:
    cmd = make_command("unlock", "gmail", "a", now=NOW, secret=SECRET)
    text = canonical(cmd).decode()
    data = json.loads(text)
    assert "signature" not in data and "source_ip" not in data  # None fields excluded
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"))


def test_unsigned_refused_when_secret_configured() -> None:
    cmd = make_command("pause", "gmail", "a", now=NOW, secret=None)
    with pytest.raises(ControlError, match="unsigned command"):
        verify(cmd, SECRET)
    with pytest.raises(KmtaError):
        parse_command(cmd.to_json(), SECRET)


def test_wrong_secret_is_bad_signature() -> None:
    cmd = make_command("pause", "gmail", "a", now=NOW, secret="other")
    with pytest.raises(ControlError, match="bad signature"):
        verify(cmd, SECRET)


@pytest.mark.parametrize(
    "field,value",
    [
        ("isp", "yahoo"),
        ("action", "clear"),
        ("actor", "mallory"),
        ("timestamp", NOW + 1),
        ("source_ip", "192.0.2.9"),
    ],
)
def test_tampered_field_is_bad_signature(field: str, value: object) -> None:
    cmd = make_command("pause", "gmail", "a", now=NOW, secret=SECRET)
    data = json.loads(cmd.to_json())
    data[field] = value
    with pytest.raises(ControlError, match="bad signature"):
        parse_command(json.dumps(data).encode(), SECRET)


def test_tampered_rules_is_bad_signature() -> None:
    cmd = make_command(
        "set_rules", "gmail", "a", rules={"speed": {"max": 5}}, now=NOW, secret=SECRET
    )
    data = json.loads(cmd.to_json())
    data["rules"]["speed"]["max"] = 5000
    with pytest.raises(ControlError, match="bad signature"):
        parse_command(json.dumps(data), SECRET)


def test_key_order_does_not_matter() -> None:
    cmd = make_command("pause", "gmail", "a", now=NOW, secret=SECRET)
    data = json.loads(cmd.to_json())
    reordered = json.dumps(dict(reversed(list(data.items()))), indent=2)
    assert parse_command(reordered, SECRET) == cmd


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"id": "x", "action": "explode", "isp": "g", "actor": "a", "timestamp": 1}', "action"),
        (b'{"id": "x", "action": "pause", "actor": "a", "timestamp": 1}', "isp"),
        (
            b'{"id": "x", "action": "set_rules", "isp": "g", "actor": "a", "timestamp": 1}',
            "set_rules needs rules",
        ),
        (
            b'{"id": "x", "action": "pause", "isp": "g", "actor": "a", "timestamp": 1, "rules": {"a": 1}}',
            "takes no rules",
        ),
        (
            b'{"id": "x", "action": "pause", "isp": "g", "actor": "a", "timestamp": 1, "extra": 1}',
            "extra",
        ),
        # records that crashed the obey agent before the signature was looked at
        (None, "empty record"),
        (b"", "not JSON"),
        (b"null", "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (('{"id": "x", "action": "pause", "isp": "g", "actor": "a", "timestamp": 1, '
          '"signature": "' + "é" * 64 + '"}').encode(), "signature"),
        (b'{"id": "x", "action": "set_rules", "isp": "g", "actor": "a", "timestamp": 1, '
         b'"rules": ' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}", "nested more than 32"),
        (b'{"id": "x", "action": "pause", "isp": "g", "actor": "a", "timestamp": 1, '
         b'"reason": "\\ud800"}', "reason"),
    ],
)
def test_malformed_gives_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ControlError, match="malformed command") as e:
        parse_command(raw, None)
    assert reason in str(e.value)


def test_fresh_commands_apply_once() -> None:
    cmd = make_command("pause", "gmail", "ops", now=NOW, secret=SECRET)
    seen: dict[str, float] = {}
    check_fresh(cmd, NOW + 299, 300, seen)
    floor = remember(seen, cmd, NOW + 299, 300)
    assert seen == {cmd.id: NOW} and floor == 0.0
    with pytest.raises(ControlError, match="replayed command") as e:
        check_fresh(cmd, NOW + 299, 300, seen, floor)
    assert e.value.command == cmd  # the audit record says what was replayed
    # a copy written again later is stale, whether or not its id is still remembered
    with pytest.raises(ControlError, match="stale command"):
        check_fresh(cmd, NOW + 301, 300, {}, 0.0)
    early = make_command("resume", "gmail", "ops", now=NOW + 301, secret=SECRET)
    with pytest.raises(ControlError, match="stale command"):  # from a clock far ahead
        check_fresh(early, NOW, 300, {})
    nan = cmd.model_copy(update={"timestamp": float("nan")})
    with pytest.raises(ControlError, match="stale command"):
        check_fresh(nan, NOW, 300, {})


def test_seen_ids_are_bounded_without_letting_a_replay_through() -> None:
    seen: dict[str, float] = {}
    floor = 0.0
    cmds = [make_command("pause", "gmail", "ops", now=NOW + i, secret=None) for i in range(30)]
    for c in cmds:
        check_fresh(c, NOW + 30, 300, seen, floor)
        floor = remember(seen, c, NOW + 30, 300, floor, cap=10)
    assert len(seen) == 10 and floor == NOW + 19
    for c in cmds:  # every one of them refused again: by its id or by the floor
        with pytest.raises(ControlError, match=r"replayed|stale"):
            check_fresh(c, NOW + 30, 300, seen, floor)
    # ids that left the window are forgotten (their commands are stale by then)
    floor = remember(seen, make_command("resume", "gmail", "o", now=NOW + 400, secret=None),
                     NOW + 400, 300, floor, cap=10)
    assert len(seen) == 1


def test_make_command_invalid_fields() -> None:
    with pytest.raises(ControlError, match="set_rules needs rules"):
        make_command("set_rules", "gmail", "a", now=NOW, secret=None)
    with pytest.raises(ControlError, match="invalid command"):
        make_command("pause", "", "a", now=NOW, secret=None)
