"""Operator commands: build, sign, verify and parse ``ControlCommand`` records (pure, no I/O).

A command is signed with HMAC-SHA256 over its canonical JSON without ``signature``: the
``model_dump(mode="json", exclude_none=True, by_alias=True)`` dict, dumped with sorted keys and
compact separators. When a secret is configured, workers apply only commands that verify.

A signed command can be copied from the topic and written again; so a worker also applies a
command only while its ``timestamp`` is within ``control.max_age`` of the worker's clock, and
only once: :func:`check_fresh` refuses an id seen before, and :func:`remember` keeps the seen
ids of the window (bounded: past ``cap`` ids the oldest go, and every command not newer than
the ones that went is refused, so forgetting never lets a replay through).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any

from pydantic import ValidationError

from kmta.errors import KmtaError
from schemas.base import explain
from schemas.control import ControlAction, ControlCommand

__all__ = [
    "SEEN_CAP",
    "ControlError",
    "canonical",
    "check_fresh",
    "make_command",
    "parse_command",
    "remember",
    "sign",
    "verify",
]

SEEN_CAP = 1000  # command ids remembered per ISP


class ControlError(KmtaError):
    """A control command is malformed, unsigned or wrongly signed; the message says which.

    ``command`` is the decoded command when only its signature was wrong, so the audit record
    can say who asked for what."""

    def __init__(self, message: str, command: ControlCommand | None = None) -> None:
        super().__init__(message)
        self.command = command


def _secret_bytes(secret: Any) -> bytes | None:
    # Accepts a str or a pydantic SecretStr so callers can pass config.control.secret as is.
    if secret is None:
        return None
    if hasattr(secret, "get_secret_value"):
        secret = secret.get_secret_value()
    return secret.encode() if secret else None


def canonical(cmd: ControlCommand) -> bytes:
    """The bytes that are signed: the command without ``signature``, sorted keys, compact."""
    data = cmd.model_dump(mode="json", exclude_none=True, by_alias=True)
    data.pop("signature", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sign(cmd: ControlCommand, secret: Any) -> str:
    """Hex HMAC-SHA256 of :func:`canonical` under ``secret``."""
    key = _secret_bytes(secret)
    if key is None:
        raise ControlError("no secret to sign with")
    return hmac.new(key, canonical(cmd), hashlib.sha256).hexdigest()


def make_command(
    action: ControlAction | str,
    isp: str,
    actor: str,
    *,
    source_ip: str | None = None,
    pool: str | None = None,
    rules: dict[str, Any] | None = None,
    reason: str | None = None,
    now: float,
    secret: Any = None,
    hold: str | None = None,
) -> ControlCommand:
    """A new command with a fresh uuid id, signed when ``secret`` is given.

    Raises :class:`ControlError` if the fields do not make a valid command (e.g. set_rules
    without rules)."""
    try:
        cmd = ControlCommand(
            id=uuid.uuid4().hex,
            action=ControlAction(action),
            isp=isp,
            source_ip=source_ip or None,
            pool=pool or None,
            rules=rules,
            actor=actor,
            reason=reason or None,
            hold=hold or None,
            timestamp=now,
        )
    except (ValidationError, ValueError) as e:
        raise ControlError(f"invalid command: {_explain(e)}") from None
    _check_source_ip(cmd, "invalid command")
    _check_scope(cmd, "invalid command")
    if _secret_bytes(secret) is not None:
        cmd = cmd.model_copy(update={"signature": sign(cmd, secret)})
    return cmd


def verify(cmd: ControlCommand, secret: Any) -> None:
    """Raise :class:`ControlError` unless ``cmd`` carries a valid signature.

    Without a configured secret every command passes (the local demo)."""
    if _secret_bytes(secret) is None:
        return
    if not cmd.signature:
        raise ControlError("unsigned command")
    if not hmac.compare_digest(cmd.signature, sign(cmd, secret)):
        raise ControlError("bad signature")


def parse_command(raw: bytes | str | None, secret: Any) -> ControlCommand:
    """Decode and verify one record of the control topic, or raise :class:`ControlError`
    with the reason. A command is either valid as a whole or rejected as a whole."""
    if raw is None:
        raise ControlError("malformed command: empty record")
    if isinstance(raw, (bytes, bytearray)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ControlError("malformed command: not UTF-8") from None
    else:
        text = raw
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ControlError(f"malformed command: not JSON ({e.msg} at {e.pos})") from None
    except RecursionError:
        raise ControlError("malformed command: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ControlError("malformed command: expected a JSON object")
    try:
        cmd = ControlCommand.model_validate(data)
    except ValidationError as e:
        raise ControlError(f"malformed command: {_explain(e)}") from None
    _check_source_ip(cmd, "malformed command")
    _check_scope(cmd, "malformed command")
    try:
        verify(cmd, secret)
    except ControlError as e:
        raise ControlError(str(e), command=cmd) from None
    return cmd


def check_fresh(cmd: ControlCommand, now: float, max_age: float, seen: Mapping[str, float],
                floor: float = 0.0) -> None:
    """Raise :class:`ControlError` (with ``command``) unless ``cmd`` may be applied at ``now``:
    its timestamp within ``max_age`` seconds of ``now`` (either way: clocks differ), newer than
    ``floor`` and its id not in ``seen`` (id -> timestamp, see :func:`remember`)."""
    age = now - cmd.timestamp
    if not -max_age <= age <= max_age:  # also refuses NaN
        raise ControlError(
            f"stale command: its timestamp is {age:+.0f}s from the worker's clock; commands "
            f"apply within {max_age:g}s (control.max_age)", command=cmd)
    if cmd.id in seen:
        raise ControlError(f"replayed command: id {cmd.id} was applied already", command=cmd)
    if cmd.timestamp <= floor:
        raise ControlError("stale command: older than the commands this worker remembers",
                           command=cmd)


def remember(seen: MutableMapping[str, float], cmd: ControlCommand, now: float, max_age: float,
             floor: float = 0.0, cap: int = SEEN_CAP) -> float:
    """Note ``cmd`` as applied in ``seen`` and forget ids that left the window; returns the new
    floor (raised to the newest timestamp that had to go when more than ``cap`` remain)."""
    seen[cmd.id] = cmd.timestamp
    for cid, ts in list(seen.items()):
        if ts < now - max_age:
            del seen[cid]
    if len(seen) > cap:
        for cid, ts in sorted(seen.items(), key=lambda kv: kv[1])[:len(seen) - cap]:
            floor = max(floor, ts)
            del seen[cid]
    return floor


def _check_source_ip(cmd: ControlCommand, what: str) -> None:
    # a typo must not pause or unlock a scope that no sender ever uses
    if cmd.source_ip is None:
        return
    try:
        ipaddress.ip_address(cmd.source_ip)
    except ValueError:
        raise ControlError(f"{what}: source_ip: {cmd.source_ip!r} is not an IP address") from None


def _check_scope(cmd: ControlCommand, what: str) -> None:
    if cmd.source_ip and cmd.pool:
        raise ControlError(f"{what}: give source_ip or pool, not both")
    if cmd.action is ControlAction.CLEAR and (cmd.source_ip or cmd.pool):
        # messages are not bound to a source IP until one sends them: a clear is per ISP
        raise ControlError(
            f"{what}: clear applies to a whole ISP, not a "
            + ("source IP" if cmd.source_ip else "pool"))
    if cmd.action in (ControlAction.SET_RULES, ControlAction.RESET_RULES) and (
            cmd.source_ip or cmd.pool):
        raise ControlError(f"{what}: rule edits apply to a whole ISP (narrow them per pool "
                           "with a pools table in the rules)")


def _explain(e: Exception) -> str:
    return explain(e, "command")
