"""Shared base model and JSON helpers."""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Strict base: unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str):  # noqa: ANN206 - returns cls
        return cls.model_validate_json(raw)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def loads(raw: bytes | str) -> Any:
    return json.loads(raw)
