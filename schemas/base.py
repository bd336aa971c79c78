"""Shared base model, and the one way a validation error is told to a person."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Model", "explain"]


class Model(BaseModel):
    """Strict base: unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


def explain(e: Exception, whole: str = "value") -> str:
    """``"loc: msg; loc: msg"`` for a pydantic ValidationError (``whole`` names an error of the
    whole value, whose location is empty); other errors as they print."""
    if not isinstance(e, ValidationError):
        return str(e)
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or whole}: {err['msg']}"
                     for err in e.errors())
