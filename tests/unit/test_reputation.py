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
