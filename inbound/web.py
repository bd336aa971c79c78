"""``kmta unsubscribe``: the RFC 8058 one-click endpoint behind ``[unsubscribe] base_url``.

* ``POST /u/<token>`` with ``List-Unsubscribe=One-Click`` in the body (form-urlencoded or
  multipart, RFC 8058 §3.1), as Gmail and Yahoo send it: the ``unsubscribe`` event and the
  suppression record are on Kafka (acks=all) before the 200;
* ``GET /u/<token>``: a small page that names the address and list and asks to confirm
  (a GET never unsubscribes: link scanners and prefetchers follow links);
* a forged or garbled token: 403 and nothing written;
* ``GET /healthz``.

aiohttp (already a dependency of faust), so the Kafka producer shares the server's loop.
"""
from __future__ import annotations

import html
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from kmta.config import Config
from kmta.pipeline.feedback import feedback_outs, recipient_domain
from kmta.pipeline.feedbackisp import FeedbackIsps
from kmta.pipeline.outputs import write
from kmta.policy.inbound import UNSUBSCRIBE, Feedback
from kmta.policy.kb import KnowledgeBase
from kmta.policy.suppression import unsubscribe_scope
from kmta.policy.unsubscribe import Unsubscribe, read_token

log = logging.getLogger(__name__)

__all__ = ["make_app"]

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1rem}}</style></head><body><h1>{title}</h1>{body}
</body></html>"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(text=_PAGE.format(title=html.escape(title), body=body), status=status,
                        content_type="text/html", headers={"Cache-Control": "no-store",
                                                           "X-Robots-Tag": "noindex"})


def make_app(config: Config, kb: KnowledgeBase, producer: Any, node: str,
             isps: FeedbackIsps | None = None) -> web.Application:
    """``isps``: the recipient domain's ISP by MX for the ``unsubscribe`` event (without it,
    a member domain's ISP or the domain itself)."""
    secret = config.unsubscribe.secret
    if secret is None:
        raise ValueError("[unsubscribe] secret is not set")
    key = secret.get_secret_value().encode()
    stats = {"unsubscribed": 0, "refused": 0}

    def token_of(request: web.Request) -> Unsubscribe | None:
        u = read_token(key, request.match_info["token"])
        if u is None:
            stats["refused"] += 1
            log.warning("unsubscribe: forged or garbled token from %s", request.remote)
        return u

    def what(u: Unsubscribe) -> str:
        scope, value = unsubscribe_scope(config.unsubscribe.scope, u.list, u.domain)
        whence = {"campaign": f" from <b>{html.escape(value or '')}</b>",
                  "domain": f" from all mail of <b>{html.escape(value or '')}</b>",
                  "global": " from all our mail"}[scope]
        return f"<b>{html.escape(u.address)}</b>{whence}"

    async def unsubscribe(u: Unsubscribe, method: str) -> None:
        fb = Feedback(UNSUBSCRIBE, u.id, u.address, "token", hard=True,
                      response=f"unsubscribed ({method})", category="unsubscribe",
                      campaign=u.list, domain=u.domain,
                      detail={"method": method, **({"list": u.list} if u.list else {})})
        domain = recipient_domain(fb)
        isp = (await isps.resolve([domain])).get(domain) if isps else None
        now = time.time()
        await write(producer, feedback_outs(config, kb, fb, now, node, now, isp))
        stats["unsubscribed"] += 1

    async def get(request: web.Request) -> web.Response:
        u = token_of(request)
        if u is None:
            return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 403)
        form = (f'<form method="post"><input type="hidden" name="confirm" value="yes">'
                f"<p>Unsubscribe {what(u)}?</p><button type=submit>Unsubscribe</button></form>")
        return _page("Unsubscribe", form)

    async def post(request: web.Request) -> web.Response:
        u = token_of(request)
        if u is None:
            return web.Response(text="forged or invalid token\n", status=403)
        data = await request.post()
        if data.get("List-Unsubscribe") == "One-Click":
            method = "one-click"
        elif data.get("confirm") == "yes":
            method = "page"
        else:
            return web.Response(text="expected List-Unsubscribe=One-Click (RFC 8058)\n",
                                status=400)
        try:
            await unsubscribe(u, method)
        except Exception as e:  # noqa: BLE001 - broker down: the client may retry
            log.warning("unsubscribe: could not write: %s", e)
            return web.Response(text="temporarily unavailable, try again\n", status=503)
        if method == "page":
            return _page("Unsubscribed", f"<p>{what(u)} is unsubscribed.</p>")
        return web.Response(text="unsubscribed\n")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **stats})

    # the path of base_url, for a proxy that passes it on (https://host/unsub/u/<token>)
    prefix = urlsplit(config.unsubscribe.base_url or "https://x/").path.rstrip("/")
    app = web.Application(client_max_size=64 * 1024)
    routes = [web.get("/healthz", health)]
    for p in dict.fromkeys((prefix, "")):
        routes += [web.get(f"{p}/u/{{token}}", get), web.post(f"{p}/u/{{token}}", post)]
    app.add_routes(routes)
    app["stats"] = stats
    return app
