"""ProviderRules decisions with time moved by hand (no server, no sleeps)."""

from __future__ import annotations

import pytest

from kmta.errors import ConfigError
from sim.behaviour import ProviderBehaviour, ProviderRules
from sim.profiles import PROFILES, REPLY_KINDS
from sim.smtp import _header_values

A, B = "127.0.0.2", "127.0.0.3"


def rules(**kw) -> ProviderRules:
    return ProviderRules(ProviderBehaviour(**kw), mx_host="mx.sim.test")


def codes(verdicts) -> list[int]:
    return [250 if v is None else int(v.reply[:3]) for v in verdicts]


def test_capacity_is_a_token_bucket_per_source_ip():
    r = rules(profile="gmail", capacity=4, burst=2)
    # A burst of 5 at t=0: the bucket holds 2.
    assert codes(r.on_rcpt(A, "s@x", f"u{i}@gmail.com", 0.0) for i in range(5)) == [
        250,
        250,
        421,
        421,
        421,
    ]
    # Another source IP has its own bucket.
    assert r.on_rcpt(B, "s@x", "u@gmail.com", 0.0) is None
    # Paced at capacity (every 0.25 s) nothing is refused.
    assert codes(r.on_rcpt(A, "s@x", "u@gmail.com", 1.0 + i * 0.25) for i in range(8)) == [250] * 8
    stats = r.stats()
    assert stats[A]["throttled"] == 3 and stats[B]["throttled"] == 0


def accepted_in(r, ip: str, rate: float, seconds: float, start: float = 0.0) -> int:
    """Messages of ``ip`` accepted when offered at ``rate`` per second for ``seconds``."""
    n = int(rate * seconds)
    return sum(r.on_rcpt(ip, "s@x", f"u{i}@x", start + i / rate) is None for i in range(n))


def test_ip_capacity_gives_one_source_ip_its_own_rate():
    r = rules(capacity=10, ip_capacity={B: 5})
    # offered 10/s for 20 s: A takes all 200, B its 5/s (100) plus its burst
    assert accepted_in(r, A, 10, 20) == 200
    assert 100 <= accepted_in(r, B, 10, 20) <= 100 + 2
    assert r.capacity(0.0, A) == 10 and r.capacity(0.0, B) == 5 and r.capacity(0.0) == 10


def test_capacity_changes_scale_an_ip_capacity_by_the_same_factor():
    r = rules(capacity=10, ip_capacity=((B, 4.0),), capacity_changes=((10, 5),))
    r.capacity(0.0)  # the first command: changes count from here
    assert (r.capacity(9.0, A), r.capacity(9.0, B)) == (10, 4)
    assert (r.capacity(10.0, A), r.capacity(10.0, B)) == (5, 2)


def test_ip_capacity_must_be_positive():
    with pytest.raises(ConfigError):
        ProviderBehaviour(capacity=1, ip_capacity={A: 0})


def test_throttle_reply_is_the_profiles_multiline_text_with_ip():
    r = rules(profile="gmail", capacity=1, burst=1)
    r.on_rcpt(A, "s@x", "u@gmail.com", 0.0)
    v = r.on_rcpt(A, "s@x", "u@gmail.com", 0.0)
    assert v is not None and v.event == "throttled"
    lines = v.reply.split("\r\n")
    assert lines[0].startswith("421-4.7.28 [127.0.0.2]") and lines[-1].startswith("421 4.7.28")
    assert "rate limited" in v.reply


def test_throttle_at_data_counts_recipients():
    r = rules(capacity=2, burst=2, throttle_at="data")
    assert r.on_rcpt(A, "s", "a@x", 0.0) is None  # no token taken at RCPT
    assert r.on_data(A, ["a@x", "b@x"], 0.0) is None
    v = r.on_data(A, ["c@x"], 0.0)
    assert v is not None and v.event == "throttled"


def test_block_after_repeated_throttling_then_expires():
    r = rules(
        profile="yahoo", capacity=1, burst=1, block_after=3, block_window=10, block_duration=60
    )
    r.on_rcpt(A, "s", "u@yahoo.com", 0.0)
    events = [r.on_rcpt(A, "s", "u@yahoo.com", 0.1 * i) for i in range(1, 4)]
    assert [v.event for v in events] == ["throttled"] * 3
    assert r.is_blocked(A, 1.0) and not r.is_blocked(B, 1.0)
    v = r.on_rcpt(A, "s", "u@yahoo.com", 30.0)  # tokens are back, the block is not
    assert v is not None and v.event == "blocked" and "[TS03]" in v.reply
    assert r.on_rcpt(A, "s", "u@yahoo.com", 61.0) is None
    assert r.stats()[A]["blocked"] == 1


def test_throttles_spread_beyond_the_window_do_not_block():
    r = rules(capacity=1, burst=1, block_after=3, block_window=1)
    for t in (0.0, 5.0, 10.0, 15.0):
        r.on_rcpt(A, "s", "u@x", t)
        assert r.on_rcpt(A, "s", "u@x", t).event == "throttled"
    assert not r.is_blocked(A, 15.0)


def test_block_at_connect_refuses_sessions():
    r = rules(capacity=1, burst=1, block_after=1, block_duration=5, block_at="connect")
    assert r.on_connect(A, 0.0) is None
    r.on_rcpt(A, "s", "u@x", 0.0)
    r.on_rcpt(A, "s", "u@x", 0.0)
    v = r.on_connect(A, 1.0)
    assert v is not None and v.event == "blocked"
    assert r.on_connect(A, 6.0) is None


