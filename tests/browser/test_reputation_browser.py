"""The Reputation charts in headless chromium against a running pipeline: campaign mail is
delivered (and one address bounces hard), one ARF complaint comes back through ``kmta
inbound``, the brain holds the campaign and the sending domain at gmail, and an operator opens
the panel (``kmta dashboard``, a process of its own) and sees the bars of those scopes, the
limit, the hold marked with the brain's reason, the same numbers as the table, and switches the
window and the scope. The figure is read from the page (the Plotly graph's data), not from
Python.

Writes ``artifacts/reputation.png`` and refreshes ``docs/reputation.png``.
"""
from __future__ import annotations

import shutil
import smtplib
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from dashboard.charts import HELD_MARK
from tests.browser import helpers as h
from tests.harness import free_port, wait_for
from tests.integration.test_dashboard_truth import DashboardProcess
from tests.integration.test_feedback_loop import arf_for

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "reputation-panel-pw"

# what the page's graph holds: every trace's name, x and y, the title and the annotations
_FIGURE_JS = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data) return null;
return JSON.parse(JSON.stringify({
  traces: gd.data.map(t => ({name: t.name, x: t.x, y: t.y})),
  title: (gd.layout.title && gd.layout.title.text) || '',
  notes: (gd.layout.annotations || []).map(a => a.text)}));
