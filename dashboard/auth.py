"""Password login for the dashboard: server-side sessions guard every route but the login page
and static assets.

The session cookie (HttpOnly, SameSite=Lax, Secure on HTTPS) carries only a random session id,
signed by Flask; the session itself lives in this process, so signing out revokes it: the same
cookie sent again is refused. Failed sign-ins are limited per client address (429 with
Retry-After). Behind a reverse proxy, ``[dashboard] proxy_hops`` makes the client address and
the scheme come from its X-Forwarded-For / X-Forwarded-Proto headers.
"""

from __future__ import annotations

import hmac
import html
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import flask
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from kmta.config import DashboardConfig

__all__ = ["PUBLIC_PREFIXES", "LoginLimiter", "Sessions", "check_login", "current_user",
           "install_login"]

# Dash's JS bundles and the favicon carry no data; everything else needs a session.
PUBLIC_PREFIXES = ("/login", "/assets/", "/_dash-component-suites/", "/_favicon.ico")
COOKIE = "kmta_session"

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>kmta - sign in</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f4f6f8;display:flex;justify-content:center;
margin-top:12vh}}
form{{background:#fff;padding:2em 2.5em;border-radius:8px;box-shadow:0 2px 8px #0002;width:20em}}
input{{width:100%;padding:.5em;margin:.3em 0 1em;box-sizing:border-box}}
button{{padding:.5em 1.5em}} .error{{color:#b00020;margin-bottom:1em}}
</style></head>
<body><form method="post" action="/login" id="login-form">
<h2>kmta dashboard</h2>
{error}
<label for="login-user">User</label>
<input id="login-user" name="username" value="{user}" autocomplete="username">
<label for="login-password">Password</label>
<input id="login-password" name="password" type="password"
       autocomplete="current-password" autofocus>
<button id="login-submit" type="submit">Sign in</button>
</form></body></html>"""


def check_login(user: str, password: str, given_user: str, given_password: str) -> bool:
    """Constant-time comparison of both the user name and the password."""
    ok_user = hmac.compare_digest(given_user.encode(), user.encode())
    ok_pass = hmac.compare_digest(given_password.encode(), password.encode())
    return ok_user and ok_pass


def current_user() -> str | None:
    """The signed-in user of the current request, or None outside a request."""
    if not flask.has_request_context():
        return None
    return flask.g.get("kmta_user")


@dataclass
class _Session:
    user: str
    created: float
    seen: float


class Sessions:
    """Sessions by random id, with an idle timeout and a maximum age; at most ``limit`` are
    kept (the oldest go first). Thread-safe: the WSGI server runs requests in threads."""

    def __init__(self, idle: float, max_age: float, clock: Callable[[], float],
                 limit: int = 10_000) -> None:
        self._idle, self._max_age, self._clock, self._limit = idle, max_age, clock, limit
        self._by_id: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, user: str) -> str:
        sid = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._by_id[sid] = _Session(user, now, now)
            while len(self._by_id) > self._limit:
                self._by_id.popitem(last=False)
        return sid

    def user(self, sid: str | None) -> str | None:
        """The user of a live session (and mark it used), or None."""
        if not sid:
            return None
        now = self._clock()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if now - s.seen > self._idle or now - s.created > self._max_age:
                del self._by_id[sid]
                return None
            s.seen = now
            return s.user

    def revoke(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def __len__(self) -> int:
        return len(self._by_id)


class LoginLimiter:
    """At most ``attempts`` failed sign-ins per client in any ``window`` seconds. A refused
    attempt does not count (it is not checked), a successful sign-in clears the client's
    record; at most ``limit`` clients are tracked (the least recent are forgotten)."""

    def __init__(self, attempts: int, window: float, limit: int = 100_000) -> None:
        self.attempts, self.window, self._limit = attempts, window, limit
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return 0.0
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._failures[client]
                return 0.0
            if len(times) < self.attempts:
                return 0.0
            return times[-self.attempts] + self.window - now

    def failed(self, client: str, now: float) -> None:
        with self._lock:
            times = self._failures.pop(client, None) or deque(maxlen=self.attempts)
            times.append(now)
            self._failures[client] = times  # most recent last
            while len(self._failures) > self._limit:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


class _CookieSession(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure when the request came over HTTPS (or always)."""

    def __init__(self, always_secure: bool) -> None:
        self.always_secure = always_secure

    def get_cookie_secure(self, app: flask.Flask) -> bool:
        return self.always_secure or (flask.has_request_context() and flask.request.is_secure)


def install_login(server: flask.Flask, *, user: str, password: str,
                  settings: DashboardConfig | None = None,
                  clock: Callable[[], float] = time.time) -> Sessions:
    """Add /login and /logout and a guard on every other route; returns the session store."""
    cfg = settings or DashboardConfig()
    server.secret_key = secrets.token_hex(32)  # new per process: a restart signs everyone out
    server.config.update(SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_HTTPONLY=True,
                         SESSION_COOKIE_SAMESITE="Lax")
    server.session_interface = _CookieSession(cfg.secure_cookie == "always")
    if cfg.proxy_hops:
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=cfg.proxy_hops,  # type: ignore[method-assign]
                                   x_proto=cfg.proxy_hops)
    sessions = Sessions(cfg.session_idle_seconds, cfg.session_max_seconds, clock)
    limiter = LoginLimiter(cfg.login_attempts, cfg.login_window_seconds)

    def page(error: str = "", status: int = 200) -> flask.Response:
        err = f'<div class="error" id="login-error">{html.escape(error)}</div>' if error else ""
        return flask.Response(
            _PAGE.format(error=err, user=html.escape(user)), status=status, mimetype="text/html"
        )

    @server.route("/login", methods=["GET", "POST"])
    def login() -> flask.Response:
        if flask.request.method == "GET":
            return page()
        client = flask.request.remote_addr or "?"
        now = clock()
        wait = limiter.retry_after(client, now)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            r = page(f"Too many failed sign-ins from your address: try again in {seconds} s.",
                     429)
            r.headers["Retry-After"] = str(seconds)
            return r
        given_user = flask.request.form.get("username", "") or user
        given_password = flask.request.form.get("password", "")
        if not check_login(user, password, given_user, given_password):
            limiter.failed(client, now)
            return page("Wrong user name or password.", 401)
        limiter.succeeded(client)
        sessions.revoke(flask.session.get("sid"))
        flask.session.clear()  # a fresh id at sign-in: no session fixation
        flask.session["sid"] = sessions.create(user)
        return flask.redirect("/")

    @server.route("/logout", methods=["GET", "POST"])
    def logout() -> flask.Response:
        sessions.revoke(flask.session.get("sid"))
        flask.session.clear()
        return flask.redirect("/login")

    @server.before_request
    def guard() -> flask.Response | None:
        flask.g.kmta_user = sessions.user(flask.session.get("sid"))
        path = flask.request.path
        if path.startswith(PUBLIC_PREFIXES) or flask.g.kmta_user:
            return None
        if path.startswith(("/_dash", "/api/")):
            return flask.Response('{"error":"login required"}', 401, mimetype="application/json")
        return flask.redirect("/login")

    return sessions
