"""The rules editor's logic: parse a partial ISP rule (TOML or JSON), validate it, and show the
effective rule with ``kmta.policy.kb.KnowledgeBase`` (without one, validates the partial rule
against ``schemas.rules.IspRule`` only)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from typing import Any

from pydantic import ValidationError

from kmta.errors import ConfigError
from schemas.base import explain
from schemas.rules import IspRule

__all__ = ["effective_rule", "parse_rules_text", "to_jsonable", "validate_rules"]


def parse_rules_text(text: str | None) -> dict[str, Any]:
    """A JSON object (text starting with ``{``) or TOML; raise ConfigError with the reason."""
    text = (text or "").strip()
    if not text:
        raise ConfigError("the rule is empty: give a partial rule as TOML or JSON")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError("the rule must be a JSON object")
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"not valid TOML: {e}") from None
    if not data:
        raise ConfigError("the rule is empty: give at least one section, e.g. [speed]")
    return data


def validate_rules(isp: str, rules: dict[str, Any], kb: Any | None) -> None:
    """Raise ConfigError if ``rules`` is not a valid live edit for ``isp``."""
    if kb is not None:
        kb.validate_live(isp, rules)
        return
    try:
        IspRule.model_validate(rules)
    except ValidationError as e:
        raise ConfigError(explain(e, "rule")) from None


def effective_rule(isp: str, live: dict[str, Any] | None, kb: Any | None) -> Any | None:
    """The rule the brain would use for ``isp`` with ``live`` edits, as plain data."""
    if kb is None:
        return None
    return to_jsonable(kb.effective(isp, live))


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data from pydantic models, dataclasses (fields shown in repr), containers."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True, by_alias=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.repr
        }
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj
