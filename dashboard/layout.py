"""The dashboard page. Element ids are stable: browser tests and operators' scripts use them."""

from __future__ import annotations

import warnings
from typing import Any

from dash import dash_table, dcc, html
from dash.dash_table.Format import Format, Scheme

from dashboard.charts import REPUTATION_SCOPES, REPUTATION_WINDOWS

__all__ = ["ISP_COLUMNS", "TOTAL_KEYS", "build_layout"]

TOTAL_KEYS = (
    "accepted",
    "queued",
    "deferred",
    "delivered",
    "bounced",
    "expired",
    "suppressed",
    "cancelled",
    "rejected",
)

_pct = {"type": "numeric", "format": Format(precision=1, scheme=Scheme.percentage)}
_num = {"type": "numeric"}
_pct2 = {"type": "numeric", "format": Format(precision=2, scheme=Scheme.percentage)}

ISP_COLUMNS = [
    {"id": "isp", "name": "ISP"},
    dict(id="queued", name="Queued", **_num),
    dict(id="in_flight", name="In flight", **_num),
    dict(id="deferred_waiting", name="Waiting retry", **_num),
    dict(id="delivered", name="Delivered", **_num),
    dict(id="bounced", name="Bounced", **_num),
    {"id": "bounce_categories", "name": "Bounces by category"},
    dict(id="async_bounce", name="Late bounces", **_num),
    dict(id="complaint", name="Complaints", **_num),
    dict(id="unsubscribe", name="Unsubscribes", **_num),
    dict(id="suppressed", name="Suppressed", **_num),
    dict(id="expired", name="Expired", **_num),
    dict(id="cancelled", name="Cancelled", **_num),
    dict(id="rejected", name="Rejected", **_num),
    {"id": "lock", "name": "Lock"},
    {"id": "lock_reply", "name": "Lock reply"},
    {"id": "paused", "name": "Paused"},
    {"id": "holds", "name": "Reputation holds (kmta resume ISP --hold KEY)"},
    dict(id="speed", name="Speed", **_num),
    {"id": "speed_bounds", "name": "Speed bounds"},
    {"id": "ip_speeds", "name": "Speed per source IP"},
    dict(id="connections", name="Connections", **_num),
    {"id": "last_reply", "name": "Last reply"},
    dict(id="success_rate", name="Success", **_pct),
]

NODE_COLUMNS = [
    {"id": "node", "name": "Node"},
    {"id": "status", "name": "Status"},
    {"id": "partitions", "name": "Partitions"},
    {"id": "isps", "name": "ISPs"},
    dict(id="in_flight", name="In flight", **_num),
    dict(id="connections", name="Connections", **_num),
    dict(id="throughput", name="Delivered/s", **_num),
    dict(id="heartbeat_age", name="Heartbeat age (s)", **_num),
]

DOMAIN_COLUMNS = [
    {"id": "domain", "name": "Sending domain"},
    {"id": "signing_now", "name": "Signing now"},
    {"id": "selectors", "name": "Selectors (configured)"},
    dict(id="signed", name="Signed", **_num),
    dict(id="unsigned", name="Unsigned", **_num),
    {"id": "seen", "name": "Signatures added (selector@domain: messages)"},
]

CAMPAIGN_COLUMNS = [{"id": "campaign", "name": "Campaign"}] + [
    dict(id=k, name=k.capitalize(), **_num)
    for k in (
        "total",
        "queued",
        "deferred",
        "delivered",
        "bounced",
        "expired",
        "suppressed",
        "cancelled",
        "rejected",
        "async_bounce",
        "complaint",
        "unsubscribe",
    )
]

REPUTATION_COLUMNS = [{"id": "key", "name": "ISP / sending domain / campaign"}] + [
    dict(id=f"{k}_{w}", name=f"{n} {w}", **(_num if k == "delivered" else _pct2))
    for w in ("24h", "7d")
    for k, n in (("delivered", "Delivered"), ("complaint", "Complaints"),
                 ("hard_bounce", "Hard bounces"), ("unsubscribe", "Unsubscribes"))
] + [{"id": "over", "name": "Over the complaint limit"},
      {"id": "held", "name": "Held by the brain (complaint rule)"}]

