"""Plotly figures from the Board's series (pure: data in, figure out)."""

from __future__ import annotations

import textwrap
from datetime import datetime
from typing import Any

import plotly.graph_objects as go

__all__ = [
    "RANGES",
    "REPUTATION_SCOPES",
    "REPUTATION_WINDOWS",
    "category_figure",
    "reputation_figure",
    "reputation_history_figure",
    "reputation_shown",
    "speed_figure",
    "success_figure",
    "throughput_figure",
]

# time-range selector value (seconds) -> bucket size (seconds)
RANGES: dict[int, float] = {300: 10.0, 3600: 60.0, 86400: 900.0}


def _t(ts: float) -> datetime:
    return datetime.fromtimestamp(ts)


def _layout(fig: go.Figure, title: str, ytitle: str, empty: bool,
            empty_text: str = "no data in this range") -> go.Figure:
    fig.update_layout(
        title=title,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        height=300,
        yaxis_title=ytitle,
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    if empty:
        fig.add_annotation(
            text=empty_text,
            showarrow=False,
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            font={"color": "#888"},
        )
    return fig


def success_figure(series: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """``series``: ISP -> Board.success_series rows."""
    fig = go.Figure()
    for isp, rows in series.items():
        pts = [(r["t"], r["rate"]) for r in rows if r["rate"] is not None]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[_t(t) for t, _ in pts],
                    y=[100 * r for _, r in pts],
                    mode="lines+markers",
                    name=isp,
                )
            )
    fig.update_yaxes(range=[0, 105])
    return _layout(fig, "Delivery success rate (% of attempts)", "%", not fig.data)


def speed_figure(series: dict[str, dict[str, list[Any]]], now: float) -> go.Figure:
    """``series``: ISP -> Board.speed_series; lines continue to ``now``; locks shaded."""
    fig = go.Figure()
    for isp, s in series.items():
        pts = list(s["points"])
        if pts:
            pts.append((now, pts[-1][1]))
            fig.add_trace(
                go.Scatter(
                    x=[_t(t) for t, _ in pts],
                    y=[v for _, v in pts],
                    mode="lines",
                    line_shape="hv",
                    name=isp,
                )
            )
        for start, end, label in s["locks"]:
            fig.add_vrect(
                x0=_t(start),
                x1=_t(min(end, now)),
                fillcolor="#d62728",
                opacity=0.15,
                line_width=0,
                annotation_text=f"{isp} locked: {label}",
                annotation_position="top left",
                annotation_font_size=10,
            )
    return _layout(fig, "Speed (messages per tact); locks shaded", "msgs/tact", not fig.data)


def category_figure(counts: dict[str, int]) -> go.Figure:
    fig = go.Figure()
    if counts:
        fig.add_trace(go.Bar(x=list(counts), y=list(counts.values()), marker_color="#ff7f0e"))
    return _layout(fig, "Reply categories (bounces and deferrals)", "replies", not counts)


def throughput_figure(rows: list[dict[str, Any]]) -> go.Figure:
    fig = go.Figure()
    if rows:
        x = [_t(r["t"]) for r in rows]
        for key, color in (
            ("delivered", "#2ca02c"),
            ("deferred", "#ffbf00"),
            ("bounced", "#d62728"),
            ("expired", "#7f7f7f"),
        ):
            fig.add_trace(go.Bar(x=x, y=[r[key] for r in rows], name=key, marker_color=color))
        fig.update_layout(barmode="stack")
    return _layout(fig, "Throughput (events per bucket)", "events", not rows)


# Board.reputation_rows "scope" -> what the selector calls it
REPUTATION_SCOPES: dict[str, str] = {
    "isp": "ISP",
    "domain": "Sending domain",
    "campaign": "Campaign",
    "isp_domain": "ISP x sending domain",
    "isp_campaign": "ISP x campaign",
}
REPUTATION_WINDOWS: dict[str, str] = {"24h": "24 h", "7d": "7 d"}
_RATE_TRACES = (
    ("complaint", "Complaints", "#d62728"),
    ("hard_bounce", "Hard bounces", "#ff7f0e"),
    ("unsubscribe", "Unsubscribes", "#1f77b4"),
)
HELD_MARK = "HELD "  # before a held scope's name (a pause sign is missing from common fonts)
_MAX_HOLD_NOTES = 5


def _rep_label(row: dict[str, Any]) -> str:
    name = f"{row['isp']} \u00b7 {row['name']}" if row["scope"].startswith("isp_") else row["name"]
    return HELD_MARK + name if row.get("held") else name


def _pct(rate: float | None) -> float | None:
    return None if rate is None else round(100 * rate, 4)


def reputation_shown(rows: list[dict[str, Any]], window: str, scope: str,
                     top: int) -> list[dict[str, Any]]:
    """The rows of ``scope`` a chart shows: every held one first, then the highest complaint
    rates over ``window``, ``top`` in all (more if more are held)."""
    mine = [r for r in rows if r["scope"] == scope]
    mine.sort(key=lambda r: (not r.get("held"), -(r[f"complaint_{window}"] or 0.0), r["key"]))
    held = [r for r in mine if r.get("held")]
    return held + [r for r in mine if not r.get("held")][: max(0, top - len(held))]


