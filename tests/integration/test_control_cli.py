"""Operator commands from the command line against a running pipeline: ``kmta pause``,
``resume``, ``clear``, ``unlock``, ``rules-set``, ``rules-reset`` and ``status``; malformed and
unsigned control records.

What counts is what the providers saw (the simulator's JSONL log) and what the results and
audit topics say, not only the CLI's own output.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomli_w

from kmta.pipeline.control import make_command, sign
from tests.harness import FAST_RULES, ROOT, Pipeline, messages, wait_for

# mailru locks on its first spam reply (the shipped rule waits for 5, per source IP) and retries
# after an hour, so the locking message stays out of the way while the test runs.
LOCK_RULES: dict[str, Any] = copy.deepcopy(FAST_RULES)
LOCK_RULES["isp"]["mailru"] = {
    **copy.deepcopy(FAST_RULES["isp"]["mailru"]),
    "retry": {"mode": "fixed", "interval": "1h", "max_attempts": 5, "max_age": "2h"},
    "replies": [
        {
            "name": "test_spam_lock",
            "match": "spam message rejected",
            "action": "lock",
            "duration": "1h",
            "threshold": 1,
            "scope": "isp",
            "category": "spam_block",
        }
    ],
}


# ---------------------------------------------------------------------- helpers
def kmta(
    p: Pipeline,
    *args: str,
    config: Path | None = None,
    timeout: float = 90,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """``kmta --config ... ARGS`` as an operator runs it (stdin is not a terminal)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kmta.cli", "--config", str(config or p.config_path), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=p.tmp,
        env=env,
        input=stdin if stdin is not None else "",
    )


