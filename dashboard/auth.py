"""Password login for the dashboard: a Flask session cookie guards every route but the login
page and static assets."""

from __future__ import annotations

import hmac
import html
import secrets

import flask

__all__ = ["PUBLIC_PREFIXES", "check_login", "current_user", "install_login"]

# Dash's JS bundles and the favicon carry no data; everything else needs a session.
PUBLIC_PREFIXES = ("/login", "/assets/", "/_dash-component-suites/", "/_favicon.ico")

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
<input id="login-password" name="password" type="password" autocomplete="current-password" autofocus>
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
    return flask.session.get("user")


def install_login(server: flask.Flask, *, user: str, password: str) -> None:
    """Add /login and /logout and a guard on every other route."""
    server.secret_key = secrets.token_hex(32)  # new per process: a restart signs everyone out
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")

    def page(error: str = "", status: int = 200) -> flask.Response:
        err = f'<div class="error" id="login-error">{html.escape(error)}</div>' if error else ""
        return flask.Response(
            _PAGE.format(error=err, user=html.escape(user)), status=status, mimetype="text/html"
        )

    @server.route("/login", methods=["GET", "POST"])
    def login() -> flask.Response:
        if flask.request.method == "GET":
            return page()
        given_user = flask.request.form.get("username", "") or user
        given_password = flask.request.form.get("password", "")
        if not check_login(user, password, given_user, given_password):
            return page("Wrong user name or password.", 401)
        flask.session.clear()
        flask.session["user"] = user
        return flask.redirect("/")

    @server.route("/logout")
    def logout() -> flask.Response:
        flask.session.clear()
        return flask.redirect("/login")

    @server.before_request
    def guard() -> flask.Response | None:
        path = flask.request.path
        if path.startswith(PUBLIC_PREFIXES) or flask.session.get("user"):
            return None
        if path.startswith(("/_dash", "/api/")):
            return flask.Response('{"error":"login required"}', 401, mimetype="application/json")
        return flask.redirect("/login")
