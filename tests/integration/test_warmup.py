"""IP warm-up on the real pipeline against isp-sim: a pool of two source IPs, one of them new.

127.0.0.3 is marked new (warm-up started today) with a schedule of 10 messages on day 1 at
gmail; 127.0.0.2 is warm. Of 60 messages to gmail the new IP delivers its cap and the warm IP
the rest: none waits, none is lost, and the brain publishes the new IP's count."""
from __future__ import annotations

import datetime as dt
from collections import Counter

from tests.harness import messages, wait_for
from tests.integration.test_control_cli import kmta

WARM, NEW = "127.0.0.2", "127.0.0.3"
CAP = 10


def test_a_new_ip_sends_its_cap_and_the_rest_overflows_to_the_warm_ip(pipeline_factory) -> None:
    today = dt.datetime.now(dt.UTC).date()
    p = pipeline_factory(
        pools=[{"name": "default", "source_ips": [WARM, NEW], "warmup": {NEW: today}}],
        extra={"warmup": {"schedules": {"gmail": {"daily": [CAP, 2 * CAP], "hourly": 1.0}}}})
    p.start(senders=1)
    ids = p.produce(messages(60, ["gmail.com"], prefix="w"))
    finals = p.wait_finals(ids, 120)
    assert len(finals) == 60 and {f["status"] for f in finals.values()} == {"delivered"}
    by_ip = Counter(f["source_ip"] for f in finals.values())
    assert by_ip[NEW] == CAP, by_ip  # up to its cap, not past it
    assert by_ip[WARM] == 60 - CAP
    # every attempt of the new IP counts, deferrals included: none beyond the cap either
    attempts = [e for e in p.results() if e.get("source_ip") == NEW and e.get("code")]
    assert len(attempts) == CAP

    def published() -> dict | None:
        states = [s for s in p.read_topic("state")
                  if s.get("isp") == "gmail" and s.get("source_ip") == NEW and s.get("warmup")]
        last = states[-1]["warmup"] if states else None
        return last if last and last["sent_today"] == CAP else None

    snap = wait_for(published, 30, "the brain's count of the new IP")
    assert (snap["day"], snap["daily_cap"], snap["hourly_cap"]) == (1, CAP, CAP)
    assert not any(s.get("warmup") for s in p.read_topic("state")
                   if s.get("source_ip") == WARM)


def test_an_operator_starts_and_stops_a_warm_up_from_the_cli(pipeline_factory) -> None:
    p = pipeline_factory(
        pools=[{"name": "default", "source_ips": [WARM, NEW]}],
        extra={"warmup": {"schedules": {"gmail": {"daily": [5, 10], "hourly": 1.0}}}})
    p.start(senders=1)
    typo = kmta(p, "ip", "warmup", "start", "127.0.0.9")
    assert typo.returncode != 0 and "in no [[pools]] source_ips" in typo.stderr
    done = kmta(p, "ip", "warmup", "start", NEW)
    assert done.returncode == 0 and "applied warmup_start" in done.stdout, done

    # the mark reaches the sender through the state topic before the messages
    wait_for(lambda: any(s.get("isp") == "*" and s.get("source_ip") == NEW
                         and s.get("warmup_since") for s in p.read_topic("state")),
             30, "the warm-up mark")
    ids = p.produce(messages(30, ["gmail.com"], prefix="a"))
    finals = p.wait_finals(ids, 120)
    by_ip = Counter(f["source_ip"] for f in finals.values())
    assert len(finals) == 30 and by_ip[NEW] == 5 and by_ip[WARM] == 25, by_ip
    shown = wait_for(lambda: (lambda r: r if "5 / 5" in r.stdout else None)(
        kmta(p, "ip", "warmup", "status", NEW)), 60, "kmta ip warmup status")
    assert f"{NEW}  gmail" in shown.stdout and "1 of 2" in shown.stdout, shown.stdout

    stop = kmta(p, "ip", "warmup", "stop", NEW)
    assert stop.returncode == 0 and "applied warmup_stop" in stop.stdout, stop
    wait_for(lambda: any(s.get("isp") == "*" and s.get("source_ip") == NEW
                         and s.get("warmup_since") is None for s in p.read_topic("state")),
             30, "the stop mark")
    ids = p.produce(messages(30, ["gmail.com"], prefix="b"))
    finals = p.wait_finals(ids, 120)
    assert {f["status"] for f in finals.values()} == {"delivered"}
    assert Counter(f["source_ip"] for f in finals.values())[NEW] > 0  # no cap any more