"""


def figure(driver: Any, graph: str = "#chart-reputation") -> dict[str, Any] | None:
    return driver.execute_script(_FIGURE_JS, graph)


def bars(fig: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    return {t["name"]: dict(zip(t["x"], t["y"], strict=True)) for t in fig["traces"]}


def wait_figure(driver: Any, cond: Any, what: str) -> dict[str, Any]:
    return h.wait_for(driver, lambda d: (f := figure(d)) and cond(f) and f, timeout=60,
                      message=f"the reputation chart: {what}")


def test_reputation_charts_show_the_held_scopes(pipeline_factory) -> None:
    if not (Path(h.CHROMIUM).exists() and Path(h.CHROMEDRIVER).exists()):
        pytest.fail(f"needs {h.CHROMIUM} and {h.CHROMEDRIVER}")
    inbound_port = free_port()
    p = pipeline_factory(extra={
        "domains": [{"name": "shop.test", "return_path": "bounces.shop.test"}],
        "delivery": {"verp_secret": "rep-secret"},
        "inbound": {"listen": f"127.0.0.1:{inbound_port}"},
        "reputation": {"min_delivered": 5, "recheck": 2.0},
        "dashboard": {"password": PASSWORD, "mode": "production"}})
    p.start()
    p.start_inbound()
    dash = DashboardProcess(p, PASSWORD)
    dash.start()
    mail = [("gmail.com", f"u{i}") for i in range(5)] + [("gmail.com", "unknown1")] + [
        ("yahoo.com", f"y{i}") for i in range(4)]
    ids = p.produce([{"from": "news@shop.test", "to": f"{local}@{domain}", "subject": "s",
                      "text": "t", "campaign": "c1", "id": f"m-{local}"}
                     for domain, local in mail])
    finals = p.wait_finals(ids, 120)
    assert finals["m-unknown1"]["status"] == "bounced"
    assert [f["status"] for i, f in finals.items() if i != "m-unknown1"] == ["delivered"] * 9
    verp = finals["m-u0"]["sender"]
    with smtplib.SMTP("127.0.0.1", inbound_port, timeout=30) as s:
        s.sendmail("fbl@isp.test", ["fbl@bounces.shop.test"], arf_for(
            verp, "u0@gmail.com", "X-Kmta-Id: m-u0\nFrom: news@shop.test\n"
            "Feedback-ID: c1:shop.test:default:shop.test"))

    def holds() -> dict | None:
        st = [s for s in p.read_topic("state") if s.get("isp") == "gmail"
              and not s.get("source_ip") and not s.get("pool")]
        return st[-1].get("holds") if st else None
    held = wait_for(holds, 60, "the brain to hold campaign c1 at gmail")
    assert set(held) == {"campaign:c1", "domain:bounces.shop.test"}
    why = held["campaign:c1"]
    assert "20.00% over 0.30%" in why

    with h.chrome() as driver:
        h.login(driver, dash.url, PASSWORD)
        # per ISP, 24 h (the default): gmail contains the holds, yahoo is clean
        fig = wait_figure(driver, lambda f: any(
            (HELD_MARK + "gmail") in t["x"] for t in f["traces"]), "gmail marked held")
        got = bars(fig)
        assert set(got["Complaints"]) == {HELD_MARK + "gmail", "yahoo"}
        assert got["Complaints"] == {HELD_MARK + "gmail": 20.0, "yahoo": 0.0}  # 1 of 5
        assert got["Hard bounces"] == {HELD_MARK + "gmail": 20.0, "yahoo": 0.0}  # unknown1
        assert got["complaint limit"] == {HELD_MARK + "gmail": 0.3, "yahoo": 0.3}
        assert "Per ISP, last 24 h" in fig["title"]
        notes = " ".join(n.replace("<br>", " ") for n in fig["notes"])
        assert f"campaign:c1: {why}".replace(" ", "") in notes.replace(" ", "")

        # the table beside it: the same rows, the hold's reason in its column
        def table_row(d: Any) -> dict[str, str] | None:
            return next((r for r in h.read_table(d, "reputation-table")
                         if r.get("key") == "isp:gmail|campaign:c1" and r.get("held")), None)
        row = h.wait_for(driver, table_row, message="the held row in the reputation table")
        assert row["held"] == why and row["complaint_24h"] == "20.00%"
        assert "20.00% over 0.30%" in row["over"]

        def color(key: str) -> str:  # of a row's first cell, as drawn
            return driver.execute_script(
                "for (const td of document.querySelectorAll('#reputation-table "
                "td[data-dash-column=\"key\"]')) if (td.textContent === arguments[0]) "
                "return getComputedStyle(td).color;", key)
        assert color("isp:gmail|campaign:c1") == "rgb(176, 0, 32)"  # over the limit: red
        assert color("isp:yahoo|campaign:c1") != "rgb(176, 0, 32)"

        # ISP x campaign: the held scope itself, hatched, with the brain's reason
        driver.find_element(By.CSS_SELECTOR, "#rep-scope input[value='isp_campaign']").click()
        fig = wait_figure(driver, lambda f: "ISP x campaign" in f["title"], "ISP x campaign")
        got = bars(fig)
        assert set(got["Complaints"]) == {HELD_MARK + "gmail \u00b7 c1", "yahoo \u00b7 c1"}
        assert got["Complaints"][HELD_MARK + "gmail \u00b7 c1"] == 20.0
        assert [n.replace("<br>", " ") for n in fig["notes"]] == [f"held: {why}"]
        # drawn, not only in the data: the tick labels read in one script, polled (the panel
        # redraws every 2 s, and an element found before a redraw is stale when read)
        held_tick = HELD_MARK + "gmail \u00b7 c1"
        h.wait_for(driver, lambda d: held_tick in d.execute_script(
            "return Array.from(document.querySelectorAll('#chart-reputation .xtick text'), "
            "t => t.textContent);"), message="the held scope's tick drawn")

        # 7 d: the same counts (all of it is from the last minutes), another title
        driver.find_element(By.CSS_SELECTOR, "#rep-window input[value='7d']").click()
        fig = wait_figure(driver, lambda f: "last 7 d" in f["title"], "the 7 d window")
        assert bars(fig)["Complaints"][HELD_MARK + "gmail \u00b7 c1"] == 20.0
        hist = h.wait_for(driver, lambda d: (f := figure(d, "#chart-reputation-history"))
                          and "last 7 d" in f["title"] and f, message="the history chart")
        lines = {t["name"]: t["y"] for t in hist["traces"]}
        assert lines[HELD_MARK + "gmail \u00b7 c1"][-1] == 20.0
        assert lines["yahoo \u00b7 c1"][-1] == 0.0

        # per sending domain: the domain held at gmail
        driver.find_element(By.CSS_SELECTOR, "#rep-scope input[value='domain']").click()
        fig = wait_figure(driver, lambda f: "Sending domain" in f["title"], "per domain")
        assert list(bars(fig)["Complaints"]) == [HELD_MARK + "bounces.shop.test"]
        assert bars(fig)["Complaints"][HELD_MARK + "bounces.shop.test"] == 11.111  # 1 of 9
        driver.find_element(By.CSS_SELECTOR, "#rep-scope input[value='isp_campaign']").click()
        wait_figure(driver, lambda f: "ISP x campaign" in f["title"], "back to ISP x campaign")
        section = driver.find_element(By.ID, "chart-reputation")
        driver.execute_script("arguments[0].scrollIntoView()", section)
        shot = ROOT / "artifacts" / "reputation.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        section.find_element(By.XPATH, "../..").screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        shutil.copyfile(shot, ROOT / "docs" / "reputation.png")
    dash.stop()
