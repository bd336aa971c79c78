"""The admin panel in headless chromium against a running pipeline: the simulated providers, a
brain worker, a sender node and ``kmta dashboard`` (production mode, password, signed control
commands) as separate processes. An operator signs in, watches the counts rise, pauses an ISP
and sees its SMTP sessions stop, resumes it, clears a paused ISP's queue through the confirm
dialog, and finds every action in the audit log. The proof is taken from the SMTP side (the
simulator's log) and from the results topic, not from the page alone.

Writes ``artifacts/panel-e2e.png`` and refreshes ``docs/dashboard.png``.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.browser import helpers as h
from tests.harness import Pipeline, messages, wait_for
from tests.integration.test_control_cli import LOCK_RULES
from tests.integration.test_control_cli import held as held_by_sender
from tests.integration.test_dashboard_truth import DashboardProcess

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "e2e-panel-password"
SECRET = "e2e-control-secret"


def sender_paused(p: Pipeline, isp: str) -> bool:
    node = {n["node"]: n for n in p.read_topic("nodes")}.get("sender-1", {})
    return bool(node.get("isps", {}).get(isp, {}).get("paused"))


def smtp(p: Pipeline, provider: str, since: float, kinds=("connect", "accepted")) -> list[dict]:
    return [
        e
        for e in p.sim_events()
        if e["provider"] == provider and e["event"] in kinds and e["time"] > since
    ]


class Stream:
    """Produces a few messages every 0.3 s in a thread until stopped: traffic in flight."""

    def __init__(self, p: Pipeline, domains: list[str]) -> None:
        self.p = p
        self.domains = domains
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-stream", daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.3):
            n += 1
            self.ids += self.p.produce(messages(3, self.domains, prefix=f"stream{n}-"))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def num(row: dict[str, str], col: str) -> int:
    return int((row.get(col) or "0").replace(",", ""))


def test_panel_against_a_running_pipeline(pipeline_factory) -> None:
    if not (Path(h.CHROMIUM).exists() and Path(h.CHROMEDRIVER).exists()):
        pytest.fail(f"needs {h.CHROMIUM} and {h.CHROMEDRIVER}")
    p = pipeline_factory(
        rules=LOCK_RULES,
        extra={
            "dashboard": {"password": PASSWORD, "mode": "production"},
            "control": {"secret": SECRET},
        },
    )
    p.start(senders=1)
    dash = DashboardProcess(p, PASSWORD)
    dash.start()

    with h.chrome() as driver:
        h.login(driver, dash.url, "not-the-password", expect_ok=False)
        h.login(driver, dash.url, PASSWORD)

        # live counts: three batches, the gmail row rises with each
        seen = []
        for n in range(1, 4):
            p.produce(messages(30, ["gmail.com", "yahoo.com", "outlook.com"], prefix=f"b{n}-"))
            row = h.wait_isp_row(
                driver, "gmail", lambda r, n=n: num(r, "delivered") >= 10 * n, timeout=60
            )
            seen.append(num(row, "delivered"))
        assert seen == [10, 20, 30], seen
        h.wait_for(driver, lambda d: d.find_element(By.ID, "total-delivered").text == "90")
        assert {r["node"]: r["status"] for r in h.read_table(driver, "nodes-table")} == {
            "sender-1": "ok"
        }

        # pause gmail while a steady stream of gmail messages flows: the brain records it,
        # the sender stops, the provider sees no new session
        stream = Stream(p, ["gmail.com"])
        stream.start()
        try:
            t_stream = time.time()
            wait_for(lambda: len(smtp(p, "gmail", t_stream, ("accepted",))) >= 10, 30, "flow")
            t_click = time.time()
            status = h.click_action(driver, "pause", isp="gmail")
            assert "sent pause for gmail as admin" in status
            h.wait_isp_row(driver, "gmail", lambda r: r["paused"] == "yes")
            wait_for(lambda: sender_paused(p, "gmail"), 30, "the sender to pause gmail", 0.3)
            t_paused = time.time()
            held = p.produce(messages(20, ["gmail.com", "googlemail.com"], prefix="held"))
            others = p.produce(messages(10, ["yahoo.com"], prefix="meanwhile"))
            assert {f["status"] for f in p.wait_finals(others, 60).values()} == {"delivered"}
        finally:
            stream.stop()
        delivered_before = {i for i, f in p.finals().items() if f["status"] == "delivered"}
        streamed_held = [i for i in stream.ids if i not in delivered_before]
        held_by_sender(p, "gmail", held + streamed_held)  # routed + 2 heartbeats still paused
        assert streamed_held, "the stream should have had messages waiting"
        h.wait_isp_row(driver, "gmail", lambda r: num(r, "queued") == 20 + len(streamed_held))
        # no new SMTP session after the sender reported the pause; a transaction already
        # running then may finish, so deliveries get half a second
        assert smtp(p, "gmail", t_paused, ("connect",)) == []
        assert smtp(p, "gmail", t_paused + 0.5, ("accepted",)) == []
        assert not set(held + streamed_held) & p.finals().keys()
        assert smtp(p, "yahoo", t_paused, ("accepted",))  # the other ISPs go on
        last = max(e["time"] for e in smtp(p, "gmail", t_stream, ("accepted",)))
        print(
            f"pause: click -> sender reports it {t_paused - t_click:.2f}s, last gmail delivery "
            f"{last - t_click:+.2f}s after the click; {len(streamed_held)} of "
            f"{len(stream.ids)} streamed messages held"
        )
        before_pause = 30 + len(stream.ids) - len(streamed_held)
        h.wait_isp_row(driver, "gmail", lambda r: num(r, "delivered") == before_pause)

        # resume: the held messages go out
        status = h.click_action(driver, "resume", isp="gmail")
        assert "sent resume for gmail" in status
        finals = p.wait_finals(held + streamed_held, timeout=60)
        assert {f["status"] for f in finals.values()} == {"delivered"}
        wait_for(lambda: smtp(p, "gmail", t_paused + 0.5, ("connect",)), 10, "sim log")
        h.wait_isp_row(
            driver,
            "gmail",
            lambda r: (
                num(r, "delivered") == 30 + len(stream.ids) + 20
                and num(r, "queued") == 0
                and r["paused"] == ""
            ),
        )

        # clear: pause yahoo so a backlog builds, then clear it through the confirm dialog
        h.click_action(driver, "pause", isp="yahoo")
        h.wait_isp_row(driver, "yahoo", lambda r: r["paused"] == "yes")
        wait_for(lambda: sender_paused(p, "yahoo"), 30, "the sender to pause yahoo", 0.3)
        doomed = p.produce(messages(15, ["yahoo.com"], prefix="doomed"))
        held_by_sender(p, "yahoo", doomed)
        h.wait_isp_row(driver, "yahoo", lambda r: num(r, "queued") == 15)
        assert h.clear_queue(driver, isp="yahoo", accept=False) == ""  # dismissed: nothing sent
        status = h.clear_queue(driver, accept=True)
        assert "sent clear for yahoo" in status
        finals = p.wait_finals(doomed, timeout=60)
        assert {f["status"] for f in finals.values()} == {"cancelled"}
        assert {f["response"] for f in finals.values()} == {"queue cleared by an operator"}
        h.wait_isp_row(
            driver, "yahoo", lambda r: num(r, "cancelled") == 15 and num(r, "queued") == 0
        )
        h.click_action(driver, "resume", isp="yahoo")
        h.wait_isp_row(driver, "yahoo", lambda r: r["paused"] == "")

        # the audit log: every action, signed by the panel and applied by the brain
        def audit_rows(d: Any) -> list[tuple] | None:
            rows = [
                (r["action"], r["isp"], r["actor"], r["applied"])
                for r in h.read_table(d, "audit-table")
            ]
            return rows if len(rows) >= 5 else None

        audit = h.wait_for(driver, audit_rows, message="audit rows")
        assert audit == [
            ("resume", "yahoo", "admin", "yes"),
            ("clear", "yahoo", "admin", "yes"),
            ("pause", "yahoo", "admin", "yes"),
            ("resume", "gmail", "admin", "yes"),
            ("pause", "gmail", "admin", "yes"),
        ]
        records = p.read_topic("audit")
        assert all(r["applied"] and r["command"]["signature"] for r in records)

        # some realistic trouble for the picture: bounces, a retried tempfail, a lock
        p.produce(
            [
                {"from": "s@kmta.test", "to": to, "subject": "x", "text": "y", "campaign": "winter"}
                for to in (
                    "unknown1@gmail.com",
                    "unknown2@outlook.com",
                    "tempfail1@yahoo.com",
                    "reject1@mail.ru",
                    "someone@shop-example.test",
                )
            ]
        )
        p.produce(
            messages(
                40,
                ["gmail.com", "outlook.com", "yahoo.com", "news-example.test"],
                prefix="late",
                campaign="spring",
            )
        )
        mailru = h.wait_isp_row(driver, "mailru", lambda r: "locked" in r["lock"], timeout=60)
        assert "test_spam_lock" in mailru["lock"]
        h.wait_isp_row(driver, "gmail", lambda r: num(r, "bounced") == 1, timeout=60)
        h.wait_isp_row(
            driver, "yahoo", lambda r: num(r, "delivered") == 30 + 10 + 10 + 1, timeout=60
        )
        h.wait_for(
            driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-throughput .barlayer .trace")
        )
        shot = ROOT / "artifacts" / "panel-e2e.png"
        h.screenshot(driver, shot)
        assert shot.stat().st_size > 50_000
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
