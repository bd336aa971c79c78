"""The panel's login: rate limit per client address, server-side sessions revoked at sign-out,
cookie flags (Secure on HTTPS, also behind a proxy), and the waitress server it runs on."""
from __future__ import annotations

import base64
import json
import threading
import urllib.request
from typing import Any

import pytest

from dashboard.app import create_app
from dashboard.auth import COOKIE, LoginLimiter, Sessions
from dashboard.model import Board
from dashboard.server import WebServer
from kmta.config import Config, DashboardConfig


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Nobody:
    def send(self, cmd: Any) -> None:
        raise AssertionError("no command expected")


def make(clock: Clock | None = None, **dash: Any) -> Any:
    cfg = Config(dashboard=DashboardConfig(**dash))
    return create_app(cfg, Board(), Nobody(), password="pw", clock=clock or Clock(),
                      kb_loader=lambda: None)


def login(client: Any, password: str = "pw", **env: Any) -> Any:
    return client.post("/login", data={"username": "admin", "password": password},
                       environ_overrides=env)


def set_cookie_header(response: Any) -> str:
    [header] = [v for k, v in response.headers.items() if k == "Set-Cookie"]
    return header


# ---------------------------------------------------------------------- rate limit
def test_failed_logins_are_limited_per_address_with_retry_after() -> None:
    clock = Clock()
    app = make(clock)
    attacker = app.server.test_client()
    t0 = clock.now
    for i in range(5):  # failures at t0 .. t0+4
        clock.now = t0 + i
        assert login(attacker, "guess", REMOTE_ADDR="10.0.0.7").status_code == 401
    clock.now = t0 + 20
    r = login(attacker, "pw", REMOTE_ADDR="10.0.0.7")  # even the right password: not checked
    assert r.status_code == 429 and r.headers["Retry-After"] == "40"
    assert b"Too many failed sign-ins" in r.data
    assert attacker.get("/").status_code == 302  # no session came of it
    # another address is not affected
    other = app.server.test_client()
    assert login(other, "pw", REMOTE_ADDR="10.0.0.8").status_code == 302
    # the window slides: 60 s after the first failure one attempt is free again
    clock.now = t0 + 60
    assert login(attacker, "guess", REMOTE_ADDR="10.0.0.7").status_code == 401
    r = login(attacker, "guess", REMOTE_ADDR="10.0.0.7")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"


def test_a_successful_login_clears_the_address_record() -> None:
    app = make(login_attempts=2)
    c = app.server.test_client()
    assert login(c, "guess").status_code == 401
    assert login(c).status_code == 302
    assert login(c, "guess").status_code == 401
    assert login(c, "guess").status_code == 401
    assert login(c).status_code == 429


