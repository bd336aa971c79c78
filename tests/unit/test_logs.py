"""Log lines (kmta/pipeline/logs.py): JSON objects with the process's fields and the bound
context, the same fields in text mode's records, and the config's secrets masked in both."""
from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from kmta.cli.commands import build_parser, process_node
from kmta.config import Config
from kmta.pipeline.logs import MASK, bind, config_secrets, configure, log_context

SECRET = "s3cr3t-\"quoted\"-ключ"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in stream.getvalue().splitlines()]


def test_json_lines_carry_kind_node_and_context(restore_root: None) -> None:
    out = io.StringIO()
    configure("sender", "node-7", "json", logging.DEBUG, stream=out)
    log = logging.getLogger("kmta.test")
    log.info("plain")
    with log_context(isp="gmail"):
        bind(message_id="m-1")
        log.warning("inside %s", "it")
        log.info("given", extra={"message_id": "m-2", "attempt": 3})
    log.info("after")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    got = lines(out)
    assert [g["message"] for g in got] == ["plain", "inside it", "given", "after", "failed"]
    for g in got:
        assert {g["kind"], g["node"], g["logger"]} == {"sender", "node-7", "kmta.test"}
        assert g["time"].endswith("Z") and "T" in g["time"]
    assert got[0]["level"] == "INFO" and "isp" not in got[0]
    assert (got[1]["level"], got[1]["isp"], got[1]["message_id"]) == ("WARNING", "gmail", "m-1")
    assert (got[2]["message_id"], got[2]["attempt"]) == ("m-2", 3)  # extra= wins over context
    assert "isp" not in got[3] and "message_id" not in got[3]
    assert "ValueError: boom" in got[4]["exc_info"]


async def test_each_task_keeps_its_own_context(restore_root: None) -> None:
    out = io.StringIO()
    configure("worker", "w", "json", stream=out)
    log = logging.getLogger("kmta.test")

    async def one(mid: str) -> None:
        with log_context(message_id=mid):
            await asyncio.sleep(0)
            log.info("routed")

    await asyncio.gather(*(one(f"m{i}") for i in range(5)))
    assert sorted(g["message_id"] for g in lines(out)) == [f"m{i}" for i in range(5)]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_config_secrets_never_written(restore_root: None, fmt: str) -> None:
    config = Config.model_validate({
        "control": {"secret": SECRET}, "dashboard": {"password": "dash-pass-1"},
        "unsubscribe": {"secret": "unsub-key-2"}})
    assert sorted(config_secrets(config)) == sorted([SECRET, "dash-pass-1", "unsub-key-2"])
    out = io.StringIO()
    configure("dashboard", "d", fmt, stream=out, secrets=config_secrets(config))
    log = logging.getLogger("kmta.test")
    log.info("connecting with %s and %s", SECRET, "dash-pass-1")
    log.info("a dict %s", {"secret": SECRET}, extra={"detail": f"key={SECRET}"})
    try:
        raise RuntimeError(f"auth failed for unsub-key-2 / {SECRET}")
    except RuntimeError:
        log.exception("x")
    text = out.getvalue()
    for s in (SECRET, json.dumps(SECRET)[1:-1], json.dumps(SECRET, ensure_ascii=False)[1:-1],
              "dash-pass-1", "unsub-key-2", "s3cr3t"):
        assert s not in text
    assert text.count(MASK) >= 6
    if fmt == "json":
        assert len(lines(out)) == 3  # still one valid object per line


def test_log_format_flag_anywhere_and_node_names() -> None:
    parser = build_parser()
    args = parser.parse_args(["sender", "--log-format", "json", "--node", "s1"])
    assert args.log_format == "json" and process_node(args, Config()) == "s1"
    args = parser.parse_args(["--log-format", "json", "worker"])
    assert args.log_format == "json"
    cfg = Config.model_validate({"worker": {"name": "brain-a"}, "log": {"format": "json"}})
    assert process_node(args, cfg) == "brain-a" and cfg.log.format == "json"
    args = parser.parse_args(["inbound"])
    assert process_node(args, Config()).startswith("inbound-")
    with pytest.raises(SystemExit):
        parser.parse_args(["sender", "--log-format", "xml"])
