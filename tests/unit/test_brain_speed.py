"""The brain feeds the speed controller with the providers' real rate-limit replies: each one is
a signal (the speed falls at the first), and none is a cliff (no lock, no 30-minute cap) until
they keep coming."""

from __future__ import annotations

import json

import pytest

from kmta.policy.kb import KnowledgeBase
from kmta.policy.reply import Reply
from kmta.policy.reply_rules import match_reply
from schemas import DeliveryEvent, Status
from sim.profiles import profile_replies
from streams.brain import Row, apply_event, states_of

KB = KnowledgeBase.load()


def event(isp: str, n: int, t: float, reply: str | None = None) -> DeliveryEvent:
    if reply is None:
        return DeliveryEvent(id=f"m{n}", to="u@x.test", isp=isp, domain="x.test",
                             status=Status.DELIVERED, final=True, attempt=1, code=250,
                             enhanced_code="2.0.0", response="ok", category="delivered",
                             source_ip="127.0.0.2", node="n1", timestamp=t)
    lines = reply.replace("{ip}", "127.0.0.2").replace("{mx}", "mx.test").split("\n")
    code = int(lines[0][:3])
    text = " ".join(line[4:] for line in lines)
    enhanced = text.split()[0] if text[:1].isdigit() else None
    rest = text[len(enhanced) + 1:] if enhanced else text
    return DeliveryEvent(id=f"m{n}", to="u@x.test", isp=isp, domain="x.test",
                         status=Status.DEFERRED, final=False, attempt=1, code=code,
                         enhanced_code=enhanced, response=rest, category="rate_limit",
                         source_ip="127.0.0.2", node="n1", timestamp=t)


@pytest.mark.parametrize(("isp", "profile"), [("gmail", "gmail"), ("yahoo", "yahoo"),
                                              ("outlook", "outlook"), ("yandex", "yandex"),
                                              ("orange", "orange")])
def test_a_rate_limit_reply_slows_at_once_and_is_no_cliff(isp: str, profile: str) -> None:
    row, t = Row(isp=isp), 1000.0
    for i in range(300):  # clean and busy: startup
        apply_event(row, event(isp, i, t), KB, t)
        t += 0.02
    before = states_of(row, KB.effective(isp), t)[0].speed
    throttle = profile_replies(profile)["throttle_reply"]
    for k in range(3):  # three throttle replies within a minute
        ev = event(isp, 1000 + k, t, throttle)
        # the sender classifies the reply first; the brain gets its category
        matched = match_reply(Reply(code=ev.code, enhanced_code=ev.enhanced_code,
                                    text=ev.response), KB.effective(isp))
        ev.category = (matched.category if matched and matched.category else "rate_limit")
        apply_event(row, ev, KB, t)
        row = Row.model_validate(json.loads(json.dumps(row.model_dump(mode="json"))))
        t += 20.0
    states = states_of(row, KB.effective(isp), t)
    assert states[0].speed < before  # a signal: the speed fell ...
    assert states[1].source_ip == "127.0.0.2" and states[1].speed == states[0].speed  # its IP
    assert all(s.locked_until is None for s in states)  # no lock ...
    assert row.throttle_until is None  # ... and no capped period
