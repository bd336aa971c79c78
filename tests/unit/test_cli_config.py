"""``--config PATH`` (and ``-v``) before or after the subcommand, for every subcommand at any
depth (``kmta kafka start``, ``kmta rules check`` ...), found by walking the real parser."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmta.cli import build_parser, main


def _subparsers(p: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]


def leaves(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command line prefix (``("kafka", "start")``) with its parser."""
    subs = _subparsers(p)
    if not subs:
        yield path, p
        return
    seen: set[int] = set()
    for action in subs:
        for name, child in action.choices.items():
            if id(child) not in seen:  # aliases share one parser
                seen.add(id(child))
                yield from leaves(child, (*path, name))


def required_args(p: argparse.ArgumentParser) -> list[str]:
    """Values for the leaf's positionals and required options, so that it parses."""
    out: list[str] = []
    for a in p._actions:
        value = str(next(iter(a.choices))) if a.choices else "1"
        if not a.option_strings and a.nargs not in ("?", "*", argparse.SUPPRESS):
            out.append(value)
        elif a.option_strings and a.required:
            out += [a.option_strings[0], value]
    return out


COMMANDS = sorted(leaves(build_parser()), key=lambda x: x[0])


def test_the_walk_finds_the_commands() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"worker", "sender", "dashboard", "topics", "send", "demo", "status", "pause",
            "kafka start", "rules check"} <= names


@pytest.mark.parametrize(("path", "leaf"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_config_before_or_after_the_subcommand(path: tuple[str, ...],
                                               leaf: argparse.ArgumentParser) -> None:
    parser = build_parser()
    rest = required_args(leaf)
    before = parser.parse_args(["--config", "x.toml", "-v", *path, *rest])
    after = parser.parse_args([*path, *rest, "--config", "x.toml", "-v"])
    neither = parser.parse_args([*path, *rest])
    assert before.config == after.config == "x.toml"
    assert before.verbose and after.verbose
    assert neither.config is None and not neither.verbose
    assert before.func is after.func is neither.func
    both = parser.parse_args(["--config", "a.toml", *path, *rest, "--config", "b.toml"])
    assert both.config == "b.toml"  # the one nearest the command wins


@pytest.mark.parametrize("argv", [["worker", "--config", "{}"], ["--config", "{}", "worker"],
                                  ["kafka", "status", "--config", "{}"]])
def test_main_reads_the_config_given_after_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main([a.format(missing) for a in argv]) == 2
    assert f"config file {missing} not found" in capsys.readouterr().err
