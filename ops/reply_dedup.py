"""Find replies that another corpus part already holds, up to addresses, URLs, numbers and codes.

A new held-out part must be made of replies nobody has read: a reply that differs from one of
another part only in its addresses, host names in URLs, queue ids, IPs or counts, or in its
enhanced status code, is the same reply for the classifier's wording rules and is dropped.

    python -m ops.reply_dedup tests/data/replies/new.jsonl     # prints the kept records' count
    python -m ops.reply_dedup new.jsonl --write kept.jsonl      # writes the records kept
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["mask", "reply_key", "split_new"]

_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.I)
_ADDR = re.compile(r"<?[\w.+*%=-]*@[\w.-]+>?")
_ENHANCED = re.compile(r"(?<![\d.])[245]\.\d{1,3}\.\d{1,3}(?![\d.])")
_NUMBER = re.compile(r"\d+")
_NOISE = re.compile(r"[^\w<>#]+")


def mask(text: str) -> str:
    """The reply text with URLs, addresses, enhanced codes and numbers replaced by placeholders,
    lower-cased, with punctuation and spacing collapsed."""
    t = _URL.sub(" URL ", text)
    t = _ADDR.sub(" ADDR ", t)
    t = _ENHANCED.sub(" ESC ", t)
    t = _NUMBER.sub("N", t)
    return " ".join(_NOISE.sub(" ", t.lower()).split())


def reply_key(record: dict[str, Any]) -> tuple[int, str]:
    """What two records share when they are the same reply: the basic code and the masked text."""
    return int(record.get("code") or 0), mask(record["text"])


def split_new(
    records: Iterable[dict[str, Any]], others: Iterable[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped): a record is dropped when its key is in ``others`` or earlier on."""
    seen = {reply_key(r) for r in others}
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for r in records:
        k = reply_key(r)
        (dropped if k in seen else kept).append(r)
        seen.add(k)
    return kept, dropped


def main(argv: Sequence[str] | None = None) -> int:
    """Check a candidate part against every other part of tests/data/replies/."""
    from ops.classify_eval import CORPUS, load_corpus

    parser = argparse.ArgumentParser(prog="reply-dedup", description=__doc__)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--write", type=Path, help="write the kept records here")
    args = parser.parse_args(argv)
    others = [
        r
        for p in sorted(CORPUS.glob("*.jsonl"))
        if p.resolve() != args.candidate.resolve()
        for r in load_corpus(p)
    ]
    kept, dropped = split_new(load_corpus(args.candidate), others)
    for r in dropped:
        print(f"drop {r.get('code')} {r['text'][:100]}", file=sys.stderr)
    print(f"kept {len(kept)}, dropped {len(dropped)}")
    if args.write:
        with args.write.open("w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
