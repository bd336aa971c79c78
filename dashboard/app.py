"""The Dash app: ``create_app(config, board, controller)``.

Callback bodies live on :class:`Handlers` (``app.kmta``) as plain methods, so tests call them
with a fake controller; the Dash callbacks only unpack inputs, find the signed-in user and call
them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import dash
import flask
from dash import Input, Output, State, html

from dashboard import charts
from dashboard import rules as rules_mod
from dashboard.auth import current_user, install_login
from dashboard.layout import SUPPRESSION_PAGE, TOTAL_KEYS, build_layout
from dashboard.model import Board
from dashboard.replies import explain_text
from kmta.config import Config
from kmta.errors import ConfigError, KmtaError
from kmta.pipeline.control import make_command
from kmta.pipeline.rules import load_kb
from kmta.pipeline.suppression import change_outs
from kmta.pipeline.suppressionstore import COUNT_CAP
from kmta.policy.signing import selector_summary
from schemas.control import ControlAction, ControlCommand

__all__ = ["Controller", "Handlers", "create_app", "resolve_password"]

_TRIGGERS = {
    "btn-pause": ControlAction.PAUSE,
    "btn-resume": ControlAction.RESUME,
    "btn-unlock": ControlAction.UNLOCK,
    "confirm-clear": ControlAction.CLEAR,
}
_MAX_CHART_ISPS = 8
_MAX_HISTORY = 8  # scopes in the reputation history chart
_REPUTATION_SPAN = {"24h": 86400.0, "7d": 7 * 86400.0}


class Controller(Protocol):
    """Where the dashboard sends operator commands (the Kafka control topic in production)."""

    def send(self, cmd: ControlCommand) -> None: ...

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None: ...


def resolve_password(config: Config, password: str | None) -> str:
    """The login password: the explicit one (demo mode passes a generated one) or the configured
    one. Refuses to run without one."""
    if password:
        return password
    if config.dashboard.password is not None and config.dashboard.password.get_secret_value():
        return config.dashboard.password.get_secret_value()
    if config.dashboard.mode == "production":
        raise ConfigError(
            "dashboard.password is not set: production mode refuses to start without one "
            '(set [dashboard] password in the config, or mode = "demo" for a generated one)'
        )
    raise ConfigError("demo mode: the caller must pass a generated dashboard password")


def _status(ok: bool, text: str) -> html.Div:
    return html.Div(
        text,
        className="status-ok" if ok else "status-error",
        style={"color": "#1b5e20" if ok else "#b00020", "whiteSpace": "pre-wrap"},
    )


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


class Handlers:
    """What the callbacks do, free of Dash: testable with a fake controller and clock."""

    def __init__(
        self,
        board: Board,
        controller: Controller,
        *,
        secret: Any,
        clock: Callable[[], float],
        kb_loader: Callable[[], Any],
        domains: Callable[[float], list[dict[str, Any]]] = lambda now: [],
        config: Config | None = None,
    ) -> None:
        self._config = config or Config()
        self.board = board
        self._domains = domains
        self.controller = controller
        self.secret = secret
        self.clock = clock
        self._kb_loader = kb_loader
        self._kb: Any = None
        self._kb_loaded = False

    @property
    def kb(self) -> Any:
        if not self._kb_loaded:
            self._kb = self._kb_loader()  # loaded once; may be None while kb.py is missing
            self._kb_loaded = True
        return self._kb

    # ------------------------------------------------------------------ actions
    def _send(self, action: ControlAction, isp: str, actor: str, **kw: Any) -> html.Div:
        try:
            cmd = make_command(action, isp, actor, now=self.clock(), secret=self.secret, **kw)
            self.controller.send(cmd)
        except KmtaError as e:
            return _status(False, f"{action.value} {isp}: not sent: {e}")
        where = f" ({kw['source_ip']})" if kw.get("source_ip") else ""
        return _status(
            True,
            f"sent {action.value} for {isp}{where} as {actor} (id {cmd.id[:8]}); "
            "see the audit log for the result",
        )

    def action(
        self,
        trigger: str | None,
        isp: str | None,
        source_ip: str | None,
        reason: str | None,
        actor: str,
    ) -> html.Div:
        """Pause / resume / unlock / clear (after confirmation) for the selected ISP."""
        action = _TRIGGERS.get(trigger or "")
        if action is None:
            return _status(False, f"unknown action {trigger!r}")
        if not isp:
            return _status(False, "select an ISP first")
        return self._send(
            action,
            isp,
            actor,
            source_ip=(source_ip or "").strip() or None,
            reason=(reason or "").strip() or None,
        )

    def confirm_clear(self, isp: str | None) -> tuple[bool, str]:
        """Whether to show the confirm dialog, and its text."""
        if not isp:
            return False, ""
        return True, (
            f"Cancel every queued and waiting message for {isp}?\n"
            "They end as 'cancelled'; this cannot be undone."
        )

    def rules(
        self, trigger: str | None, isp: str | None, text: str | None, actor: str
    ) -> tuple[html.Div | str, str]:
        """Apply: parse, validate, then send set_rules. Selecting an ISP shows its effective rule.
        Returns (status, effective rule text)."""
        if not isp:
            return ("" if trigger == "isp-select" else _status(False, "select an ISP first")), ""
        st = self.board.state(isp)
        live = st.rules if st else None
        if trigger != "btn-rules-apply":
            return "", self._effective_text(isp, live)
        try:
            rules = rules_mod.parse_rules_text(text)
            rules_mod.validate_rules(isp, rules, self.kb)
        except (KmtaError, ValueError) as e:
            return _status(False, f"rule not valid, nothing sent: {e}"), self._effective_text(
                isp, live
            )
        status = self._send(ControlAction.SET_RULES, isp, actor, rules=rules)
        return status, self._effective_text(isp, rules)

    def _effective_text(self, isp: str, live: dict[str, Any] | None) -> str:
        try:
            eff = rules_mod.effective_rule(isp, live, self.kb)
        except (KmtaError, ValueError) as e:
            return f"(cannot compute the effective rule: {e})"
        if eff is None:
            return json.dumps({"live edits": live}, indent=2) if live else "(no live edits)"
        return json.dumps(eff, indent=2, default=str)  # field order: sending, speed, retry...

    # ------------------------------------------------------------------ suppression
    def suppression_view(self, query: str | None, page: int | None = 0,
                         page_size: int = SUPPRESSION_PAGE) -> tuple[
                             list[Any], list[dict[str, Any]], int, int, str]:
        """Counts per reason (as small stat boxes), one page of the matching records, the
        page count, the page shown (clamped to the last) and how many match."""
        with self.board.lock:
            counts = self.board.suppression_counts()
            found = self.board.suppression_matches(query)
            pages = max(1, -(-found // page_size))
            page = min(max(0, page or 0), pages - 1)
            rows = self.board.suppression_rows(query, page_size, page * page_size)
        for r in rows:
            r["at_text"] = _when(r["at"])
        boxes = [html.Div([html.Div(k.replace("_", " "), style={"fontSize": 11, "color": "#667"}),
                           html.Div(f"{v:,}", style={"fontSize": 18, "fontWeight": 600})],
                          style={"marginRight": 24}) for k, v in counts.items()]
        more = "+" if found >= COUNT_CAP else ""
        return boxes, rows, pages, page, f"{found:,}{more} match" + ("" if found == 1 else "es")

    def remove_suppression(self, key: str | None, reason: str | None, actor: str) -> html.Div:
        """Lift one suppression: a tombstone under its key and an audit record with the
        operator and reason. A reason is required."""
        if not key:
            return _status(False, "select a record first")
        reason = (reason or "").strip()
        if not reason:
            return _status(False, "give a reason: it goes into the audit log")
        with self.board.lock:
            rec = self.board.suppression(key)
        if rec is None:
            return _status(False, f"{key} is not suppressed (any more)")
        try:
            for out in change_outs(self._config, "remove", key, rec, actor, self.clock(),
                                   reason):
                self.controller.send_raw(out.topic, out.key, out.value)
        except KmtaError as e:
            return _status(False, f"not removed: {e}")
        return _status(True, f"removed {key} as {actor}; see the audit log")

    # ------------------------------------------------------------------ refresh
    def explain(self, isp: str | None, text: str | None) -> str:
        """Explain a pasted reply, or the selected ISP's latest one, as the sender judges it."""
        internal = False
        if not (text or "").strip():
            if not isp:
                return ""
            last = self.board.last_reply(isp)
            if last is None:
                return f"no reply from {isp} yet: paste one to see what kmta makes of it"
            text, internal = last
        if self.kb is None:
            return "the knowledge base is not available"
        st = self.board.state(isp) if isp else None
        return explain_text(str(text), isp, self.kb, live=st.rules if st else None,
                            internal=internal)

    def reputation(self, window: str | None, scope: str | None
                   ) -> tuple[list[dict[str, Any]], Any, Any]:
        """The Reputation table's rows, and the charts drawn from those same rows (the bars)
        and the same hourly counts (the history), judged with the brain's ``[reputation]``
        limits."""
        rc = self._config.reputation
        window = window if window in charts.REPUTATION_WINDOWS else "24h"
        scope = scope if scope in charts.REPUTATION_SCOPES else "isp"
        now = self.clock()
        with self.board.lock:
            rows = self.board.reputation_rows(now, rc.complaint_limits, rc.min_delivered)
            keys = [r["key"] for r in charts.reputation_shown(rows, window, scope, _MAX_HISTORY)]
            span = _REPUTATION_SPAN[window]
            history = self.board.reputation_history(keys, now, span=span)
        return (rows, charts.reputation_figure(rows, window, scope),
                charts.reputation_history_figure(rows, history, window, scope, _MAX_HISTORY,
                                                 (now - span, now)))

    def tables(self) -> dict[str, Any]:
        now = self.clock()
        with self.board.lock:
            totals = self.board.totals()
            isp_rows = self.board.isp_rows(now)
            nodes = self.board.node_rows(now)
            campaigns = self.board.campaign_rows()
            audit = self.board.audit_rows()
            domains = self.board.signing_rows(self._domains(now))
        for r in isp_rows:
            r["id"] = r["isp"]
            if r["locked"]:
                r["lock"] = f"locked {int(r['lock_seconds_left'] or 0)}s: {r['lock_reason'] or ''}"
            else:
                r["lock"] = ""
            if r["locked_ips"]:
                r["lock"] = (
                    r["lock"] + " " if r["lock"] else ""
                ) + f"locked: {r['locked_ips']}"
            r["paused"] = (
                "yes" if r["paused"] else (f"only {r['paused_ips']}" if r["paused_ips"] else "")
            )
            lo, hi = r["speed_min"], r["speed_max"]
            r["speed_bounds"] = (f"{lo:g} - {hi:g}" if hi is not None else f">= {lo:g}"
                                 ) if lo is not None else ""
            r.pop("bounced_by_category", None)
        for r in audit:
            r["time"] = _when(r["time"])
            r["applied"] = "yes" if r["applied"] else "NO"
        for r in nodes:
            r["stale"] = "yes" if r["stale"] else ""
        return {
            "totals": totals,
            "isps": isp_rows,
            "nodes": nodes,
            "campaigns": campaigns,
            "audit": audit,
            "domains": domains,
            "options": [{"label": r["isp"], "value": r["isp"]} for r in isp_rows],
        }

    def status(self) -> dict[str, Any]:
        """``/api/status``: the same JSON as ``kmta status --json``, from this Board."""
        with self.board.lock:
            return self.board.snapshot(self.clock())

    def figures(self, range_s: int | None, isp: str | None) -> list[Any]:
        range_s = int(range_s or 3600)
        bucket = charts.RANGES.get(range_s, 60.0)
        now = self.clock()
        since = now - range_s
        with self.board.lock:
            rows = self.board.isp_rows(now)
            busiest = sorted(rows, key=lambda r: -(r["delivered"] + r["bounced"] + r["deferrals"]))
            shown = [isp] if isp else [r["isp"] for r in busiest[:_MAX_CHART_ISPS]]
            success = {i: self.board.success_series(i, since, bucket) for i in shown}
            speed = {i: self.board.speed_series(i, since) for i in shown}
            cats = self.board.category_counts(since)
            thr = self.board.throughput_series(since, bucket)
        return [
            charts.success_figure(success),
            charts.speed_figure(speed, now),
            charts.category_figure(cats),
            charts.throughput_figure(thr),
        ]


