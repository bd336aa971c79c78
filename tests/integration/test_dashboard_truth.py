"""The dashboard tells the truth: with two brain workers and two sender nodes, the counts that a
running ``kmta dashboard`` serves (and ``kmta status --json`` prints) equal what the results
topic says, message by message; the node table equals the senders' own delivery events; and a
restarted dashboard rebuilds the same numbers from Kafka alone.

``DashboardProcess`` is shared with the browser end-to-end test.
"""

from __future__ import annotations

import copy
import http.cookiejar
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from typing import Any

from tests.harness import FAST_RULES, ROOT, Pipeline, free_port, messages, wait_for

PASSWORD = "truth-test-password"
COUNT_COLUMNS = (
    "queued",
    "deferred_waiting",
    "delivered",
    "bounced",
    "expired",
    "suppressed",
    "cancelled",
    "rejected",
)
TOTAL_KEYS = (
    "accepted",
    "final",
    "queued",
    "deferred",
    "delivered",
    "bounced",
    "expired",
    "suppressed",
    "cancelled",
    "rejected",
    "duplicates",
)


class DashboardProcess:
    """``kmta dashboard`` as a subprocess of the pipeline, and a signed-in HTTP client."""

    def __init__(self, p: Pipeline, password: str, name: str = "dashboard") -> None:
        self.p = p
        self.password = password
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._opener: urllib.request.OpenerDirector | None = None

    def start(self) -> float:
        """Start and wait until the login page answers; returns the seconds that took."""
        t0 = time.monotonic()
        before = self.p.log(self.name).count("dashboard on http")
        self.p._spawn(
            self.name, ["--config", str(self.p.config_path), "dashboard", "--port", str(self.port)]
        )
        wait_for(
            lambda: (
                self.p._alive(self.name)
                and self.p.log(self.name).count("dashboard on http") > before
            ),
            60,
            "the dashboard to start",
        )
        wait_for(self._answers, 30, "the dashboard to answer", interval=0.2)
        self._opener = None
        return time.monotonic() - t0

    def stop(self) -> None:
        self.p.stop(self.name)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/login", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def _signed_in(self) -> urllib.request.OpenerDirector:
        if self._opener is None:
            opener = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
            )
            form = urllib.parse.urlencode({"username": "admin", "password": self.password})
            with opener.open(self.url + "/login", data=form.encode(), timeout=10) as r:
                assert r.status == 200 and r.url.rstrip("/") == self.url, r.url
            self._opener = opener
        return self._opener

    def status(self) -> dict[str, Any]:
        """What the running dashboard shows (``/api/status``: totals, isps, nodes)."""
        with self._signed_in().open(self.url + "/api/status", timeout=10) as r:
            return json.loads(r.read())


def truth(p: Pipeline) -> tuple[dict[str, Counter], Counter, Counter]:
    """From the results topic alone: per ISP the count of each message's current status (its
    first final, else its latest event), the same totals, and delivered events per node."""
    last: dict[str, dict] = {}
    delivered_by_node: Counter = Counter()  # every delivery a node made, repeats included
    echoes = 0
    for ev in p.results():
        if ev["status"] == "delivered":
            delivered_by_node[ev.get("node")] += 1
        prev = last.get(ev["id"])
        if prev is not None and prev["final"]:
            echoes += 1  # at-least-once: a repeated final is an echo
            continue
        last[ev["id"]] = ev
    per_isp: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    for ev in last.values():
        per_isp[ev.get("isp") or "(unrouted)"][ev["status"]] += 1
        totals[ev["status"]] += 1
    totals["accepted"] = len(last)
    totals["final"] = sum(1 for ev in last.values() if ev["final"])
    totals["duplicates"] = echoes
    return dict(per_isp), totals, delivered_by_node


