"""``kmta classify``: what kmta makes of an SMTP reply, and why.

Reads replies from the arguments or, without any, from stdin, one per line: a plain reply
(``550 5.1.1 The email account that you tried to reach does not exist``) or a JSON object
``{"code": 550, "text": "...", "isp": "gmail", "domain": "gmail.com"}`` (isp and domain optional;
they choose the ISP's reply rules). Each is judged exactly as the sender judges it (classifier,
the ISP's reply rules, bounce or defer, suppression).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from kmta.errors import ConfigError
from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase
from kmta.policy.reply import Reply
from kmta.policy.verdict import explain

__all__ = ["add_parser", "classify_lines", "parse_line", "run"]

EXIT_BAD_INPUT = 1
_COLUMNS = ("code", "enhanced", "isp", "category", "verdict", "suppress", "action", "rule", "text")


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``classify``; the handler is stored as ``func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "classify",
        help="explain what kmta does with an SMTP reply (category, bounce/defer, suppression)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("reply", nargs="*", help="replies (default: read lines from stdin)")
    parser.add_argument("--isp", help="judge with this ISP's reply rules (default: [default])")
    parser.add_argument("--domain", help="judge with the rules of this recipient domain's ISP")
    parser.add_argument("--json", action="store_true", help="one JSON object per reply")
    parser.add_argument(
        "--override",
        type=Path,
        default=None,
        help="local rules file merged over the shipped one "
        "(default: the config's [rules] override)",
    )
    parser.set_defaults(func=run)
    return parser


def parse_line(line: str) -> tuple[Reply, str | None, str | None]:
    """One input line as (reply, isp, domain); raises ValueError for a bad JSON line."""
    text = line.strip()
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("text", ""), str):
            raise ValueError("a JSON reply is an object with 'code' and 'text'")
        code = data.get("code")
        if code is not None and not (isinstance(code, int) and 200 <= code <= 599):
            raise ValueError(f"bad reply code {code!r}")
        return (
            Reply.parse(code, data.get("text", "")),
            data.get("isp") or None,
            data.get("domain") or None,
        )
    if text.lower().startswith("smtp;"):
        text = text[5:].lstrip()
    return Reply.parse(None, text), None, None


def classify_lines(
    lines: Iterable[str],
    classifier: Classifier,
    kb: KnowledgeBase,
    isp: str | None = None,
    domain: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Judge each non-empty line; a line that cannot be read yields ``{"error": ...}``."""
    for line in lines:
        if not line.strip():
            continue
        try:
            reply, line_isp, line_domain = parse_line(line)
        except ValueError as e:
            yield {"error": str(e), "input": line.strip()[:200]}
            continue
        name, v = explain(reply, classifier, kb, line_isp or isp, line_domain or domain)
        yield {
            **{
                k: v.to_dict()[k]
                for k in ("category", "verdict", "suppress", "action", "rule", "source")
            },
            **v.to_dict(),
            "isp": name or "[default]",
            "code": reply.code,
            "enhanced": reply.enhanced_code,
            "text": reply.text,
        }


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Execute a parsed ``kmta classify``; exit 1 if any input line could not be read."""
    out, err = out or sys.stdout, err or sys.stderr
    override = args.override
    config = getattr(args, "config_obj", None)
    if override is None and config is not None and config.rules.override:
        override = Path(config.rules.override)
    try:
        kb, classifier = KnowledgeBase.load(override=override), Classifier.load()
    except ConfigError as e:
        print(str(e), file=err)
        return EXIT_BAD_INPUT
    lines = args.reply or (stdin or sys.stdin)
    results = list(classify_lines(lines, classifier, kb, args.isp, args.domain))
    if args.json:
        for r in results:
            print(json.dumps(r, ensure_ascii=False), file=out)
    else:
        print(_table(results), file=out)
    return EXIT_BAD_INPUT if any("error" in r for r in results) else 0


def _cell(r: dict[str, Any], key: str) -> str:
    value = r.get(key)
    if key == "suppress":
        return "yes" if value else "no"
    if key == "text":
        return str(value or "")[:70]
    if key == "rule" and value is None and r.get("classifier_rule"):
        return f"({r['classifier_rule']})"  # no ISP rule: the classifier rule that decided
    return "-" if value is None else str(value)


def _table(results: list[dict[str, Any]]) -> str:
    rows = [
        [_cell(r, k) for k in _COLUMNS]
        if "error" not in r
        else ["!", "", "", "error: " + r["error"], "", "", "", "", r["input"][:70]]
        for r in results
    ]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(_COLUMNS, widths, strict=False)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
              for row in rows]
    return "\n".join(lines)