def reputation_figure(rows: list[dict[str, Any]], window: str = "24h", scope: str = "isp",
                      top: int = 20) -> go.Figure:
    """Grouped bars of the complaint, hard-bounce and unsubscribe rates (% of delivered) of
    one ``scope`` of ``Board.reputation_rows`` over ``window`` (``24h`` or ``7d``), the ISP's
    complaint limit as a mark on each ISP-scoped group, and the scopes the brain holds
    hatched, outlined and annotated with its reason. Held scopes first, then the highest
    complaint rates, at most ``top`` groups."""
    fig = go.Figure()
    mine = [r for r in rows if r["scope"] == scope]
    shown = reputation_shown(rows, window, scope, top)
    held = [r for r in mine if r.get("held")]
    x = [_rep_label(r) for r in shown]
    for kind, name, color in _RATE_TRACES:
        fig.add_trace(go.Bar(
            x=x, y=[_pct(r[f"{kind}_{window}"]) for r in shown], name=name, marker={
                "color": color,
                "pattern": {"shape": ["/" if r.get("held") else "" for r in shown]},
                "line": {"color": ["#b00020" if r.get("held") else color for r in shown],
                         "width": [2 if r.get("held") else 0 for r in shown]}},
            customdata=[[r["key"], r[f"delivered_{window}"], r.get("held") or ""]
                        for r in shown],
            hovertemplate=(f"%{{customdata[0]}}<br>{name}: %{{y:.2f}} %"
                           "<br>delivered: %{customdata[1]}<br>%{customdata[2]}"
                           "<extra></extra>")))
    if any(r["limit"] is not None for r in shown):
        fig.add_trace(go.Scatter(
            x=x, y=[_pct(r["limit"]) for r in shown], mode="markers", name="complaint limit",
            marker={"symbol": "line-ew-open", "size": 36, "color": "#b00020",
                    "line": {"width": 3, "color": "#b00020"}},
            hovertemplate="complaint limit %{y:.2f} %<extra></extra>"))
    top_y = max([y for t in fig.data for y in (t.y or ()) if y is not None], default=0.0)
    for r, label in list(zip(shown, x, strict=True))[:_MAX_HOLD_NOTES]:
        if r.get("held"):
            fig.add_annotation(
                x=label, y=top_y, yanchor="bottom", showarrow=False, font={
                    "size": 10, "color": "#b00020"},
                text="<br>".join(textwrap.wrap("held: " + r["held"], 40)))
    if len(held) > _MAX_HOLD_NOTES:
        fig.add_annotation(text=f"{len(held) - _MAX_HOLD_NOTES} more held: see the table",
                           xref="paper", yref="paper", x=1, y=1.08, showarrow=False,
                           font={"color": "#b00020"})
    fig.update_layout(barmode="group")
    if top_y:
        fig.update_yaxes(range=[0, top_y * 1.6])
    title = (f"Per {REPUTATION_SCOPES.get(scope, scope)}, last "
             f"{REPUTATION_WINDOWS.get(window, window)}")
    if len(mine) > len(shown):
        title += f": {len(shown)} of {len(mine)}"
    return _layout(fig, title, "% of delivered", not shown,
                   "no feedback yet" if not rows else "nothing at this scope yet")


def reputation_history_figure(rows: list[dict[str, Any]],
                              history: dict[str, list[dict[str, Any]]], window: str = "24h",
                              scope: str = "isp", top: int = 8,
                              span: tuple[float, float] | None = None) -> go.Figure:
    """Hour by hour, the complaint rate over the previous 24 h (what the rule judges) of the
    first ``top`` scopes ``reputation_figure`` shows (held ones first), over the last
    ``window``; ``history``: ``Board.reputation_history`` of their keys; ``span``: the time
    axis (start, end). Each ISP's limit is a dotted line; a held scope's line is red and
    dashed, its name marked."""
    fig = go.Figure()
    limits: dict[float, list[str]] = {}
    for r in reputation_shown(rows, window, scope, top):
        pts = history.get(r["key"]) or []
        if not pts:
            continue
        held = bool(r.get("held"))
        fig.add_trace(go.Scatter(
            x=[_t(p["t"]) for p in pts], y=[_pct(p["complaint"]) for p in pts],
            mode="lines+markers", name=_rep_label(r),
            line={"dash": "dash", "color": "#b00020", "width": 3} if held else {},
            customdata=[[r["key"], p["complaints"], p["delivered"]] for p in pts],
            hovertemplate=("%{customdata[0]}: %{y:.2f} %<br>%{customdata[1]} complaints of "
                           "%{customdata[2]} delivered in 24 h<extra></extra>")))
        if r["limit"] is not None:
            limits.setdefault(r["limit"], []).append(r["isp"])
    for limit, isps in sorted(limits.items()):
        fig.add_hline(y=_pct(limit), line_dash="dot", line_color="#b00020", line_width=1,
                      annotation_text=f"limit {100 * limit:.2f} % ({', '.join(sorted(set(isps)))})",
                      annotation_position="top left", annotation_font_size=10)
    if span is not None:
        fig.update_xaxes(range=[_t(span[0]), _t(span[1])])
    title = f"Complaints per delivered, 24 h rolling, last {REPUTATION_WINDOWS.get(window, window)}"
    return _layout(fig, title, "% of delivered", not fig.data,
                   "no feedback yet" if not rows else "nothing at this scope yet")
