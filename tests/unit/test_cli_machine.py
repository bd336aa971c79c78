"""Machine-readable CLI: every command that prints a table also prints JSON with ``--json``,
the exit codes documented in docs/operations/cli.md, and ``kmta send``'s progress (tqdm)."""
from __future__ import annotations

import argparse
import io
import json
import logging
import re
from pathlib import Path

import pytest

from kmta.cli import build_parser, main
from kmta.client import Progress

ROOT = Path(__file__).resolve().parents[2]

# commands whose output is a table (or a list of records): each takes --json
TABLES = {"status", "rules show", "classify", "dkim check", "suppression list", "kafka status",
          "send", "results", "ip warmup"}
# the rest print a line or two, a file's content, or run a process until stopped
NO_TABLE = {"kafka start", "kafka stop", "worker", "sender", "topics", "demo", "isp-sim",
            "rules check", "pause", "resume", "unlock", "clear", "rules-set", "rules-reset",
            "dkim keygen", "dashboard", "inbound", "unsubscribe", "suppression add",
            "suppression remove", "suppression export", "suppression import"}


def leaf_commands() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[" ".join(path)] = p
        for a in subs:
            for name, child in a.choices.items():
                walk(child, [*path, name])

    walk(build_parser(), [])
    return out


def test_every_table_has_json() -> None:
    leaves = leaf_commands()
    # a new command must be sorted into one of the two sets
    assert set(leaves) == TABLES | NO_TABLE, set(leaves) ^ (TABLES | NO_TABLE)
    for name in TABLES:
        assert "--json" in leaves[name]._option_string_actions, name


def test_exit_codes_documented() -> None:
    doc = (ROOT / "docs" / "operations" / "cli.md").read_text()
    table = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", doc, re.M))
    assert set(table) == {"0", "1", "2", "3", "130", "141"}, table


def test_kafka_status_json_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kafka", "status", "--data-dir", str(tmp_path), "--json"]) == 3
    assert json.loads(capsys.readouterr().out) == {"data_dir": str(tmp_path), "nodes": []}
    assert main(["kafka", "status", "--data-dir", str(tmp_path)]) == 3
    assert capsys.readouterr().out.startswith("no cluster in")


def test_dkim_check_json_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dkim", "check", "--json"]) == 1  # no [[domains]]: nothing is checked
    assert json.loads(capsys.readouterr().out) == []
    cfg = tmp_path / "kmta.toml"  # a key file that is not there: a problem of a signing key
    cfg.write_text('[delivery]\nunsigned = "allow"\n[[domains]]\nname = "example.org"\n'
                   '[[domains.dkim]]\nselector = "s1"\nkey_file = "missing.pem"\n'
                   '[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = 0.2\n')
    assert main(["--config", str(cfg), "dkim", "check", "--json"]) == 1
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["verdict"], row["problem"]) == (
        "s1._domainkey.example.org", "key-error", True)


def test_usage_and_config_errors_exit_2(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["status", "--no-such-flag"])
    assert e.value.code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka]\nno_such_key = 1\n")
    assert main(["--config", str(bad), "status", "--json"]) == 2
    assert "no_such_key" in capsys.readouterr().err


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    out = Tty()
    bar = Progress(500, "sent", stream=out)
    for done in (100, 300):
        bar.update(done, "delivered=3")
    bar.close(500, "delivered=500")
    text = out.getvalue()
    assert "sent" in text and "500/500" in text and "delivered=500" in text
    assert "\r" in text  # redrawn in place


def test_progress_without_a_terminal_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    bar = Progress(10, "final", stream=out)
    bar.update(4, "delivered=4")
    with caplog.at_level(logging.INFO, logger="kmta.client"):
        bar.close(10, "delivered=10")
    assert out.getvalue() == ""
    [rec] = caplog.records
    msg = rec.getMessage()
    assert msg.startswith("final: 10/10 (") and msg.endswith("delivered=10")
