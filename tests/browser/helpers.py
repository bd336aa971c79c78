"""Reusable browser helpers for dashboard tests: headless chromium, a served app, login, ISP
selection, actions and table reading. Every wait polls with a deadline (WebDriverWait)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.model import Board
from dashboard.server import WebServer
from ops.kit import free_port
from ops.kit import wait_for as kit_wait_for
from schemas.control import ControlAction, ControlCommand, ControlRecord
from schemas.events import DeliveryEvent
from schemas.nodes import IspLoad, NodeStats
from schemas.state import IspState, WarmupStatus

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TIMEOUT = 20.0

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "WARMUP_IP",
    "RecordingController",
    "apply_rule",
    "chrome",
    "clear_queue",
    "click_action",
    "free_port",
    "fresh_heartbeats",
    "login",
    "read_isp_table",
    "read_table",
    "screenshot",
    "select_isp",
    "serve",
    "synthetic_board",
    "wait_for",
    "wait_isp_row",
    "wait_until",
]


# ---------------------------------------------------------------------- processes
@contextmanager
def serve(flask_app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve a Flask app (``dash_app.server``) in a thread with the production server
    (waitress, as ``kmta dashboard`` does); yields the base URL."""
    server = WebServer(flask_app, host, 0)
    thread = threading.Thread(target=server.serve, name="dashboard-test-server", daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.stop()
        thread.join(10)


@contextmanager
def chrome(width: int = 1600, height: int = 1200) -> Iterator[WebDriver]:
    """Headless chromium with a fresh profile, removed afterwards."""
    profile = tempfile.mkdtemp(prefix="kmta-chrome-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class RecordingController:
    """A fake controller: records the commands the dashboard sends."""

    def __init__(self) -> None:
        self.sent: list[ControlCommand] = []
        self._lock = threading.Lock()

    def send(self, cmd: ControlCommand) -> None:
        with self._lock:
            self.sent.append(cmd)

    def commands(
        self, action: ControlAction | None = None, isp: str | None = None
    ) -> list[ControlCommand]:
        with self._lock:
            return [
                c
                for c in self.sent
                if (action is None or c.action is action) and (isp is None or c.isp == isp)
            ]


# ---------------------------------------------------------------------- waiting
def wait_for(
    driver: WebDriver, cond: Callable[[WebDriver], Any], timeout: float = TIMEOUT, message: str = ""
) -> Any:
    """Poll ``cond`` until truthy; stale elements (the table re-renders every 2 s) retry."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    ).until(cond, message)


def wait_until(cond: Callable[[], Any], timeout: float = TIMEOUT, message: str = "") -> Any:
    """Poll a condition that is not about the page (e.g. the fake controller)."""
    return kit_wait_for(cond, timeout, message or "the condition")


# ---------------------------------------------------------------------- page actions
def login(
    driver: WebDriver, base_url: str, password: str, user: str = "admin", expect_ok: bool = True
) -> None:
    """Sign in; with ``expect_ok`` wait for the ISP table, otherwise for the login error."""
    driver.get(base_url + "/login")
    field = wait_for(driver, lambda d: d.find_element(By.ID, "login-password"))
    user_field = driver.find_element(By.ID, "login-user")
    user_field.clear()
    user_field.send_keys(user)
    field.send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    if expect_ok:
        wait_for(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#isp-table table"),
            message="dashboard did not load after login",
        )
    else:
        wait_for(
            driver, lambda d: d.find_elements(By.ID, "login-error"), message="no login error shown"
        )


def read_table(driver: WebDriver, table_id: str) -> list[dict[str, str]]:
    """The rendered rows of a DataTable as {column id: cell text}."""
    rows = []
    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tr"):
        cells = tr.find_elements(By.CSS_SELECTOR, "td[data-dash-column]")
        if cells:
            rows.append({c.get_attribute("data-dash-column"): c.text for c in cells})
    return rows


def read_isp_table(driver: WebDriver) -> dict[str, dict[str, str]]:
    return {r["isp"]: r for r in read_table(driver, "isp-table") if r.get("isp")}


def wait_isp_row(
    driver: WebDriver,
    isp: str,
    pred: Callable[[dict[str, str]], bool] = bool,
    timeout: float = TIMEOUT,
) -> dict[str, str]:
    """Wait until the ISP table has a row for ``isp`` that satisfies ``pred``."""

    def cond(d: WebDriver) -> dict[str, str] | None:
        row = read_isp_table(d).get(isp)
        return row if row and pred(row) else None

    return wait_for(driver, cond, timeout, f"no matching row for {isp} in the ISP table")


def select_isp(driver: WebDriver, isp: str) -> None:
    """Select ``isp`` for the action controls by clicking its cell in the ISP table."""

    def click(d: WebDriver) -> bool:
        for td in d.find_elements(By.CSS_SELECTOR, '#isp-table td[data-dash-column="isp"]'):
            if td.text == isp:
                td.click()
                return True
        return False

    wait_for(driver, click, message=f"{isp} not in the ISP table")
    wait_for(
        driver,
        lambda d: isp in d.find_element(By.ID, "isp-select").text,
        message=f"{isp} not selected",
    )


def _set_input(driver: WebDriver, element_id: str, value: str | None) -> None:
    """Replace an input's text the way a user does (React ignores WebElement.clear())."""
    el = driver.find_element(By.ID, element_id)
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(Keys.DELETE)
    if value:
        el.send_keys(value)


def click_action(
    driver: WebDriver, action: str, isp: str | None = None, source_ip: str | None = None
) -> str:
    """Click Pause / Resume / Unlock (``action`` = pause|resume|unlock) and return the status
    line once it reports the command as sent."""
    if isp is not None:
        select_isp(driver, isp)
    _set_input(driver, "source-ip", source_ip)
    driver.find_element(By.ID, f"btn-{action}").click()
    return wait_for(
        driver,
        lambda d: (t := d.find_element(By.ID, "action-status").text) and f"{action}" in t and t,
        message=f"no status after {action}",
    )


def clear_queue(
    driver: WebDriver, isp: str | None = None, accept: bool = True, source_ip: str | None = None
) -> str:
    """Click Clear queue (whole ISP unless ``source_ip``) and answer the confirm dialog."""
    if isp is not None:
        select_isp(driver, isp)
    _set_input(driver, "source-ip", source_ip)
    driver.find_element(By.ID, "btn-clear").click()

    def alert(d: WebDriver) -> Any:
        try:
            return d.switch_to.alert
        except NoAlertPresentException:
            return None

    dialog = wait_for(driver, alert, message="no confirm dialog")
    if not accept:
        dialog.dismiss()
        return ""
    dialog.accept()
    return wait_for(
        driver,
        lambda d: (t := d.find_element(By.ID, "action-status").text) and "clear" in t and t,
        message="no status after clear",
    )


def apply_rule(driver: WebDriver, text: str) -> str:
    """Type a partial rule into the editor, click Apply, return the status text."""
    _set_input(driver, "rules-text", text)
    old = driver.find_element(By.ID, "rules-status").text
    driver.find_element(By.ID, "btn-rules-apply").click()
    return wait_for(
        driver,
        lambda d: (t := d.find_element(By.ID, "rules-status").text) and t != old and t,
        message="no rules status",
    )


def screenshot(driver: WebDriver, *paths: str | Path) -> None:
    """Save a full-page screenshot to each path (directories are created)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(int(height) + 150, 800), 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    for p in paths:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(p))


# ---------------------------------------------------------------------- data
def fresh_heartbeats(board: Board, now: float) -> None:
    """Re-send the synthetic nodes' heartbeats so they are not stale at ``now``."""
    with board.lock:
        for row in board.node_rows(now):
            ns = board._nodes[row["node"]]
            board.apply_node(
                ns.model_copy(update={"timestamp": now, "delivered_total": ns.delivered_total + 40})
            )


WARMUP_IP = "192.0.2.20"


def synthetic_board(now: float) -> Board:
    """A Board with an hour of plausible traffic for four ISPs, a lock, nodes and audit. Its
    node heartbeats stay fresh for 10 minutes: a loaded machine may take longer than the
    default 10 s to start the browser and log in, and staleness is not what these tests test."""
    b = Board(stale_after=600.0)
    isps = {"gmail": 0.93, "yahoo": 0.8, "outlook": 0.97, "mail.ru": 0.6}
    campaigns = ["spring-sale", "newsletter", None]
    n = 0
    for isp, ok in isps.items():
        for i in range(240):
            n += 1
            t = now - 3600 + i * 15
            mid = f"{isp}-{i}"
            camp = campaigns[i % 3]
            b.apply_event(
                DeliveryEvent(
                    id=mid,
                    to=f"u{i}@{isp}.example",
                    isp=isp,
                    status="queued",
                    final=False,
                    timestamp=t,
                    campaign=camp,
                )
            )
            r = (i * 37 % 100) / 100
            if i >= 225:
                continue  # still queued
            if r < ok:
                b.apply_event(
                    DeliveryEvent(
                        id=mid,
                        to="x",
                        isp=isp,
                        status="delivered",
                        final=True,
                        code=250,
                        response="2.0.0 OK",
                        attempt=1,
                        timestamp=t + 5,
                        node="node-a",
                    )
                )
            elif r < ok + (1 - ok) / 2:
                b.apply_event(
                    DeliveryEvent(
                        id=mid,
                        to="x",
                        isp=isp,
                        status="deferred",
                        final=False,
                        code=421,
                        enhanced_code="4.7.0",
                        response="Try again later",
                        category="throttled",
                        attempt=1,
                        timestamp=t + 5,
                        next_attempt_at=t + 900,
                    )
                )
            else:
                b.apply_event(
                    DeliveryEvent(
                        id=mid,
                        to="x",
                        isp=isp,
                        status="bounced",
                        final=True,
                        code=550,
                        enhanced_code="5.1.1",
                        response="User unknown",
                        category="bad_mailbox",
                        attempt=1,
                        timestamp=t + 5,
                    )
                )
        for k in range(12):
            t = now - 3600 + k * 300
            b.apply_state(
                IspState(isp=isp, speed=10 + 5 * k, speed_min=1, speed_max=120, updated_at=t)
            )
    b.apply_state(
        IspState(
            isp="mail.ru",
            speed=4,
            speed_min=1,
            speed_max=120,
            locked_until=now + 1800,
            lock_reason="ip-blocked",
            lock_reply="550 5.7.1 Message rejected: spam",
            updated_at=now - 600,
        )
    )
    # a new source IP on its third warm-up day at gmail (kmta/policy/warmup.py)
    b.apply_state(IspState(isp="gmail", source_ip=WARMUP_IP, updated_at=now, warmup=WarmupStatus(
        day=3, days=22, daily_cap=450, hourly_cap=113, sent_today=120, sent_hour=40,
        throttles_today=1, today=int(now // 86400), hour=int(now // 3600), clean_days=2,
        counted_at=now)))
    b.apply_event(
        DeliveryEvent(
            id="mail.ru-x",
            to="x",
            isp="mail.ru",
            status="suppressed",
            final=True,
            timestamp=now - 30,
            internal=True,
        )
    )
    for name, parts, isp_load in (
        (
            "node-a",
            [0, 1, 2],
            {
                "gmail": IspLoad(in_flight=7, connections=3, backlog=12),
                "yahoo": IspLoad(in_flight=2, connections=1),
            },
        ),
        (
            "node-b",
            [3, 4, 5],
            {"outlook": IspLoad(in_flight=4, connections=2), "mail.ru": IspLoad(paused=True)},
        ),
    ):
        b.apply_node(
            NodeStats(
                node=name,
                partitions=parts,
                isps=isp_load,
                delivered_total=500,
                started_at=now - 4000,
                timestamp=now - 4,
            )
        )
        b.apply_node(
            NodeStats(
                node=name,
                partitions=parts,
                isps=isp_load,
                delivered_total=540,
                started_at=now - 4000,
                timestamp=now - 2,
            )
        )
    cmd = ControlCommand(
        id="a1", action=ControlAction.UNLOCK, isp="yahoo", actor="admin", timestamp=now - 1200
    )
    b.apply_audit(ControlRecord(command=cmd, applied=True, worker="brain-1", timestamp=now - 1199))
    b.apply_audit(
        ControlRecord(
            raw="{oops", applied=False, error="malformed command: not JSON", timestamp=now - 900
        )
    )
    return b