WARMUP_COLUMNS = [
    {"id": "source_ip", "name": "Source IP"},
    {"id": "isp", "name": "ISP"},
    {"id": "day", "name": "Warm-up day"},
    {"id": "today", "name": "Today (sent / cap)"},
    {"id": "used_pct", "name": "Today used %", "type": "numeric"},
    {"id": "hour", "name": "This hour (sent / cap)"},
    {"id": "throttles_today", "name": "Throttles today", "type": "numeric"},
    {"id": "clean_days", "name": "Clean days", "type": "numeric"},
    {"id": "step_backs", "name": "Step-backs", "type": "numeric"},
]
SUPPRESSION_PAGE = 20  # records a page of the suppression table

SUPPRESSION_COLUMNS = [
    {"id": "address", "name": "Address"},
    {"id": "scope", "name": "Scope"},
    {"id": "reason", "name": "Reason"},
    {"id": "category", "name": "Category"},
    {"id": "detail", "name": "Detail"},
    {"id": "message", "name": "Message id"},
    {"id": "by", "name": "By"},
    {"id": "at_text", "name": "Since"},
]

AUDIT_COLUMNS = [
    {"id": "time", "name": "When"},
    {"id": "actor", "name": "Who"},
    {"id": "action", "name": "What"},
    {"id": "isp", "name": "ISP"},
    {"id": "source_ip", "name": "Source IP"},
    {"id": "applied", "name": "Applied"},
    {"id": "error", "name": "Error"},
    {"id": "reason", "name": "Reason"},
    {"id": "rules", "name": "Rules"},
]

_CELL = {
    "fontFamily": "system-ui, sans-serif",
    "fontSize": 13,
    "padding": "4px 8px",
    "whiteSpace": "normal",
    "height": "auto",
    "maxWidth": 320,
    "textAlign": "left",
}
_HEADER = {"fontWeight": "bold", "backgroundColor": "#eef1f4"}
_SECTION = {
    "background": "#fff",
    "padding": "12px 16px",
    "margin": "12px 0",
    "borderRadius": 6,
    "boxShadow": "0 1px 4px #0001",
}
_BTN = {"marginRight": 8, "padding": "6px 14px"}


def _table(id_: str, columns: list[dict], **kw: object) -> dash_table.DataTable:
    # Dash 4 deprecates DataTable in favour of dash-ag-grid (an extra package); it still works.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"\s*The dash_table.DataTable will be removed", DeprecationWarning
        )
        return _new_table(id_, columns, **kw)


def _new_table(id_: str, columns: list[dict], **kw: object) -> dash_table.DataTable:
    return dash_table.DataTable(
        id=id_,
        columns=columns,
        data=[],
        sort_action=kw.pop("sort_action", "native"),
        filter_action=kw.pop("filter_action", "native"),
        page_size=kw.pop("page_size", 50),
        style_cell=_CELL,
        style_header=_HEADER,
        style_table={"overflowX": "auto"},
        **kw,
    )


def _stat(key: str) -> html.Div:
    return html.Div(
        [
            html.Div(key.capitalize(), style={"fontSize": 11, "color": "#667"}),
            html.Div("0", id=f"total-{key}", style={"fontSize": 20, "fontWeight": 600}),
        ],
        style={"marginRight": 24},
    )


def reply_explainer() -> list[Any]:
    """The ISP view's reply explainer: paste a reply (or leave empty for the selected ISP's
    latest) and see its category, bounce/defer, suppression and the rule that decided."""
    return [
        html.H5("Explain a reply"),
        dcc.Textarea(
            id="reply-text",
            placeholder="550 5.1.1 The email account that you tried to reach does not exist "
            "(empty: the selected ISP's latest reply)",
            style={"width": "100%", "height": 48, "fontFamily": "monospace"},
        ),
        html.Button("Explain", id="btn-explain", n_clicks=0, style=_BTN),
        html.Pre(id="reply-explain", style={"background": "#f6f8fa", "padding": 8,
                                            "fontSize": 12, "whiteSpace": "pre-wrap"}),
    ]


