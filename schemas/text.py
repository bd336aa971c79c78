"""Checks on decoded JSON that every input model runs: lone surrogates and nesting depth.

``json.loads`` accepts ``"\\ud800"`` (a lone UTF-16 surrogate) and arrays nested as deep as the
interpreter's stack; both pass pydantic's ``str``/``Any`` and fail much later, far from the input,
when the text is encoded (``UnicodeEncodeError``) or dumped (``RecursionError``). These checks make
them a plain validation error at the edge. Iterative, so they never recurse themselves.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MAX_DEPTH", "check_tree", "has_surrogate"]

MAX_DEPTH = 32  # levels of objects/arrays allowed inside one field (meta, rules)


def has_surrogate(s: str) -> bool:
    """True when ``s`` holds a lone surrogate (not encodable as UTF-8)."""
    if s.isascii():
        return False
    # UTF-8's strict encoder refuses exactly the surrogates: ~40 us for 100 KB of text where
    # a regex search took ~0.9 ms (every input string is checked, a body twice)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_tree(value: Any, max_depth: int = MAX_DEPTH, what: str = "value") -> None:
    """Raise ``ValueError`` when ``value`` (decoded JSON) nests objects/arrays deeper than
    ``max_depth`` or holds a string (key or value) with a lone surrogate."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if has_surrogate(v):
                raise ValueError(f"{what} contains a lone surrogate (not valid Unicode text)")
        elif isinstance(v, (dict, list, tuple)):
            if depth >= max_depth:
                raise ValueError(f"{what} is nested more than {max_depth} levels deep")
            if isinstance(v, dict):
                for k, x in v.items():
                    stack.append((k, depth + 1))
                    stack.append((x, depth + 1))
            else:
                stack.extend((x, depth + 1) for x in v)