def test_max_connections_per_source_ip():
    r = rules(profile="outlook", max_connections=2)
    assert r.on_connect(A, 0) is None and r.on_connect(A, 0) is None
    v = r.on_connect(A, 0)
    assert v is not None and v.event == "refused" and v.reply.startswith("421 4.3.2")
    assert r.on_connect(B, 0) is None
    r.on_disconnect(A)
    assert r.on_connect(A, 0) is None
    assert (r.stats()[A]["connections"], r.stats()[A]["refused"]) == (3, 1)


def test_messages_per_connection():
    r = rules(profile="yahoo", messages_per_connection=20)
    assert r.on_mail(A, 19, 0) is None
    v = r.on_mail(A, 20, 0)
    assert v.reply == "421 Max message per connection reached, closing transmission channel"


def test_unknown_full_reject_tempfail_slow():
    r = rules(profile="generic", slow_seconds=2.5)
    v = r.on_rcpt(A, "s", "unknown-7@shop.test", 0)
    assert v.reply.startswith("550 5.1.1 <unknown-7@shop.test>") and v.event == "rejected"
    v = r.on_rcpt(A, "s", "full1@shop.test", 0)
    assert v.reply.startswith("452 4.2.2") and v.event == "deferred"
    v = r.on_data(A, ["reject.me@shop.test"], 0)
    assert v.reply.startswith("554 5.7.1") and v.event == "rejected"
    first = r.on_rcpt(A, "s", "tempfail1@shop.test", 0)
    assert first.reply.startswith("451 4.3.0")
    assert r.on_rcpt(B, "s", "tempfail1@shop.test", 0.1) is None  # once per recipient
    assert r.on_rcpt(A, "s", "tempfail1@shop.test", 0.2) is None
    assert r.data_delay(["slow1@shop.test"]) == 2.5 and r.data_delay(["a@shop.test"]) == 0


def test_greylisting_per_ip_sender_recipient():
    r = rules(greylist_seconds=30, greylist_by="ip")
    assert r.on_rcpt(A, "s@x", "u@g.test", 0).reply.startswith("451 4.7.1")
    assert r.on_rcpt(A, "s@x", "u@g.test", 10).event == "deferred"  # still too early
    assert r.on_rcpt(B, "s@x", "u@g.test", 31).event == "deferred"  # new triplet
    assert r.on_rcpt(A, "s@x", "u@g.test", 31) is None
    assert r.on_rcpt(A, "s@x", "u@g.test", 32) is None


def test_greylisting_per_subnet_by_default():
    r = rules(greylist_seconds=30)
    assert r.on_rcpt(A, "s@x", "u@g.test", 0).event == "deferred"
    assert r.on_rcpt(B, "s@x", "u@g.test", 10).event == "deferred"  # same /24: still early
    assert r.on_rcpt(B, "s@x", "u@g.test", 31) is None  # the /24 waited out the delay
    assert r.on_rcpt("127.0.1.2", "s@x", "u@g.test", 31).event == "deferred"  # other /24


def test_reply_overrides_and_unknown_keys():
    b = ProviderBehaviour.from_dict({"profile": "gmail", "throttle_reply": "421 4.7.0 slow\ndown"})
    assert b.replies()["throttle_reply"] == "421 4.7.0 slow\r\ndown"
    assert b.replies()["block_reply"].startswith("421-4.7.0")
    with pytest.raises(ConfigError):
        ProviderBehaviour.from_dict({"capactiy": 3})
    with pytest.raises(KeyError):
        ProviderBehaviour(profile="nope")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_reply_is_a_well_formed_smtp_reply(profile):
    replies = ProviderBehaviour(profile=profile).replies()
    assert set(replies) == set(REPLY_KINDS)
    for kind, text in replies.items():
        lines = text.split("\r\n")
        code = lines[0][:3]
        assert code.isdigit() and code[0] in "45", (kind, text)
        assert all(line[:3] == code for line in lines)
        assert all(line[3] == "-" for line in lines[:-1]) and lines[-1][3:4] in (" ", "")
    assert replies["throttle_reply"][0] == "4" and replies["unknown_user_reply"][0] == "5"


def test_header_values_reads_only_the_header_block():
    msg = b"Subject: x\r\nMessage-ID:\r\n <abc@x>\r\nX-Kmta-Id: k1\r\n\r\nMessage-ID: <body@x>\r\n"
    assert _header_values(msg, ("message-id", "x-kmta-id")) == {
        "message-id": "<abc@x>",
        "x-kmta-id": "k1",
    }


def test_capacity_changes_count_from_the_first_command():
    rules = ProviderRules(ProviderBehaviour(capacity=4, burst=1,
                                            capacity_changes=[[10, 2], [20, 8]]))
    assert rules.capacity(100.0) == 4  # the first command starts the clock
    assert rules.capacity(109.9) == 4
    assert rules.capacity(110.0) == 2
    assert rules.capacity(125.0) == 8
    # the bucket refills at the new capacity: 2/s from 110 on
    assert rules.on_rcpt("10.0.0.1", "a@x", "u@y", 110.0) is None
    assert rules.on_rcpt("10.0.0.1", "a@x", "u@y", 110.4) is not None  # 0.8 tokens
    assert rules.on_rcpt("10.0.0.1", "a@x", "u@y", 110.6) is None
    with pytest.raises(ConfigError):
        ProviderBehaviour(capacity_changes=[[10, 2]])  # a change needs a capacity


def test_the_throttle_that_earns_a_block_says_so_and_is_counted():
    rules = ProviderRules(ProviderBehaviour(capacity=1, burst=1, block_after=3))
    rules.on_rcpt("10.0.0.1", "a@x", "u@y", 0.0)
    verdicts = [rules.on_rcpt("10.0.0.1", "a@x", "u@y", 0.1 + i / 10) for i in range(3)]
    assert [v.block for v in verdicts] == [False, False, True]
    assert rules.stats()["10.0.0.1"]["blocks"] == 1