def build_layout(user: str) -> html.Div:
    return html.Div(
        [
            dcc.Interval(id="refresh", interval=2000, n_intervals=0),
            html.Div(
                [
                    html.H2("kmta", style={"margin": "0 24px 0 0"}),
                    html.Div(
                        [_stat(k) for k in TOTAL_KEYS], id="totals", style={"display": "flex"}
                    ),
                    html.Div(
                        [
                            html.Span(f"signed in as {user} ", id="user-name"),
                            html.A("sign out", href="/logout", id="logout"),
                        ],
                        style={"marginLeft": "auto", "fontSize": 13},
                    ),
                ],
                style=dict(display="flex", alignItems="center", **_SECTION),
            ),
            html.Div(
                [
                    html.H4("ISPs", style={"marginTop": 0}),
                    _table(
                        "isp-table",
                        ISP_COLUMNS,
                        style_data_conditional=[
                            {
                                "if": {"filter_query": '{lock} contains "locked"'},
                                "backgroundColor": "#fde2e2",
                            },
                            {
                                "if": {"filter_query": '{paused} = "yes"'},
                                "backgroundColor": "#fff4cc",
                            },
                        ],
                    ),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.H4("Actions", style={"marginTop": 0}),
                    html.Div(
                        [
                            dcc.Dropdown(
                                id="isp-select",
                                options=[],
                                placeholder="select an ISP",
                                style={"width": 260},
                            ),
                            dcc.Input(
                                id="source-ip",
                                type="text",
                                placeholder="source IP (optional)",
                                debounce=False,
                                style={"marginLeft": 8, "width": 180},
                            ),
                            dcc.Input(
                                id="action-reason",
                                type="text",
                                placeholder="reason (optional)",
                                style={"marginLeft": 8, "width": 240},
                            ),
                        ],
                        style={"display": "flex", "alignItems": "center", "marginBottom": 8},
                    ),
                    html.Div(
                        [
                            html.Button("Pause", id="btn-pause", n_clicks=0, style=_BTN),
                            html.Button("Resume", id="btn-resume", n_clicks=0, style=_BTN),
                            html.Button("Unlock", id="btn-unlock", n_clicks=0, style=_BTN),
                            html.Button(
                                "Clear queue",
                                id="btn-clear",
                                n_clicks=0,
                                style=dict(_BTN, color="#b00020"),
                            ),
                        ]
                    ),
                    dcc.ConfirmDialog(id="confirm-clear", message=""),
                    html.Div(id="action-status", style={"marginTop": 8}),
                    html.H5("Rules editor"),
                    html.Div(
                        [
                            html.Div(
                                [
                                    dcc.Textarea(
                                        id="rules-text",
                                        placeholder="[speed]\nmax = 200\n\n# or JSON: "
                                        '{"speed": {"max": 200}}',
                                        style={
                                            "width": "100%",
                                            "height": 160,
                                            "fontFamily": "monospace",
                                        },
                                    ),
                                    html.Button(
                                        "Apply rule", id="btn-rules-apply", n_clicks=0, style=_BTN
                                    ),
                                    html.Div(id="rules-status", style={"marginTop": 8}),
                                ],
                                style={"flex": 1, "marginRight": 16},
                            ),
                            html.Div(
                                [
                                    html.Div(
                                        "Effective rule", style={"fontSize": 12, "color": "#667"}
                                    ),
                                    html.Pre(
                                        id="rules-effective",
                                        style={
                                            "maxHeight": 260,
                                            "overflow": "auto",
                                            "background": "#f6f8fa",
                                            "padding": 8,
                                            "fontSize": 12,
                                        },
                                    ),
                                ],
                                style={"flex": 1},
                            ),
                        ],
                        style={"display": "flex"},
                    ),
                    *reply_explainer(),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.Div(
                        [
                            html.H4("Charts", style={"margin": "0 16px 0 0"}),
                            dcc.RadioItems(
                                id="range-select",
                                value=3600,
                                inline=True,
                                options=[
                                    {"label": " 5 min ", "value": 300},
                                    {"label": " 1 h ", "value": 3600},
                                    {"label": " 24 h ", "value": 86400},
                                ],
                            ),
                        ],
                        style={"display": "flex", "alignItems": "center"},
                    ),
                    html.Div(
                        [dcc.Graph(id="chart-success"), dcc.Graph(id="chart-speed")],
                        style={"display": "grid", "gridTemplateColumns": "1fr 1fr", "gap": 8},
                    ),
                    html.Div(
                        [dcc.Graph(id="chart-categories"), dcc.Graph(id="chart-throughput")],
                        style={"display": "grid", "gridTemplateColumns": "1fr 1fr", "gap": 8},
                    ),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.H4("Sender nodes", style={"marginTop": 0}),
                    _table(
                        "nodes-table",
                        NODE_COLUMNS,
                        style_data_conditional=[
                            {"if": {"filter_query": '{status} != "ok"'}, "color": "#999"}
                        ],
                    ),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.H4("Sending domains (DKIM)", style={"marginTop": 0}),
                    _table(
                        "domains-table",
                        DOMAIN_COLUMNS,
                        style_data_conditional=[
                            {"if": {"filter_query": '{signing_now} != "yes"'},
                             "color": "#b00"}
                        ],
                    ),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.H4("Campaigns", style={"marginTop": 0}),
                    _table("campaigns-table", CAMPAIGN_COLUMNS),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.H4("IP warm-up (new source IPs, per ISP, UTC days)",
                            style={"marginTop": 0}),
                    _table("warmup-table", WARMUP_COLUMNS, page_size=15,
                           style_data_conditional=[
                               {"if": {"filter_query": "{used_pct} >= 100"}, "color": "#b06000"}]),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.Div(
                        [
                            html.H4("Reputation (rolling rates per delivered message)",
                                    style={"margin": "0 16px 0 0"}),
                            dcc.RadioItems(id="rep-window", value="24h", inline=True,
                                           options=[{"label": f" {v} ", "value": k}
                                                    for k, v in REPUTATION_WINDOWS.items()],
                                           style={"marginRight": 16}),
                            dcc.RadioItems(id="rep-scope", value="isp", inline=True,
                                           options=[{"label": f" {v} ", "value": k}
                                                    for k, v in REPUTATION_SCOPES.items()]),
                        ],
                        style={"display": "flex", "alignItems": "center", "flexWrap": "wrap"},
                    ),
                    # the same rows as the table below (Board.reputation_rows), one callback;
                    # the history from the same hourly counts (Board.reputation_history)
                    html.Div(
                        [dcc.Graph(id="chart-reputation"),
                         dcc.Graph(id="chart-reputation-history")],
                        style={"display": "grid", "gridTemplateColumns": "1fr 1fr", "gap": 8},
                    ),
                    _table("reputation-table", REPUTATION_COLUMNS, page_size=15,
                           style_data_conditional=[
                               {"if": {"filter_query": "!({over} is blank)"}, "color": "#b00020"},
                               {"if": {"filter_query": "!({held} is blank)", "column_id": "held"},
                                "color": "#b00020", "fontWeight": "bold"}]),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.H4("Suppression list", style={"marginTop": 0}),
                    html.Div(id="supp-counts", style={"display": "flex", "flexWrap": "wrap",
                                                      "marginBottom": 8}),
                    html.Div(
                        [
                            dcc.Input(id="supp-search", type="search", debounce=True,
                                      placeholder="address prefix, or @domain",
                                      style={"marginRight": 8, "width": 280}),
                            dcc.Input(id="supp-reason", type="text",
                                      placeholder="why remove (kept in the audit log)",
                                      style={"marginRight": 8, "width": 280}),
                            html.Button("Remove selected", id="btn-supp-remove"),
                        ],
                        style={"marginBottom": 8},
                    ),
                    html.Div(id="supp-status"),
                    html.Div(id="supp-matches", style={"fontSize": 12, "color": "#667"}),
                    # pages come from the board's store (10 M records are never all sent)
                    _table("supp-table", SUPPRESSION_COLUMNS, page_size=SUPPRESSION_PAGE,
                           row_selectable="single", page_action="custom", page_current=0,
                           page_count=1, sort_action="none", filter_action="none"),
                ],
                style=_SECTION,
            ),
            html.Div(
                [
                    html.H4("Audit log", style={"marginTop": 0}),
                    _table(
                        "audit-table",
                        AUDIT_COLUMNS,
                        page_size=20,
                        style_data_conditional=[
                            {"if": {"filter_query": '{applied} = "NO"'}, "color": "#b00020"}
                        ],
                    ),
                ],
                style=_SECTION,
            ),
        ],
        style={
            "background": "#f4f6f8",
            "padding": "8px 16px",
            "fontFamily": "system-ui, sans-serif",
        },
    )
