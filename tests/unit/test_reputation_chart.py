"""The Reputation chart (dashboard/charts.py::reputation_figure): built from the rows of
Board.reputation_rows, the same rows the table shows; its bars, limit marks and hold notes are
checked against those rows."""
from __future__ import annotations

from itertools import pairwise
from typing import Any

from dashboard.charts import HELD_MARK, reputation_figure, reputation_history_figure
from dashboard.model import Board
from schemas.events import DeliveryEvent, FeedbackInfo, Status
from schemas.state import IspState

T0 = 1_700_000_000.0
HOLD = "complaint rate 0.50% over 0.30% (5 of 1000 delivered in 24 h)"


def _ev(i: int, status: Status, t: float, isp: str, campaign: str, **kw: Any) -> DeliveryEvent:
    return DeliveryEvent(id=f"{isp}-{campaign}-{i}", to=f"u{i}@{isp}.example", isp=isp,
                         status=status, final=status is Status.DELIVERED, timestamp=T0 + t,
                         campaign=campaign, sender="b+x@bounces.shop.test", **kw)


def board() -> Board:
    """gmail: 1000 delivered of campaign c1, 5 complaints (0.5 %), 2 unsubscribes; yahoo: 200
    of campaign c2 today and 100 three days ago (in the 7 d window only), 1 late hard bounce.
    The brain holds campaign:c1 at gmail."""
    b = Board()
    fb = FeedbackInfo(tied_by="verp", hard=True)
    for i in range(1000):
        b.apply_event(_ev(i, Status.DELIVERED, 0, "gmail", "c1", code=250))
    for i in range(5):
        b.apply_event(_ev(i, Status.COMPLAINT, 10, "gmail", "c1", feedback=fb))
    for i in range(5, 7):
        b.apply_event(_ev(i, Status.UNSUBSCRIBE, 10, "gmail", "c1", feedback=fb))
    for i in range(200):
        b.apply_event(_ev(i, Status.DELIVERED, 0, "yahoo", "c2", code=250))
    for i in range(200, 300):  # three days ago: in the 7 d window only
        b.apply_event(_ev(i, Status.DELIVERED, -3 * 86400, "yahoo", "c2", code=250))
    b.apply_event(_ev(0, Status.ASYNC_BOUNCE, 10, "yahoo", "c2", feedback=fb))
    b.apply_state(IspState(isp="gmail", holds={"campaign:c1": HOLD}, updated_at=T0))
    return b


def bars(fig: Any) -> dict[str, dict[str, float | None]]:
    """trace name -> x label -> y."""
    return {t.name: dict(zip(t.x, t.y, strict=True)) for t in fig.data}


def test_isp_bars_are_the_rows_rates_with_limits_and_holds() -> None:
    rows = board().reputation_rows(T0 + 20, {"gmail": 0.003, "default": 0.01}, 1000)
    fig = reputation_figure(rows, "24h", "isp")
    by_key = {r["key"]: r for r in rows if r["scope"] == "isp"}
    assert set(by_key) == {"isp:gmail", "isp:yahoo"}
    got = bars(fig)
    held_gmail = HELD_MARK + "gmail"  # the ISP contains a held campaign
    assert list(got["Complaints"]) == [held_gmail, "yahoo"]  # held first
    for kind, trace in (("complaint", "Complaints"), ("hard_bounce", "Hard bounces"),
                        ("unsubscribe", "Unsubscribes")):
        for label, key in ((held_gmail, "isp:gmail"), ("yahoo", "isp:yahoo")):
            rate = by_key[key][f"{kind}_24h"]
            assert got[trace][label] == 100 * rate
    assert got["Complaints"][held_gmail] == 0.5 and got["Unsubscribes"][held_gmail] == 0.2
    assert got["Hard bounces"]["yahoo"] == 0.5  # 1 of 200
    assert got["complaint limit"] == {held_gmail: 0.3, "yahoo": 1.0}  # yahoo takes default
    complaints = fig.data[0]
    assert list(complaints.marker.pattern.shape) == ["/", ""]
    notes = [a.text.replace("<br>", " ") for a in fig.layout.annotations]
    assert notes == [f"held: campaign:c1: {HOLD}"]


def test_window_switch_takes_the_7d_columns() -> None:
    rows = board().reputation_rows(T0 + 20)
    day = bars(reputation_figure(rows, "24h", "isp_campaign"))
    week = bars(reputation_figure(rows, "7d", "isp_campaign"))
    assert day["Hard bounces"]["yahoo \u00b7 c2"] == 0.5  # 1 of 200
    yahoo = next(r for r in rows if r["key"] == "isp:yahoo|campaign:c2")
    assert (yahoo["delivered_24h"], yahoo["delivered_7d"]) == (200, 300)
    assert week["Hard bounces"]["yahoo \u00b7 c2"] == 100 * yahoo["hard_bounce_7d"] == 0.333
    assert "last 7 d" in reputation_figure(rows, "7d", "isp").layout.title.text


