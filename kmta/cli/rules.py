"""``kmta rules check [FILE]`` and ``kmta rules show ISP``: validate and inspect the ISP rules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from kmta.errors import ConfigError
from kmta.policy.kb import KnowledgeBase, RulesError

__all__ = ["add_parser", "run"]

EXIT_INVALID = 1


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``rules`` and its sub-commands; the handler is stored as ``func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rules",
        help="check or show the ISP rules (knowledge base)",
        description=(
            "The shipped ISP knowledge base (kmta/data/isps.toml) merged with a local override "
            "file. 'check' validates; 'show' prints what applies to one ISP after merging."
        ),
    )
    actions = parser.add_subparsers(dest="rules_action", required=True, metavar="{check,show}")
    check = actions.add_parser(
        "check",
        help="validate an override file merged over the shipped rules (or the shipped file)",
        description="Exit 0 and print 'ok: N ISPs', or exit 1 and print each problem on its "
                    "own line.",
    )
    check.add_argument(
        "file",
        nargs="?",
        type=Path,
        default=None,
        help="override file (default: check the shipped file alone)",
    )
    check.add_argument("--shipped", type=Path, default=None, help=argparse.SUPPRESS)
    show = actions.add_parser("show", help="print the effective rule of one ISP (or domain)")
    show.add_argument("isp", help="ISP name (e.g. gmail) or a member domain (e.g. hotmail.com)")
    show.add_argument("--override", type=Path, default=None, help="override file to merge")
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.add_argument("--pool", default=None,
                      help="narrowed for this source-IP pool (its pools.<name> tables)")
    show.add_argument("--shipped", type=Path, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Execute a parsed ``kmta rules`` command; return the process exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    override = args.file if args.rules_action == "check" else args.override
    try:
        kb = KnowledgeBase.load(shipped=args.shipped, override=override)
    except RulesError as e:
        for problem in e.problems:
            print(problem, file=err)
        return EXIT_INVALID
    except ConfigError as e:
        print(str(e), file=err)
        return EXIT_INVALID
    if args.rules_action == "check":
        print(f"ok: {len(kb.isp_names())} ISPs", file=out)
        return 0
    isp = args.isp if args.isp in kb.isp_names() else kb.isp_for(args.isp, [])
    data = kb.effective(isp, pool=args.pool).to_dict()
    if args.pool:
        data = {"pool": args.pool, **data}
    if isp not in kb.isp_names():
        print(f"# {args.isp} is no known ISP: [default] applies", file=err)
    print(_render(data, as_json=args.json), file=out)
    return 0


def _render(data: dict[str, Any], *, as_json: bool) -> str:
    if not as_json:
        try:
            import tomli_w  # type: ignore[import-not-found, unused-ignore]
        except ImportError:  # an optional nicety; JSON says the same
            as_json = True
        else:
            return str(tomli_w.dumps(data)).rstrip()
    return json.dumps(data, indent=2, ensure_ascii=False)
