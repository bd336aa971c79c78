"""The dashboard in headless chromium: login, ISP table, pause, clear with confirm, rules,
screenshot. The app runs in-process on a free port with a synthetic Board and a recording
controller (the end-to-end test against the real pipeline reuses ``helpers``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from dashboard.app import create_app
from kmta.config import Config
from schemas.control import ControlAction
from tests.browser import helpers as h

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "browser-test-pw"


@pytest.fixture()
def dashboard():
    if not (Path(h.CHROMIUM).exists() and Path(h.CHROMEDRIVER).exists()):
        pytest.fail(f"needs {h.CHROMIUM} and {h.CHROMEDRIVER}")
    board = h.synthetic_board(time.time())
    controller = h.RecordingController()
    app = create_app(Config(), board, controller, password=PASSWORD)  # the real knowledge base
    with h.serve(app.server) as url, h.chrome() as driver:
        yield url, driver, board, controller


def test_dashboard_in_browser(dashboard) -> None:
    url, driver, board, controller = dashboard

    h.login(driver, url, "wrong", expect_ok=False)
    assert "Wrong user name or password" in driver.find_element(By.ID, "login-error").text
    h.login(driver, url, PASSWORD)

    # the table shows the Board's counts
    expected = {r["isp"]: r for r in board.isp_rows(time.time())}
    gmail = h.wait_isp_row(driver, "gmail", lambda r: r.get("delivered") not in ("", None))
    for col in ("queued", "delivered", "bounced", "deferred_waiting"):
        assert int(gmail[col]) == expected["gmail"][col], col
    assert int(gmail["in_flight"]) == 7
    mailru = h.wait_isp_row(driver, "mail.ru")
    assert "locked" in mailru["lock"] and "ip-blocked" in mailru["lock"]
    assert h.wait_for(driver, lambda d: d.find_element(By.ID, "total-delivered").text != "0")

    # pause gmail
    status = h.click_action(driver, "pause", isp="gmail")
    assert "sent pause for gmail" in status
    pauses = h.wait_until(lambda: controller.commands(ControlAction.PAUSE, "gmail"))
    assert pauses[0].actor == "admin" and pauses[0].source_ip is None

    # unlock one source IP of mail.ru
    h.click_action(driver, "unlock", isp="mail.ru", source_ip="192.0.2.10")
    unlock = h.wait_until(lambda: controller.commands(ControlAction.UNLOCK, "mail.ru"))
    assert unlock[0].source_ip == "192.0.2.10"

    # clear yahoo: dismissing the dialog sends nothing; accepting sends clear
    h.clear_queue(driver, isp="yahoo", accept=False)
    status = h.clear_queue(driver, accept=True)
    assert "sent clear for yahoo" in status
    clears = h.wait_until(lambda: controller.commands(ControlAction.CLEAR))
    assert [(c.isp, c.source_ip) for c in clears] == [("yahoo", None)]

    # a bad rule is refused in the page and nothing is sent
    before = len(controller.sent)
    status = h.apply_rule(driver, "[speed]\nmin = 50\nmax = 10")
    assert "rule not valid" in status and "speed" in status
    assert len(controller.sent) == before
    status = h.apply_rule(driver, '{"speed": {"max": 90}}')
    assert "sent set_rules for yahoo" in status
    rules = h.wait_until(lambda: controller.commands(ControlAction.SET_RULES))
    assert rules[0].rules == {"speed": {"max": 90}}

    # charts rendered
    h.wait_for(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chart-speed .scatterlayer .trace")) >= 1,
    )
    h.wait_for(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-categories .barlayer .trace")
    )
    assert {r["node"] for r in h.read_table(driver, "nodes-table")} == {"node-a", "node-b"}
    # the new source IP's warm-up day and today's use against its cap
    warm = h.wait_for(driver, lambda d: h.read_table(d, "warmup-table"))
    assert [(r["source_ip"], r["isp"], r["day"]) for r in warm] == [
        (h.WARMUP_IP, "gmail", "3 of 22")]
    # (a UTC hour, or day, that turned since the board was made starts from zero)
    assert warm[0]["today"] in ("120 / 450", "0 / 450")
    assert warm[0]["hour"] in ("40 / 113", "0 / 113")
    audit = h.wait_for(driver, lambda d: h.read_table(d, "audit-table"))
    assert {r["applied"] for r in audit} == {"yes", "NO"}

    # explain a reply in the ISP view, as `kmta classify` does: a 552 too-many-recipients defers
    box = driver.find_element(By.ID, "reply-text")
    box.clear()
    box.send_keys("552 5.5.3 Too many recipients")
    driver.find_element(By.ID, "btn-explain").click()
    shown = h.wait_for(
        driver, lambda d: "rate_limit" in d.find_element(By.ID, "reply-explain").text
        and d.find_element(By.ID, "reply-explain").text)
    assert "verdict:  defer" in shown and "suppress: no" in shown

    # screenshot with live-looking nodes and the locked ISP's speed chart
    h.fresh_heartbeats(board, time.time())
    h.select_isp(driver, "mail.ru")
    h.wait_isp_row(driver, "gmail", lambda r: r["in_flight"] == "7")
    h.wait_for(driver, lambda d: "mail.ru" in d.find_element(By.ID, "chart-speed").text)
    shot = ROOT / "artifacts" / "dashboard.png"
    h.screenshot(driver, shot)
    assert shot.stat().st_size > 10_000