def create_app(
    config: Config,
    board: Board,
    controller: Controller,
    *,
    password: str | None = None,
    user: str = "admin",
    clock: Callable[[], float] = time.time,
    kb_loader: Callable[[], Any] | None = None,
) -> dash.Dash:
    """The dashboard, guarded by a password login. ``app.kmta`` holds the :class:`Handlers`."""
    secret_password = resolve_password(config, password)
    app = dash.Dash(__name__, title="kmta", update_title=None, suppress_callback_exceptions=False)
    app.kmta_sessions = install_login(  # type: ignore[attr-defined]
        app.server, user=user, password=secret_password, settings=config.dashboard, clock=clock
    )
    if kb_loader is None:

        def kb_loader() -> Any:
            return load_kb(config)

    handlers = Handlers(
        board, controller, secret=config.control.secret, clock=clock, kb_loader=kb_loader,
        domains=lambda now: [selector_summary(d.name, d.dkim, now) for d in config.domains],
        config=config,
    )
    app.kmta = handlers  # type: ignore[attr-defined]
    app.layout = lambda: build_layout(current_user() or user)

    def actor() -> str:
        return current_user() or user

    @app.server.route("/api/status")
    def _api_status() -> flask.Response:
        return flask.jsonify(handlers.status())

    @app.callback(
        [Output(f"total-{k}", "children") for k in TOTAL_KEYS]
        + [
            Output("isp-table", "data"),
            Output("isp-select", "options"),
            Output("nodes-table", "data"),
            Output("campaigns-table", "data"),
            Output("audit-table", "data"),
            Output("domains-table", "data"),
        ],
        Input("refresh", "n_intervals"),
    )
    def _refresh(_n: int) -> list[Any]:
        t = handlers.tables()
        return [f"{t['totals'].get(k, 0):,}" for k in TOTAL_KEYS] + [
            t["isps"],
            t["options"],
            t["nodes"],
            t["campaigns"],
            t["audit"],
            t["domains"],
        ]

    @app.callback(
        Output("chart-success", "figure"),
        Output("chart-speed", "figure"),
        Output("chart-categories", "figure"),
        Output("chart-throughput", "figure"),
        Input("refresh", "n_intervals"),
        Input("range-select", "value"),
        Input("isp-select", "value"),
    )
    def _charts(_n: int, range_s: int, isp: str | None) -> list[Any]:
        return handlers.figures(range_s, isp)

    @app.callback(
        Output("isp-select", "value"), Input("isp-table", "active_cell"), prevent_initial_call=True
    )
    def _select_row(cell: dict | None) -> Any:
        if not cell or not cell.get("row_id"):
            return dash.no_update
        return cell["row_id"]

    @app.callback(
        Output("confirm-clear", "displayed"),
        Output("confirm-clear", "message"),
        Input("btn-clear", "n_clicks"),
        State("isp-select", "value"),
        prevent_initial_call=True,
    )
    def _ask_clear(_n: int, isp: str | None) -> tuple[bool, str]:
        return handlers.confirm_clear(isp)

    @app.callback(
        Output("action-status", "children"),
        Input("btn-pause", "n_clicks"),
        Input("btn-resume", "n_clicks"),
        Input("btn-unlock", "n_clicks"),
        Input("confirm-clear", "submit_n_clicks"),
        State("isp-select", "value"),
        State("source-ip", "value"),
        State("action-reason", "value"),
        prevent_initial_call=True,
    )
    def _action(
        _p: int, _r: int, _u: int, _c: int, isp: str | None, ip: str | None, reason: str | None
    ) -> html.Div:
        return handlers.action(dash.ctx.triggered_id, isp, ip, reason, actor())

    @app.callback(
        Output("reply-explain", "children"),
        Input("btn-explain", "n_clicks"),
        Input("isp-select", "value"),
        State("reply-text", "value"),
    )
    def _explain(_n: int, isp: str | None, text: str | None) -> str:
        return handlers.explain(isp, text)

    @app.callback(
        Output("rules-status", "children"),
        Output("rules-effective", "children"),
        Input("btn-rules-apply", "n_clicks"),
        Input("isp-select", "value"),
        State("rules-text", "value"),
    )
    def _rules(_n: int, isp: str | None, text: str | None) -> tuple[Any, str]:
        return handlers.rules(dash.ctx.triggered_id, isp, text, actor())

    @app.callback(Output("warmup-table", "data"), Input("refresh", "n_intervals"))
    def _warmup(_n: int) -> list[dict[str, Any]]:
        with board.lock:
            return board.warmup_rows(clock())

    @app.callback(
        Output("reputation-table", "data"),
        Output("chart-reputation", "figure"),
        Output("chart-reputation-history", "figure"),
        Input("refresh", "n_intervals"),
        Input("rep-window", "value"),
        Input("rep-scope", "value"),
    )
    def _reputation(_n: int, window: str | None, scope: str | None) -> tuple[Any, ...]:
        return handlers.reputation(window, scope)

    @app.callback(
        Output("supp-counts", "children"),
        Output("supp-table", "data"),
        Output("supp-table", "page_count"),
        Output("supp-table", "page_current"),
        Output("supp-matches", "children"),
        Input("refresh", "n_intervals"),
        Input("supp-search", "value"),
        Input("supp-table", "page_current"),
    )
    def _suppression(_n: int, query: str | None, page: int | None) -> tuple[Any, ...]:
        # a new search starts at its first page
        first = dash.ctx.triggered_id == "supp-search"
        return handlers.suppression_view(query, 0 if first else page)

    @app.callback(
        Output("supp-status", "children"),
        Input("btn-supp-remove", "n_clicks"),
        State("supp-table", "selected_rows"),
        State("supp-table", "data"),
        State("supp-reason", "value"),
        prevent_initial_call=True,
    )
    def _supp_remove(_n: int, selected: list[int] | None, data: list[dict] | None,
                     reason: str | None) -> html.Div:
        row = (data or [])[selected[0]] if selected and data and selected[0] < len(data) else None
        return handlers.remove_suppression(row["id"] if row else None, reason, actor())

    return app
