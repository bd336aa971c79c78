"""``kmta classify``: arguments, stdin (plain and JSON lines), --json and table output."""

from __future__ import annotations

import io
import json

from kmta.cli import build_parser
from kmta.cli.classify import parse_line, run


def _run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    args = build_parser().parse_args(["classify", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = run(args, out=out, stdin=io.StringIO(stdin), err=err)
    return code, out.getvalue(), err.getvalue()


def test_arguments_to_json_lines() -> None:
    code, out, _ = _run(
        [
            "--json",
            "550 5.1.1 The email account that you tried to reach does not exist",
            "552 5.5.3 Too many recipients",
        ]
    )
    assert code == 0
    first, second = (json.loads(line) for line in out.splitlines())
    assert list(first)[:6] == ["category", "verdict", "suppress", "action", "rule", "source"]
    assert (first["category"], first["verdict"], first["suppress"]) == (
        "bad_mailbox",
        "bounce",
        True,
    )
    assert (second["category"], second["verdict"], second["suppress"]) == (
        "rate_limit",
        "defer",
        False,
    )
    assert first["action"] == "none" and first["rule"] is None
    assert first["source"] == "kmta/data/bounces.toml: user_unknown"


def test_stdin_json_lines_use_the_isp_rules() -> None:
    stdin = "\n".join(
        [
            json.dumps({"code": 550, "text": "Ip frequency limited", "isp": "qq"}),
            json.dumps({"code": 554, "text": "HL:ITC 163 mx42", "domain": "163.com"}),
            "",
            "smtp;550 5.1.8 Sender address rejected: Domain not found",
        ]
    )
    code, out, _ = _run(["--json"], stdin)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3
    assert rows[0]["rule"] == "qq_frequency_limited" and rows[0]["action"] == "lock"
    assert rows[0]["verdict"] == "defer" and rows[0]["source"]
    assert rows[1]["isp"] == "netease" and rows[1]["verdict"] == "defer"
    assert rows[2]["category"] == "bad_sender" and rows[2]["suppress"] is False


def test_table_and_bad_input() -> None:
    code, out, _ = _run(
        [], '550 5.2.1 The email account that you tried to reach is disabled\n{"code": "x"\n'
    )
    lines = out.splitlines()
    assert code == 1
    assert lines[0].split()[:4] == ["CODE", "ENHANCED", "ISP", "CATEGORY"]
    assert "inactive_mailbox" in lines[1] and " no " in lines[1]
    assert lines[2].startswith("!") and "error" in lines[2]


def test_isp_option_and_plain_line_parsing() -> None:
    reply, isp, domain = parse_line(
        "421-4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred"
    )
    assert (reply.code, reply.enhanced_code, isp, domain) == (421, "4.7.0", None, None)
    code, out, _ = _run(
        [
            "--json",
            "--isp",
            "yahoo",
            "421 4.7.0 [TSS04] Messages from 203.0.113.5 "
            "temporarily deferred due to user complaints",
        ]
    )
    row = json.loads(out)
    assert code == 0 and row["isp"] == "yahoo" and row["rule"] == "yahoo_tss04"