def status_json(p: Pipeline) -> dict[str, Any]:
    r = kmta(p, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def isp_row(p: Pipeline, isp: str) -> dict[str, Any]:
    return {row["isp"]: row for row in status_json(p)["isps"]}[isp]


def latest(p: Pipeline, topic: str) -> dict[str, dict]:
    """Latest value per key of a compacted topic (state, nodes)."""
    out: dict[str, dict] = {}
    for rec in p.read_topic(topic):
        key = rec.get("node") or (
            rec["isp"] if not rec.get("source_ip") else f"{rec['isp']}|{rec['source_ip']}"
        )
        out[key] = rec
    return out


def audit_of(p: Pipeline, cmd_id: str, timeout: float = 30) -> dict:
    def find() -> dict | None:
        for rec in p.read_topic("audit"):
            if (rec.get("command") or {}).get("id") == cmd_id:
                return rec
        return None

    return wait_for(find, timeout, f"audit record of {cmd_id}", interval=0.3)


def sender_load(p: Pipeline, isp: str, node: str = "sender-1") -> dict:
    return latest(p, "nodes").get(node, {}).get("isps", {}).get(isp, {})


def held(p: Pipeline, isp: str, ids: list[str], timeout: float = 30) -> None:
    """Wait until every id is routed (a ``queued`` event) and two more sender heartbeats (2 s
    apart) say ``isp`` is blocked: the sender had the time to send and did not."""
    want = set(ids)
    wait_for(
        lambda: want <= {e["id"] for e in p.results() if e["status"] == "queued"},
        timeout,
        f"{len(ids)} {isp} messages routed",
        interval=0.3,
    )
    beats: set[float] = set()

    def cond() -> bool:
        node = latest(p, "nodes").get("sender-1", {})
        if not node.get("isps", {}).get(isp, {}).get("paused"):
            beats.clear()
        else:
            beats.add(node["timestamp"])
        return len(beats) >= 3  # the one seen first may predate the routing

    wait_for(cond, timeout, f"{isp} held by the sender", interval=0.5)


def smtp_events(
    p: Pipeline, provider: str, since: float, kinds: tuple[str, ...] = ("connect", "accepted")
) -> list[dict]:
    return [
        e
        for e in p.sim_events()
        if e["provider"] == provider and e["event"] in kinds and e["time"] > since
    ]


def paused_at_sender(p: Pipeline, isp: str, timeout: float = 30) -> float:
    """When the sender's heartbeat first says the ISP is blocked (the pause took effect)."""
    wait_for(
        lambda: sender_load(p, isp).get("paused"), timeout, f"sender to pause {isp}", interval=0.3
    )
    return time.time()


def parse_table(text: str) -> dict[str, dict[str, str]]:
    """``kmta status`` text: a totals line, a header, one row per ISP (no spaces in cells but
    LOCK, which is last-but-four and only filled when locked)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines[0].startswith("totals:"), text
    header = lines[1].split()
    rows = {}
    for ln in lines[2:]:
        cells = ln.split()
        if len(cells) > len(header):  # a lock reason has spaces: glue the LOCK cell back
            extra = len(cells) - len(header)
            i = header.index("LOCK")
            cells[i : i + extra + 1] = [" ".join(cells[i : i + extra + 1])]
        rows[cells[0]] = dict(zip(header, cells, strict=False))
    return rows


# ---------------------------------------------------------------------- tests
def test_pause_resume_clear_unlock_and_status(pipeline_factory) -> None:
    p = pipeline_factory(rules=LOCK_RULES)
    p.start(senders=1)
    warm = messages(30, ["gmail.com", "yahoo.com", "mail.ru"], prefix="warm")
    warm.append({"from": "s@kmta.test", "to": "unknown1@gmail.com", "subject": "x", "text": "y"})
    finals = p.wait_finals(p.produce(warm), timeout=90)
    assert sorted(f["status"] for f in finals.values()).count("delivered") == 30

    # status: the table as text, the same numbers as the results topic
    r = kmta(p, "status")
    assert r.returncode == 0, r.stderr
    table = parse_table(r.stdout)
    assert table["gmail"]["DELIV"] == "10" and table["gmail"]["BOUNCE"] == "1"
    assert table["yahoo"]["DELIV"] == "10" and table["mailru"]["DELIV"] == "10"
    assert table["gmail"]["PAUSED"] == "-" and table["gmail"]["LOCK"] == "-"
    assert "accepted 31" in r.stdout.splitlines()[0]

    # pause: applied by the brain, enforced by the sender, no SMTP session after it
    r = kmta(p, "pause", "gmail", "--reason", "maintenance", "--actor", "ops-cli")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("applied pause gmail"), r.stdout
    t_paused = paused_at_sender(p, "gmail")
    held_ids = p.produce(messages(10, ["gmail.com"], prefix="held"))
    held(p, "gmail", held_ids)
    assert smtp_events(p, "gmail", t_paused) == []
    assert not set(held_ids) & p.finals().keys()
    row = isp_row(p, "gmail")
    assert row["paused"] is True and row["queued"] == 10
    assert parse_table(kmta(p, "status").stdout)["gmail"]["PAUSED"] == "yes"

    r = kmta(p, "resume", "gmail")
    assert r.returncode == 0 and r.stdout.startswith("applied resume gmail"), r.stdout + r.stderr
    finals = p.wait_finals(held_ids, timeout=60)
    assert {f["status"] for f in finals.values()} == {"delivered"}
    wait_for(lambda: len(smtp_events(p, "gmail", t_paused, ("accepted",))) == 10, 10, "sim log")

    # clear: needs a confirmation; cancels what was queued, not what comes after
    assert kmta(p, "pause", "yahoo").returncode == 0
    paused_at_sender(p, "yahoo")
    queued = p.produce(messages(12, ["yahoo.com"], prefix="doomed"))
    held(p, "yahoo", queued)
    r = kmta(p, "clear", "yahoo")
    assert r.returncode == 1 and "confirm with --yes" in r.stderr
    r = kmta(p, "clear", "yahoo", "--yes", "--reason", "campaign withdrawn")
    assert r.returncode == 0 and r.stdout.startswith("applied clear yahoo"), r.stdout + r.stderr
    finals = p.wait_finals(queued, timeout=60)
    assert {f["status"] for f in finals.values()} == {"cancelled"}
    assert {f["response"] for f in finals.values()} == {"queue cleared by an operator"}
    assert kmta(p, "resume", "yahoo").returncode == 0
    later = p.produce(messages(3, ["yahoo.com"], prefix="later"))
    assert {f["status"] for f in p.wait_finals(later, 60).values()} == {"delivered"}
    row = isp_row(p, "yahoo")
    assert row["cancelled"] == 12 and row["delivered"] == 13 and row["paused"] is False

    # unlock: a spam reply locks mailru; unlock lets the held messages go at once
    p.produce([{"from": "s@kmta.test", "to": "reject1@mail.ru", "subject": "x", "text": "y"}])
    wait_for(lambda: isp_row(p, "mailru")["locked"], 30, "mailru locked")
    table = parse_table(kmta(p, "status").stdout)
    assert "test_spam_lock" in table["mailru"]["LOCK"]
    t_locked = time.time()
    waiting = p.produce(messages(5, ["mail.ru"], prefix="waiting"))
    held(p, "mailru", waiting)
    assert smtp_events(p, "mailru", t_locked, ("accepted",)) == []
    r = kmta(p, "unlock", "mailru", "--reason", "delisted")
    assert r.returncode == 0 and r.stdout.startswith("applied unlock mailru"), r.stdout + r.stderr
    finals = p.wait_finals(waiting, timeout=60)
    assert {f["status"] for f in finals.values()} == {"delivered"}
    row = isp_row(p, "mailru")
    assert row["locked"] is False and row["deferred_waiting"] == 1  # reject1 waits an hour

    # live rule edits: checked before sending, applied by the brain, undone by rules-reset
    bad = p.tmp / "bad-rule.toml"
    bad.write_text("[speed]\nmin = 50\nmax = 10\n")
    r = kmta(p, "rules-set", "gmail", str(bad))
    assert r.returncode == 1 and "speed.min (50.0) is above speed.max (10.0)" in r.stderr
    slow = p.tmp / "slow.toml"
    slow.write_text("[speed]\nmax = 90\n")
    r = kmta(p, "rules-set", "gmail", str(slow), "--reason", "warming a new IP")
    assert r.returncode == 0 and r.stdout.startswith("applied set_rules gmail"), r.stdout + r.stderr
    st = latest(p, "state")["gmail"]
    assert st["rules"] == {"speed": {"max": 90}} and st["speed_max"] == 90
    assert isp_row(p, "gmail")["speed"] <= 90
    r = kmta(p, "rules-reset", "gmail")
    assert r.returncode == 0 and r.stdout.startswith("applied reset_rules gmail"), r.stdout
    st = latest(p, "state")["gmail"]
    assert st.get("rules") is None and st["speed_max"] == 5000

    # a bad source IP is refused before anything is sent
    r = kmta(p, "pause", "gmail", "--source-ip", "not-an-ip")
    assert r.returncode == 1 and "not an IP address" in r.stderr

    # the audit log holds every command, who sent it and why
    audit = [a for a in p.read_topic("audit") if a.get("command")]
    seen = [(a["command"]["action"], a["command"]["isp"], a["applied"]) for a in audit]
    assert seen == [
        ("pause", "gmail", True),
        ("resume", "gmail", True),
        ("pause", "yahoo", True),
        ("clear", "yahoo", True),
        ("resume", "yahoo", True),
        ("unlock", "mailru", True),
        ("set_rules", "gmail", True),
        ("reset_rules", "gmail", True),
    ]
    assert audit[0]["command"]["actor"] == "ops-cli"
    assert audit[0]["command"]["reason"] == "maintenance"
    assert audit[1]["command"]["actor"].startswith("cli")


def test_malformed_control_records_are_refused_whole(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start(senders=1)
    p.wait_finals(p.produce(messages(5, ["gmail.com"], prefix="warm")), timeout=90)
    now = time.time()

    def cmd(**kw: Any) -> bytes:
        doc = {
            "id": kw.pop("id"),
            "action": "pause",
            "isp": "gmail",
            "actor": "t",
            "timestamp": now,
            **kw,
        }
        return json.dumps(doc).encode()

    bad = {
        "not-utf8": b"\xff\xfe\x00pause gmail",
        "truncated": b'{"id": "t1", "action": "pause", "isp": "gmail"',
        "array": b'["pause", "gmail"]',
        "extra-key": cmd(id="m-extra", force=True),
        "bad-action": cmd(id="m-action", action="pause_all"),
        "bad-ip": cmd(id="m-ip", source_ip="10.0.0.999"),
        "rules-on-pause": cmd(id="m-rules", rules={"speed": {"max": 1}}),
        # valid except one section: the speed edit must not be applied either
        "half-bad-rules": cmd(
            id="m-half",
            action="set_rules",
            rules={"speed": {"max": 90}, "sending": {"tact": "-1s"}},
        ),
        # messages have no source IP before one sends them: a clear is for the whole ISP
        "clear-one-ip": cmd(id="m-clear", action="clear", source_ip="127.0.0.2"),
        # records that crashed the agent before its audit record was written (issue 14)
        "null": None,
        "non-ascii-signature": cmd(id="m-sig", signature="é" * 64),
        "nested-rules": cmd(id="m-nest", action="set_rules", rules=json.loads(
            '{"speed":' * 900 + "1" + "}" * 900)),
        "deep-json": b"[" * 50_000 + b"]" * 50_000,
        "surrogate": cmd(id="m-sur", reason="\ud800"),
        "stale": cmd(id="m-stale", timestamp=now - 3600),
    }
    for value in bad.values():
        p.produce_raw_keyed("control", b"gmail", value)
    marker = make_command("resume", "gmail", "t", now=time.time())
    p.produce_raw_keyed("control", b"gmail", marker.to_json())
    audit_of(p, marker.id)  # same key, same partition: everything before it was handled

    refused = [a for a in p.read_topic("audit") if not a["applied"]]
    assert len(refused) == len(bad)
    errors = [a["error"] for a in refused]
    assert "malformed command: not UTF-8" in errors[0]
    assert "not JSON" in errors[1] and "expected a JSON object" in errors[2]
    assert "force: Extra inputs are not permitted" in errors[3]
    assert "action: Input should be" in errors[4]
    assert "source_ip" in errors[5] and "not an IP address" in errors[5]
    assert "pause takes no rules" in errors[6]
    assert "sending.tact" in errors[7]
    assert "clear applies to a whole ISP" in errors[8]
    assert "empty record" in errors[9] and "signature" in errors[10]
    assert "nested more than 32" in errors[11] and "nested too deeply" in errors[12]
    assert "reason" in errors[13] and "stale command" in errors[14]
    assert refused[14]["command"]["id"] == "m-stale"
    # records that are not a command keep the raw text for the operator; others the command
    assert refused[1]["raw"].startswith('{"id": "t1"') and refused[1].get("command") is None
    assert refused[7]["command"]["id"] == "m-half"

    st = latest(p, "state")["gmail"]
    assert not st.get("paused") and st.get("rules") is None and st["speed_max"] == 5000
    assert st.get("clear_before") is None
    assert st.get("rules_version", 0) == 0
    ids = p.produce(messages(5, ["gmail.com"], prefix="after"))
    assert {f["status"] for f in p.wait_finals(ids, 60).values()} == {"delivered"}
    assert "control command refused" in p.log("worker")
    assert "control.secret is not set" in p.log("worker")  # warned at start


def test_signed_commands_only_when_a_secret_is_set(pipeline_factory) -> None:
    secret = "s3cret-for-tests-only"
    p = pipeline_factory(extra={"control": {"secret": secret}})
    p.start(senders=1)
    p.wait_finals(p.produce(messages(3, ["gmail.com"], prefix="warm")), timeout=90)

    # unsigned (a config without the secret), wrongly signed, tampered after signing
    cfg = json.loads(json.dumps(p.config.model_dump(mode="json", exclude_none=True)))
    cfg.pop("control", None)
    no_secret = p.tmp / "no-secret.toml"
    no_secret.write_text(tomli_w.dumps(cfg))
    cfg["control"] = {"secret": "wrong-secret"}
    wrong = p.tmp / "wrong-secret.toml"
    wrong.write_text(tomli_w.dumps(cfg))

    r = kmta(p, "pause", "gmail", config=no_secret)
    assert r.returncode == 2 and "NOT applied pause gmail" in r.stderr
    assert "unsigned command" in r.stderr
    r = kmta(p, "pause", "gmail", config=wrong)
    assert r.returncode == 2 and "bad signature" in r.stderr
    good = make_command("pause", "gmail", "t", now=time.time(), secret=secret)
    tampered = good.model_copy(update={"isp": "yahoo"})
    assert tampered.signature == sign(good, secret)
    p.produce_raw_keyed("control", b"yahoo", tampered.to_json())
    assert audit_of(p, good.id)["error"] == "bad signature"
    st = latest(p, "state")
    assert not st.get("gmail", {}).get("paused") and not st.get("yahoo", {}).get("paused")

    # signed with the configured secret: applied
    r = kmta(p, "pause", "gmail")
    assert r.returncode == 0 and r.stdout.startswith("applied pause gmail"), r.stdout + r.stderr
    assert latest(p, "state")["gmail"]["paused"] is True
    r = kmta(p, "resume", "gmail")
    assert r.returncode == 0, r.stderr
    ids = p.produce(messages(3, ["gmail.com"], prefix="after"))
    assert {f["status"] for f in p.wait_finals(ids, 60).values()} == {"delivered"}

    # a signed command copied from the topic and written again is refused: replay
    again = make_command("pause", "gmail", "t", now=time.time(), secret=secret)
    p.produce_raw_keyed("control", b"gmail", again.to_json())
    p.produce_raw_keyed("control", b"gmail", again.to_json())
    wait_for(lambda: len([a for a in p.read_topic("audit")
                          if (a.get("command") or {}).get("id") == again.id]) == 2, 30,
             "both audit records of the replayed command")
    assert latest(p, "state")["gmail"]["paused"] is True
    kmta(p, "resume", "gmail")

    audit = p.read_topic("audit")
    assert [a["applied"] for a in audit] == [False, False, False, True, True, True, False, True]
    assert "replayed command" in audit[6]["error"]
    assert all(a["command"]["signature"] for a in audit[3:])
    # the secret itself is never written anywhere
    dump = json.dumps(audit) + p.log("worker") + p.log("sender-1") + r.stdout + r.stderr
    assert secret not in dump
