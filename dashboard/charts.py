"""Plotly figures from the Board's series (pure: data in, figure out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import plotly.graph_objects as go

__all__ = ["RANGES", "category_figure", "speed_figure", "success_figure", "throughput_figure"]

# time-range selector value (seconds) -> bucket size (seconds)
RANGES: dict[int, float] = {300: 10.0, 3600: 60.0, 86400: 900.0}


def _t(ts: float) -> datetime:
    return datetime.fromtimestamp(ts)


def _layout(fig: go.Figure, title: str, ytitle: str, empty: bool) -> go.Figure:
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
            text="no data in this range",
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
