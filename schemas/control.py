"""Operator commands (control topic) and their audit records (audit topic)."""
from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from schemas.base import Model
from schemas.suppression import SuppressionChange
from schemas.text import check_tree


class ControlAction(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    CLEAR = "clear"
    UNLOCK = "unlock"
    SET_RULES = "set_rules"
    RESET_RULES = "reset_rules"
    WARMUP_START = "warmup_start"  # a source IP is new from today: it follows the warm-up
    WARMUP_STOP = "warmup_stop"  # ... or no longer (also over the config's [[pools]] warmup)


# the ``isp`` of the warm-up commands: a source IP is new at every ISP
ALL_ISPS = "*"
WARMUP_ACTIONS = frozenset({ControlAction.WARMUP_START, ControlAction.WARMUP_STOP})


# ``ControlCommand._rules`` for JSON Schema users (kept equal by a unit test)
_RULES_RULE: dict[str, Any] = {
    "if": {"required": ["action"], "properties": {"action": {"const": "set_rules"}}},
    "then": {"required": ["rules"], "properties": {"rules": {"type": "object",
                                                             "minProperties": 1}}},
    "else": {"not": {"required": ["rules"], "properties": {"rules": {"not": {"type": "null"}}}}},
}


class ControlCommand(Model):
    """One operator action; keyed by ISP on the control topic."""

    model_config = ConfigDict(json_schema_extra=_RULES_RULE)

    id: str = Field(min_length=1, max_length=100)
    action: ControlAction
    isp: str = Field(min_length=1, max_length=253)
    source_ip: str | None = None
    pool: str | None = Field(default=None, min_length=1, max_length=100,
                             description="pause/resume/unlock only this source-IP pool")
    rules: dict[str, Any] | None = Field(default=None, description="set_rules: partial ISP rule")
    actor: str = Field(min_length=1, max_length=100, description="who asked")
    hold: str | None = Field(default=None, max_length=300, description="resume: release this "
                             "reputation hold ('campaign:<c>' or 'domain:<d>') instead of "
                             "the pause")
    reason: str | None = Field(default=None, max_length=500)
    timestamp: float
    signature: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="hex HMAC-SHA256 of the command without this field"
    )

    @field_validator("id", "isp", "source_ip", "pool", "rules", "actor", "reason")
    @classmethod
    def _text(cls, v: Any) -> Any:
        # lone surrogates and deep nesting are refused here, not when the audit record is written
        check_tree(v, what="the value")
        return v

    @model_validator(mode="after")
    def _rules(self) -> ControlCommand:
        if self.action is ControlAction.SET_RULES and not self.rules:
            raise ValueError("set_rules needs rules")
        if self.action is not ControlAction.SET_RULES and self.rules is not None:
            raise ValueError(f"{self.action.value} takes no rules")
        if self.action in WARMUP_ACTIONS and (self.isp != ALL_ISPS or not self.source_ip
                                              or self.pool):
            raise ValueError(f"{self.action.value} is for one source IP at every ISP "
                             f"(isp {ALL_ISPS!r}, source_ip set, no pool)")
        return self


class HoldChange(Model):
    """A reputation hold the brain placed (``op: hold``); releases are resume commands."""

    op: str = "hold"
    isp: str
    key: str = Field(description="'campaign:<c>' or 'domain:<d>'")
    reason: str


class ControlRecord(Model):
    """The audit trail: what was asked, by whom, and whether it was applied (a control
    command, a suppression change or a reputation pause)."""

    command: ControlCommand | None = None
    raw: str | None = None
    applied: bool
    error: str | None = None
    worker: str | None = None
    suppression: SuppressionChange | None = None
    hold: HoldChange | None = None
    timestamp: float
