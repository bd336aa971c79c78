"""Rolling rates in hourly buckets, and the complaint-rate rule."""
from __future__ import annotations

from kmta.policy.reputation import DAY, WEEK, RateBook, keys_of, over_threshold

T0 = 1_700_000_000.0


def test_windows_and_keys() -> None:
    b = RateBook()
    k = keys_of("gmail", "shop.example", "spring")
    assert k == ["isp:gmail", "domain:shop.example", "isp:gmail|domain:shop.example",
                 "campaign:spring", "isp:gmail|campaign:spring"]
    b.observe(k, "delivered", T0 - 3 * DAY, 1000)  # in the week, not the day
    b.observe(k, "complaint", T0 - 3 * DAY, 9)
    b.observe(k, "delivered", T0 - 3600, 1000)
    b.observe(k, "complaint", T0 - 3600, 2)
    b.observe(k[:1], "unsubscribe", T0, 5)
    b.observe(k[:1], "hard_bounce", T0 - 8 * DAY, 50)  # older than the week
    d = b.rates("isp:gmail", T0, DAY)
    w = b.rates("isp:gmail", T0, WEEK)
    assert (d.delivered, d.complaint, d.unsubscribe, d.hard_bounce) == (1000, 2, 5, 0)
    assert (w.delivered, w.complaint, w.hard_bounce) == (2000, 11, 0)
    assert d.rate("complaint") == 0.002 and w.rate("complaint") == 11 / 2000
    assert b.rates("campaign:spring", T0, DAY).unsubscribe == 0
    assert b.rates("campaign:other", T0, DAY).rate("complaint") is None
    b.prune(T0)
    assert all(h >= int((T0 - WEEK) // 3600) for v in b.buckets.values() for h in v)


def test_complaint_rule_needs_volume_and_a_rate_over_the_limit() -> None:
    b = RateBook()
    key = "isp:gmail|campaign:spring"
    b.observe([key], "delivered", T0, 999)
    b.observe([key], "complaint", T0, 10)
    assert over_threshold(b, key, T0, "gmail") is None  # 999 delivered: too few to judge
    b.observe([key], "delivered", T0, 1)
    why = over_threshold(b, key, T0, "gmail")
    assert why and "1.00% over 0.30%" in why and "10 of 1000" in why
    b2 = RateBook()
    b2.observe([key], "delivered", T0, 1000)
    b2.observe([key], "complaint", T0, 3)  # exactly 0.3 %: not over
    assert over_threshold(b2, key, T0, "gmail") is None
    assert over_threshold(b, key, T0 + DAY + 3600, "gmail") is None  # out of the window
    assert over_threshold(b, key, T0, "mailru", {"gmail": 0.003}) is None  # no limit there


def test_brain_holds_a_campaign_and_an_operator_releases_it() -> None:
    import pytest

    from kmta.config import ReputationConfig
    from kmta.errors import ConfigError
    from kmta.policy.kb import KnowledgeBase
    from schemas import ControlAction, ControlCommand, DeliveryEvent, Envelope, Status
    from streams.brain import Row, apply_command, apply_reputation, states_of
    from streams.delay import held_by

    cfg = ReputationConfig(min_delivered=10)
    row = Row(isp="gmail")
    verp = "b+tok@bounces.shop.example"

    def ev(status: Status, t: float, campaign: str = "spring") -> DeliveryEvent:
        return DeliveryEvent(id="m", to="a@gmail.com", isp="gmail", status=status,
                             final=status is Status.DELIVERED, timestamp=t,
                             campaign=campaign, sender=verp)
    for i in range(10):
        assert apply_reputation(row, ev(Status.DELIVERED, T0 + i), cfg, T0 + i) == []
    assert apply_reputation(row, ev(Status.DELIVERED, T0, "autumn"), cfg, T0) == []
    held = apply_reputation(row, ev(Status.COMPLAINT, T0 + 20), cfg, T0 + 20)
    assert [k for k, _ in held] == ["campaign:spring", "domain:bounces.shop.example"]
    assert "10.00% over 0.30%" in held[0][1]
    assert apply_reputation(row, ev(Status.COMPLAINT, T0 + 21), cfg, T0 + 21) == []  # held
    kb = KnowledgeBase.load()
    st = states_of(row, kb.effective("gmail", None), T0 + 22)[0]
    assert set(st.holds) == {"campaign:spring", "domain:bounces.shop.example"}
    states = {"gmail": st.model_dump(mode="json")}
    env = Envelope(id="x", sender=verp, rcpt="b@gmail.com", domain="gmail.com", isp="gmail",
                   data="", campaign="autumn", accepted_at=T0, routed_at=T0)
    assert held_by(env, states).startswith("domain:bounces.shop.example held at gmail")
    other = env.model_copy(update={"sender": "x@other.example"})
    assert held_by(other, states) is None  # another domain, another campaign
    cmd = ControlCommand(id="c1", action=ControlAction.RESUME, isp="gmail", actor="ops",
                         hold="campaign:spring", timestamp=T0 + 30)
    apply_command(row, cmd, kb, T0 + 30)
    assert set(row.holds) == {"domain:bounces.shop.example"}
    assert not row.whole.paused
    with pytest.raises(ConfigError):
        apply_command(row, cmd, kb, T0 + 31)  # not held any more
    # released: the rule leaves it alone for the window, even with more complaints
    assert apply_reputation(row, ev(Status.COMPLAINT, T0 + 40), cfg, T0 + 40) == []