def test_each_scope_shows_only_its_rows_and_the_exact_hold_reason() -> None:
    rows = board().reputation_rows(T0 + 20)
    fig = reputation_figure(rows, "24h", "isp_campaign")
    held = HELD_MARK + "gmail \u00b7 c1"
    assert list(fig.data[0].x) == [held, "yahoo \u00b7 c2"]
    assert fig.data[0].customdata[0][2] == HOLD  # the brain's reason, in the hover
    assert [a.text.replace("<br>", " ") for a in fig.layout.annotations] == [f"held: {HOLD}"]
    camp = reputation_figure(rows, "24h", "campaign")
    assert list(camp.data[0].x) == [HELD_MARK + "c1", "c2"]
    assert camp.data[0].customdata[0][2] == f"at gmail: {HOLD}"
    assert "complaint limit" not in bars(camp)  # the rule is per ISP: no mark outside one
    dom = reputation_figure(rows, "24h", "domain")
    assert list(dom.data[0].x) == ["bounces.shop.test"] and not dom.layout.annotations


def test_top_keeps_held_scopes_and_says_how_many_are_left_out() -> None:
    rows = [{"key": f"campaign:k{i}", "scope": "campaign", "isp": None, "name": f"k{i}",
             "delivered_24h": 100, "complaint_24h": i / 1000, "hard_bounce_24h": 0.0,
             "unsubscribe_24h": None, "limit": None, "held": "at gmail: x" if i == 0 else None}
            for i in range(30)]
    fig = reputation_figure(rows, "24h", "campaign", top=5)
    assert list(fig.data[0].x) == [HELD_MARK + "k0", "k29", "k28", "k27", "k26"]
    assert fig.data[2].y[1] is None  # nothing to divide by: no bar, not a zero
    assert fig.layout.title.text.endswith(": 5 of 30")


def test_no_feedback_yet_is_a_figure_not_an_error() -> None:
    fig = reputation_figure([], "24h", "isp")
    assert [a.text for a in fig.layout.annotations] == ["no feedback yet"]
    assert all(len(t.x) == 0 for t in fig.data)
    rows = board().reputation_rows(T0 + 20)
    other = reputation_figure([r for r in rows if r["scope"] != "domain"], "7d", "domain")
    assert [a.text for a in other.layout.annotations] == ["nothing at this scope yet"]


def history_board() -> tuple[Board, list[DeliveryEvent]]:
    """gmail, campaign c1, over three days: deliveries and complaints at scattered hours."""
    b = Board()
    fb = FeedbackInfo(tied_by="verp", hard=True)
    evs = []
    for n, (t, count) in enumerate(((-60 * 3600, 400), (-30 * 3600, 300), (-2 * 3600, 300))):
        evs += [_ev(n * 1000 + i, Status.DELIVERED, t, "gmail", "c1", code=250)
                for i in range(count)]
    for n, t in enumerate((-59.5 * 3600, -29 * 3600, -28 * 3600, -100.0)):
        evs.append(_ev(n, Status.COMPLAINT, t, "gmail", "c1", feedback=fb))
    for e in evs:
        b.apply_event(e)
    return b, evs


def test_history_is_the_24h_complaint_rate_at_each_hour() -> None:
    b, evs = history_board()
    now = T0
    hist = b.reputation_history(["isp:gmail|campaign:c1", "campaign:nope"], now)
    assert list(hist) == ["isp:gmail|campaign:c1"]
    pts = hist["isp:gmail|campaign:c1"]
    assert len(pts) == int(now // 3600) - int((T0 - 60 * 3600) // 3600) + 1  # from its first
    assert pts[-1]["t"] == now and all(b["t"] - a["t"] <= 3600 for a, b in pairwise(pts))
    for p in pts:  # counted again from the events: the 24 h of whole hours up to p["t"]
        end = (int((p["t"] - 1e-6) // 3600) + 1) * 3600
        inside = [e for e in evs if end - 86400 <= e.timestamp < end]
        d = sum(e.status is Status.DELIVERED for e in inside)
        c = sum(e.status is Status.COMPLAINT for e in inside)
        assert (p["delivered"], p["complaints"]) == (d, c), p
        assert p["complaint"] == (round(c / d, 5) if d else None)
    assert max(p["complaint"] or 0 for p in pts) == round(2 / 300, 5)  # 2 of 300, day 2
    assert pts[-1]["complaint"] == round(1 / 300, 5)
    week = b.reputation_history(["isp:gmail|campaign:c1"], now, span=86400)
    assert len(week["isp:gmail|campaign:c1"]) == 24  # the last 24 h only


def test_history_figure_draws_the_points_limits_and_holds() -> None:
    b, _ = history_board()
    b.apply_state(IspState(isp="gmail", holds={"campaign:c1": HOLD}, updated_at=T0))
    rows = b.reputation_rows(T0, {"gmail": 0.004}, 1)
    keys = [r["key"] for r in rows if r["scope"] == "isp_campaign"]
    hist = b.reputation_history(keys, T0)
    fig = reputation_history_figure(rows, hist, "7d", "isp_campaign",
                                    span=(T0 - 7 * 86400, T0))
    (line,) = fig.data
    assert line.name == HELD_MARK + "gmail \u00b7 c1" and line.line.dash == "dash"
    pts = hist["isp:gmail|campaign:c1"]
    assert list(line.y) == [None if p["complaint"] is None else round(100 * p["complaint"], 4)
                            for p in pts]
    assert [s.y0 for s in fig.layout.shapes] == [0.4]  # gmail's limit
    assert [x.timestamp() for x in fig.layout.xaxis.range] == [T0 - 7 * 86400, T0]
    assert "limit 0.40 % (gmail)" in [a.text for a in fig.layout.annotations]
    empty = reputation_history_figure([], {}, "24h", "isp")
    assert [a.text for a in empty.layout.annotations] == ["no feedback yet"] and not empty.data
