"""Log lines of kmta's processes: plain text, or one JSON object per line for log pipelines
(``--log-format json`` or ``[log] format = "json"``).

Every line carries the process kind and node; the ISP and message id where the code knows them,
given either as ``extra={"isp": ..., "message_id": ...}`` on the call or bound for a stretch of
work with :func:`log_context` / :func:`bind` (context variables: each asyncio task keeps its
own). Every secret of the config (each ``SecretStr`` value) is masked in the written line,
whatever logged it: a library's debug line with a connection string, an exception's text.

JSON lines come from python-json-logger, a kept library: it already serialises a record's
``extra`` fields, exceptions and stack traces and escapes what needs escaping; what is ours is
only the field names and the masking.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, SecretStr
from pythonjsonlogger.json import JsonFormatter

__all__ = ["CONTEXT_FIELDS", "bind", "config_secrets", "configure", "log_context"]

CONTEXT_FIELDS = ("isp", "message_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "**********"  # what pydantic's SecretStr shows too

_fields: ContextVar[dict[str, str]] = ContextVar("kmta_log_fields")  # replaced, never mutated


def bind(**fields: str | None) -> None:
    """Add fields (``isp``, ``message_id``) to every line logged from here on in this context;
    undone when the enclosing :func:`log_context` ends."""
    _fields.set({**_fields.get({}), **{k: v for k, v in fields.items() if v is not None}})


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Fields for the lines logged inside the block (and what :func:`bind` adds there)."""
    token = _fields.set(_fields.get({}))
    try:
        bind(**fields)
        yield
    finally:
        _fields.reset(token)


def config_secrets(model: BaseModel) -> list[str]:
    """Every ``SecretStr`` value in a config model, at any depth."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, SecretStr):
            out.append(v.get_secret_value())
        elif isinstance(v, BaseModel):
            for name in type(v).model_fields:
                walk(getattr(v, name))
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(model)
    return out


class _Fields(logging.Filter):
    """Puts the process kind and node, and the bound context, on each record (a field given
    with ``extra=`` wins)."""

    def __init__(self, kind: str, node: str | None) -> None:
        super().__init__()
        self.static = {"kind": kind, "node": node}

    def filter(self, record: logging.LogRecord) -> bool:
        for k, v in (*self.static.items(), *_fields.get({}).items()):
            if not hasattr(record, k):
                setattr(record, k, v)
        return True


class _Masking(logging.Formatter):
    """Masks the secrets in what another formatter wrote (also their JSON-escaped forms)."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        forms = {f for s in secrets if len(s) >= 4
                 for f in (s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1])}
        self.secrets = sorted(forms, key=len, reverse=True)  # a longer one first

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for s in self.secrets:
            text = text.replace(s, MASK)
        return text


class _Json(JsonFormatter):
    """``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``kind``, ``node``, then
    ``isp``/``message_id`` and any other ``extra`` field of the call."""

    def __init__(self) -> None:
        super().__init__(["levelname", "name", "message", "kind", "node"],
                         rename_fields={"levelname": "level", "name": "logger"},
                         json_default=str, json_ensure_ascii=False)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a line is written."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(kind: str, node: str | None, fmt: str = "text", level: int = logging.INFO,
              secrets: Iterable[str] = (), stream: Any = None) -> logging.Handler:
    """The root logger of a process: one handler on stderr (or ``stream``), text or JSON
    lines, in place of the one an earlier call installed. Returns the handler."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    inner: logging.Formatter = _Json() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(_Masking(inner, secrets))
    handler.addFilter(_Fields(kind, node))
    handler.set_name("kmta")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "kmta":
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # a library's warning is a log line too (JSON in JSON mode)
    return handler
