"""The router's outbox decoding (``streams.router._loads``): pydantic's JSON parser, with
``json.loads`` for whatever that refuses, must read every record as ``json.loads`` does."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.router import _loads


def _outcome(f, raw: bytes) -> tuple[str, str]:
    try:
        return "value", repr(f(raw))  # repr: NaN equals itself, -0.0 differs from 0.0
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        return "error", type(e).__name__


_TEXT = st.text(st.characters(codec=None, exclude_categories=()))  # surrogates included
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(_JSON, st.booleans())
def test_json_documents_read_as_json_loads_reads_them(doc: object, ascii_only: bool) -> None:
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert _outcome(_loads, raw) == _outcome(json.loads, raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64) | st.text(alphabet='{}[]",:0123456789.eE+-\\udtrfalsn ',
                                        max_size=40).map(str.encode))
def test_any_bytes_read_or_refused_as_json_loads_does(raw: bytes) -> None:
    assert _outcome(_loads, raw) == _outcome(json.loads, raw)


@pytest.mark.parametrize("raw", [
    b'"\\ud800"', b'{"\\udc00": 1}', b'\xef\xbb\xbf{"a": 1}', b"[" * 3000 + b"]" * 3000,
    b'"\xff"', b'{"a": 1, "a": 2}', b"NaN", b"-Infinity", b"1e400", b'{"a": 1} x',
    "\ufeff{}".encode("utf-16"), b"123456789012345678901234567890",
])
def test_texts_the_rust_parser_refuses_or_reads_alike(raw: bytes) -> None:
    """A lone surrogate escape, a BOM, UTF-16, deep nesting: refused by pydantic's parser,
    read (or refused) by ``json.loads`` as before."""
    assert _outcome(_loads, raw) == _outcome(json.loads, raw)
