"""``kmta rules check|show`` against the shipped files."""

from __future__ import annotations

import argparse
import io
import json

from kmta.cli import rules as rules_cli
from kmta.policy.kb import SHIPPED_ISPS


def _run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kmta")
    rules_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    return args.func(args, out=out, err=err), out.getvalue(), err.getvalue()


def test_check_shipped() -> None:
    import tomllib

    from kmta.policy.kb import SHIPPED_ISPS as SHIPPED

    isps = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))["isp"]
    code, out, _ = _run("rules", "check")
    assert code == 0 and out.strip() == f"ok: {len(isps)} ISPs" and len(isps) >= 28


def test_check_shipped_as_override_of_itself() -> None:
    code, out, _ = _run("rules", "check", str(SHIPPED_ISPS))
    assert code == 0 and out.startswith("ok: ")


def test_check_missing_file_fails_with_the_reason() -> None:
    code, out, err = _run("rules", "check", "/nonexistent/override.toml")
    assert code == 1 and out == ""
    assert err.strip() == "/nonexistent/override.toml: cannot read: No such file or directory"


def test_show_isp_as_json_and_toml() -> None:
    code, out, _ = _run("rules", "show", "gmail", "--json")
    data = json.loads(out)
    assert code == 0 and data["isp"] == "gmail" and data["sending"]["max_connections"] == 5
    code, out, _ = _run("rules", "show", "hotmail.com")  # a member domain resolves to its ISP
    assert code == 0 and 'isp = "outlook"' in out and "[[replies]]" in out


def test_show_unknown_domain_gets_default() -> None:
    code, out, err = _run("rules", "show", "example.com", "--json")
    assert code == 0 and json.loads(out)["partitions"] == 0 and "[default] applies" in err


def test_show_narrowed_for_a_pool(tmp_path) -> None:
    override = tmp_path / "local.toml"
    override.write_text('[default.pools.warm]\nspeed = { max = 20 }\n'
                        '[isp.gmail.pools.warm.sending]\nmax_connections = 2\n')
    code, out, _ = _run("rules", "show", "gmail", "--json", "--override", str(override),
                        "--pool", "warm")
    data = json.loads(out)
    assert code == 0 and data["pool"] == "warm"
    assert data["speed"]["max"] == 20 and data["sending"]["max_connections"] == 2
    code, out, _ = _run("rules", "show", "gmail", "--json", "--override", str(override))
    assert json.loads(out)["speed"].get("max") is None and "pool" not in json.loads(out)


def test_a_reader_that_goes_away_is_no_error() -> None:
    # ``kmta rules show gmail | head -1``: the pipe closes before kmta has written everything
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cmd = f"'{sys.executable}' -m kmta.cli rules show gmail | true"
    for _ in range(3):  # whether the pipe closes first depends on timing
        r = subprocess.run(["bash", "-c", f"{cmd}; echo $PIPESTATUS >&2"], cwd=root,
                           capture_output=True, text=True, timeout=60)
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1] in ("0", "141")
