"""The suppression page in headless chromium: pages come from the board's store (custom
paging: the browser holds one page), the match count, a domain search that starts at its
first page, and removal of the selected record with a reason."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from dashboard.app import create_app
from dashboard.model import Board
from kmta.config import Config
from schemas.suppression import Reason, Suppression
from tests.browser import helpers as h

pytestmark = pytest.mark.browser

PASSWORD = "browser-test-pw"


class RawController(h.RecordingController):
    def __init__(self) -> None:
        super().__init__()
        self.raw: list[tuple[str, bytes | None, bytes | None]] = []

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.raw.append((topic, key, value))


def test_suppression_pages_search_and_removal() -> None:
    if not (Path(h.CHROMIUM).exists() and Path(h.CHROMEDRIVER).exists()):
        pytest.fail(f"needs {h.CHROMIUM} and {h.CHROMEDRIVER}")
    now = time.time()
    board = Board(stale_after=600.0)
    for i in range(45):  # 30 at gmail.com, 15 at yahoo.com; user44 newest
        a = f"user{i}@{'yahoo.com' if i % 3 == 0 else 'gmail.com'}"
        board.apply_suppression(a, Suppression(address=a, reason=Reason.ASYNC_BOUNCE,
                                               at=now - 1000 + i))
    controller = RawController()
    app = create_app(Config(), board, controller, password=PASSWORD)
    with h.serve(app.server) as url, h.chrome() as driver:
        h.login(driver, url, PASSWORD)

        def addresses(d) -> list[str]:
            return [r["address"] for r in h.read_table(d, "supp-table")]
        h.wait_for(driver, lambda d: d.find_element(By.ID, "supp-matches").text == "45 matches",
                   message="no match count")
        first = h.wait_for(driver, lambda d: (a := addresses(d)) and a)
        assert first == [f"user{i}@{'yahoo.com' if i % 3 == 0 else 'gmail.com'}"
                         for i in range(44, 24, -1)]  # one page of 20, newest first
        driver.find_element(By.CSS_SELECTOR, "#supp-table button.next-page").click()
        h.wait_for(driver, lambda d: addresses(d)[:1] == ["user24@yahoo.com"],
                   message="page 2 not shown")
        box = driver.find_element(By.ID, "supp-search")
        box.send_keys("@yahoo.com", Keys.ENTER)
        h.wait_for(driver, lambda d: d.find_element(By.ID, "supp-matches").text == "15 matches",
                   message="the domain search did not count")
        yahoo = h.wait_for(driver, lambda d: (a := addresses(d)) and a[0] == "user42@yahoo.com"
                           and a)
        assert yahoo == [f"user{i}@yahoo.com" for i in range(42, -1, -3)]  # from its page 1
        driver.find_element(By.CSS_SELECTOR, "#supp-table td.dash-select-cell input").click()
        driver.find_element(By.ID, "supp-reason").send_keys("asked by the owner")
        driver.find_element(By.ID, "btn-supp-remove").click()
        h.wait_for(driver, lambda d: "removed user42@yahoo.com" in d.find_element(
            By.ID, "supp-status").text, message="no removal status")
    assert controller.raw[0] == (
        "kmta.suppression", b"user42@yahoo.com", None)