def test_behind_a_proxy_the_forwarded_address_is_limited() -> None:
    app = make(proxy_hops=1)
    c = app.server.test_client()
    for _ in range(5):
        r = c.post("/login", data={"password": "x"}, headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 401
    blocked = c.post("/login", data={"password": "pw"},
                     headers={"X-Forwarded-For": "203.0.113.9"})
    assert blocked.status_code == 429
    ok = c.post("/login", data={"password": "pw"}, headers={"X-Forwarded-For": "203.0.113.10"})
    assert ok.status_code == 302


def test_without_proxy_hops_forwarded_headers_are_ignored() -> None:
    app = make()
    c = app.server.test_client()
    for i in range(5):  # an attacker cannot dodge the limit by inventing addresses
        r = c.post("/login", data={"password": "x"}, headers={"X-Forwarded-For": f"198.51.100.{i}"})
        assert r.status_code == 401
    assert c.post("/login", data={"password": "pw"},
                  headers={"X-Forwarded-For": "198.51.100.99"}).status_code == 429


def test_limiter_forgets_the_least_recent_clients_beyond_its_limit() -> None:
    lim = LoginLimiter(attempts=1, window=60, limit=2)
    for who in ("a", "b", "c"):
        lim.failed(who, 0)
    assert lim.retry_after("a", 1) == 0  # forgotten
    assert lim.retry_after("b", 1) == 59 and lim.retry_after("c", 1) == 59


# ---------------------------------------------------------------------- sessions
def test_logout_revokes_the_session_server_side() -> None:
    app = make()
    c = app.server.test_client()
    login(c)
    stolen = c.get_cookie(COOKIE).value
    assert c.get("/").status_code == 200
    c.get("/logout")
    assert len(app.kmta_sessions) == 0
    replay = app.server.test_client()
    replay.set_cookie(COOKIE, stolen)
    assert replay.get("/_dash-layout").status_code == 401
    assert replay.get("/api/status").status_code == 401
    assert replay.get("/").status_code == 302


def test_the_cookie_holds_only_a_session_id_renewed_at_login() -> None:
    app = make()
    c = app.server.test_client()
    login(c)
    first = c.get_cookie(COOKIE).value
    login(c)
    second = c.get_cookie(COOKIE).value
    assert first != second and len(app.kmta_sessions) == 1  # the old one was revoked
    old = app.server.test_client()
    old.set_cookie(COOKIE, first)
    assert old.get("/api/status").status_code == 401
    # the signed payload is the id only: no user name, no password
    payload = second.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    # (parsed, not searched: a random session id holds "pw" about once in a hundred)
    doc = json.loads(decoded)
    assert set(doc) == {"sid"} and app.kmta_sessions.user(doc["sid"]) == "admin"


def test_sessions_expire_when_idle_and_at_their_maximum_age() -> None:
    clock = Clock()
    app = make(clock, session_idle_seconds=600, session_max_seconds=1800)
    c = app.server.test_client()
    login(c)
    for _ in range(5):  # used every 5 minutes: alive until its maximum age
        clock.now += 300
        assert c.get("/api/status").status_code == 200
    clock.now += 301
    assert c.get("/api/status").status_code == 401
    login(c)
    clock.now += 601
    assert c.get("/api/status").status_code == 401


def test_session_store_keeps_at_most_its_limit() -> None:
    s = Sessions(idle=60, max_age=60, clock=Clock(), limit=2)
    a, b, c = (s.create("admin") for _ in range(3))
    assert (s.user(a), s.user(b), s.user(c)) == (None, "admin", "admin")


# ---------------------------------------------------------------------- cookie flags
def test_cookie_is_httponly_samesite_and_not_secure_over_plain_http() -> None:
    c = make().server.test_client()
    h = set_cookie_header(login(c))
    assert h.startswith(f"{COOKIE}=")
    assert "HttpOnly" in h and "SameSite=Lax" in h and "Secure" not in h


def test_cookie_is_secure_over_https() -> None:
    c = make().server.test_client()
    r = c.post("/login", data={"password": "pw"}, base_url="https://panel.example")
    assert "; Secure" in set_cookie_header(r)


def test_cookie_is_secure_behind_a_tls_proxy() -> None:
    proxied = make(proxy_hops=1).server.test_client()
    r = proxied.post("/login", data={"password": "pw"}, headers={"X-Forwarded-Proto": "https"})
    assert "; Secure" in set_cookie_header(r)
    direct = make().server.test_client()  # not trusted without proxy_hops
    r = direct.post("/login", data={"password": "pw"}, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in set_cookie_header(r)


def test_secure_cookie_always() -> None:
    c = make(secure_cookie="always").server.test_client()
    assert "; Secure" in set_cookie_header(login(c))


@pytest.mark.parametrize("bad", [{"proxy_hops": -1}, {"secure_cookie": "never"},
                                 {"login_attempts": 0}, {"session_idle_seconds": 0}])
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        DashboardConfig(**bad)


# ---------------------------------------------------------------------- server
def test_served_by_waitress_and_stops_on_request() -> None:
    app = make()
    server = WebServer(app.server, "127.0.0.1", 0, threads=2)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(server.url + "/login", timeout=10) as r:
            assert r.status == 200 and r.headers["Server"] == "kmta"
            assert b"login-form" in r.read()
    finally:
        server.stop()
        thread.join(10)
    assert not thread.is_alive()