def counts(status: dict[str, Any]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    isps = {r["isp"]: {c: r[c] for c in COUNT_COLUMNS} for r in status["isps"]}
    return isps, {k: status["totals"][k] for k in TOTAL_KEYS}


def expected(per_isp: dict[str, Counter], totals: Counter) -> tuple[dict, dict]:
    status_of = {"deferred_waiting": "deferred"}
    isps = {isp: {c: n[status_of.get(c, c)] for c in COUNT_COLUMNS} for isp, n in per_isp.items()}
    return isps, {k: totals[k] for k in TOTAL_KEYS}


def kmta_status(p: Pipeline) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "kmta.cli", "--config", str(p.config_path), "status", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=p.tmp,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def isp_status(dash: DashboardProcess, isp: str) -> dict[str, Any]:
    return next((r for r in dash.status()["isps"] if r["isp"] == isp), {})


def senders_paused(p: Pipeline, isp: str) -> bool:
    """Every sender with a lane for ``isp`` says on its latest heartbeat that it is blocked."""
    latest = {n["node"]: n for n in p.read_topic("nodes")}
    loads = [n["isps"][isp] for n in latest.values() if isp in n["isps"]]
    return bool(loads) and all(x["paused"] for x in loads)


def matches_truth(dash: DashboardProcess, p: Pipeline) -> dict[str, Any] | None:
    want = expected(*truth(p)[:2])
    got = dash.status()
    have = counts(got)
    # ISPs that only appear in heartbeats or state (no message yet) show zeros
    have_isps = {k: v for k, v in have[0].items() if any(v.values())}
    return got if (have_isps, have[1]) == want else None


def test_two_workers_two_senders_and_a_dashboard_restart(pipeline_factory) -> None:
    rules = copy.deepcopy(FAST_RULES)
    rules["isp"]["mailru"] = {
        **rules["isp"]["mailru"],
        "retry": {"mode": "fixed", "interval": "1h", "max_attempts": 3, "max_age": "2h"},
    }
    p = pipeline_factory(rules=rules, extra={"dashboard": {"password": PASSWORD}})
    p.start_sim()
    p.start_worker("worker-1")
    p.start_worker("worker-2")
    p.start_sender("sender-1")
    p.start_sender("sender-2")
    dash = DashboardProcess(p, PASSWORD)
    dash.start()
    try:
        urllib.request.urlopen(dash.url + "/api/status", timeout=10)
        raise AssertionError("/api/status answered without a session")
    except urllib.error.HTTPError as e:
        assert e.code == 401

    # lanes for outlook and yahoo on whichever sender owns their partitions, then pause both
    warm = p.produce(messages(20, ["outlook.com", "yahoo.com"], prefix="warm"))
    p.wait_finals(warm, timeout=120)
    p.control("pause", "outlook")
    p.control("pause", "yahoo")
    wait_for(
        lambda: senders_paused(p, "outlook") and senders_paused(p, "yahoo"),
        30,
        "the senders to pause outlook and yahoo",
        interval=0.5,
    )

    # a mix that leaves every column non-zero: outlook paused (its messages stay queued),
    # a full mailbox at mailru (deferred for an hour), bounces, a retried tempfail, a clear
    docs = messages(
        240,
        [
            "gmail.com",
            "googlemail.com",
            "mail.ru",
            "shop-example.test",
            "news-example.test",
            "bk.ru",
        ],
    )
    docs += messages(20, ["outlook.com", "hotmail.com"], prefix="held")
    docs += messages(15, ["yahoo.com"], prefix="doomed")
    docs += [
        {"from": "s@kmta.test", "to": to, "subject": "x", "text": "y"}
        for to in (
            "unknown1@gmail.com",
            "unknown2@shop-example.test",
            "full1@mail.ru",
            "a@nx.invalid",
            "tempfail1@gmail.com",
            "tempfail2@news-example.test",
        )
    ]
    ids = warm + p.produce(docs)
    flowing = [d["id"] for d in docs if not d["to"].startswith(("held", "doomed", "full1"))]
    p.wait_finals(flowing, timeout=120)
    wait_for(lambda: isp_status(dash, "yahoo").get("queued") == 15, 60, "15 yahoo queued")
    p.control("clear", "yahoo")
    doomed = [d["id"] for d in docs if d["to"].startswith("doomed")]
    assert {f["status"] for f in p.wait_finals(doomed, 60).values()} == {"cancelled"}

    got = wait_for(
        lambda: matches_truth(dash, p), 60, "dashboard counts == results topic", interval=1.0
    )
    per_isp, totals, by_node = truth(p)
    assert totals["accepted"] == len(ids)
    assert per_isp["outlook"]["queued"] == 20 and per_isp["mailru"]["deferred"] == 1
    assert per_isp["yahoo"]["cancelled"] == 15 and per_isp["gmail"]["bounced"] == 1
    assert totals["delivered"] == 20 + 240 + 2 and totals["bounced"] == 3
    # the status command reads the same topics the same way
    assert counts(kmta_status(p)) == counts(got)

    # both senders deliver; the node table equals their own delivery events
    assert set(by_node) == {"sender-1", "sender-2"}, by_node

    shown: dict[str, Any] = {}

    def nodes_agree() -> list[dict] | None:
        rows = dash.status()["nodes"]
        shown.update({r["node"]: (r["delivered_total"], r["status"]) for r in rows})
        ok = {r["node"]: r["delivered_total"] for r in rows} == dict(by_node)
        return rows if ok and all(r["status"] == "ok" for r in rows) else None

    try:
        rows = wait_for(nodes_agree, 30, "node table == delivered events per node", 1.0)
    except AssertionError as e:
        raise AssertionError(f"{e}: dashboard {shown}, results {dict(by_node)}") from None
    parts = [set(map(int, r["partitions"].split(", "))) for r in rows]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == set(range(48))
    outlook = next(r for r in got["isps"] if r["isp"] == "outlook")
    assert outlook["paused"] is True and outlook["delivered"] == 10
    # a paused partition is paused at the consumer too: the senders hold at most what they
    # fetched before the pause took hold; the rest waits in Kafka
    assert 1 <= outlook["node_backlog"] <= 20

    # a restarted dashboard rebuilds the same numbers from Kafka
    before = counts(dash.status())
    dash.stop()
    t0 = time.monotonic()
    dash.start()
    again = wait_for(
        lambda: matches_truth(dash, p), 60, "restarted dashboard == results", interval=0.5
    )
    rebuilt_in = time.monotonic() - t0
    assert counts(again) == before
    assert {r["node"] for r in again["nodes"]} == {"sender-1", "sender-2"}
    print(
        f"dashboard restart: counts rebuilt from Kafka in {rebuilt_in:.1f}s "
        f"({again['totals']['events']} events)"
    )

    # and it keeps following: resume outlook and watch the queued messages turn delivered
    p.control("resume", "outlook")
    held = [d["id"] for d in docs if d["to"].startswith("held")]
    p.wait_finals(held, timeout=60)
    final = wait_for(
        lambda: matches_truth(dash, p), 60, "dashboard follows the resume", interval=1.0
    )
    outlook = next(r for r in final["isps"] if r["isp"] == "outlook")
    assert outlook["delivered"] == 10 + 20 and outlook["queued"] == 0 and outlook["paused"] is False
