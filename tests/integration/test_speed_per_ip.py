"""A speed level per source IP on the real pipeline (broker, worker, sender, isp-sim over SMTP):
the pool's two source IPs reach one simulated provider that accepts 4 msg/s from 127.0.0.2 and
2 msg/s from 127.0.0.3 (``ip_capacity``: a provider rating each IP, one with a worse
reputation; a burst allowance of 3 messages, so that a busy test machine's timing jitter alone
is not refused). Neither rate is configured; the brain finds each IP's own level, publishes it on
the IP's ``<isp>|<ip>`` record and the ISP's record carries the lower one, and the sender paces
each IP at its own level: the fast IP is not held at the slow one's rate."""
from __future__ import annotations

from collections import Counter

from tests.harness import messages, wait_for

FAST, SLOW = "127.0.0.2", "127.0.0.3"
CAPACITY = {FAST: 4.0, SLOW: 2.0}  # msg/s

SCENARIO = f"""
[dns]
ttl = 60

[[provider]]
name = "gmail"
profile = "gmail"
ip = "127.0.1.1"
domains = ["gmail.com"]
[provider.behaviour]
capacity = {CAPACITY[FAST]}
burst = 3
ip_capacity = {{ "{SLOW}" = {CAPACITY[SLOW]} }}
"""

# per second (tact 1 s): the controller starts at 1 msg/s per IP and finds the rest
_GMAIL = {"sending": {"tact": "1s", "max_connections": 4, "messages_per_connection": 1000},
          "speed": {"min": 0.5, "start": 1},
          "retry": {"mode": "fixed", "interval": "2s", "max_attempts": 30, "max_age": "1h"}}
RULES = {"default": _GMAIL, "isp": {"gmail": _GMAIL}}


def test_each_source_ip_converges_to_its_own_capacity(pipeline_factory) -> None:
    p = pipeline_factory(scenario=SCENARIO, rules=RULES)
    p.start(senders=1)
    ids = p.produce(messages(800, ["gmail.com"], prefix="ip"))  # ~2 minutes at 6 msg/s

    def levels() -> dict[str, float] | None:
        last: dict[str, float] = {}
        for st in p.read_topic("state"):
            if st.get("isp") == "gmail" and not st.get("pool") and st.get("speed"):
                last[st.get("source_ip") or ""] = st["speed"]
        return last if FAST in last and SLOW in last else None

    wait_for(lambda: (lambda lv: lv if lv and lv[FAST] > 1.4 * lv[SLOW] else None)(levels()),
             90, "the two IPs' levels apart")
    finals = p.wait_finals(ids, 420)
    assert {f["status"] for f in finals.values()} == {"delivered"}

    # the provider's own log: accepted messages per IP per second over the last 30 s of the
    # busy stretch (both IPs still backlogged: up to 3 s before the queue ran dry). Converged
    # by then: a busy machine's delays can cost a round of throttles more after the knee, and
    # the throttle budget then holds probes back for up to a minute
    accepted = [e for e in p.sim_events() if e["event"] == "accepted"]
    throttled = Counter(e["ip"] for e in p.sim_events() if e["event"] == "throttled")
    end = min(max(e["time"] for e in accepted if e["ip"] == ip) for ip in CAPACITY) - 3
    window = (end - 30, end)
    assert window[0] - min(e["time"] for e in accepted) >= 60, window  # after the ramp
    rate = {ip: sum(1 for e in accepted if e["ip"] == ip
                    and window[0] <= e["time"] < window[1]) / (window[1] - window[0])
            for ip in CAPACITY}
    last = levels()
    assert last is not None
    why = (rate, last, throttled)
    # each IP near its own capacity, the fast one never held at the slow one's rate
    assert 0.75 * CAPACITY[FAST] <= rate[FAST] <= 1.1 * CAPACITY[FAST], why
    assert 0.75 * CAPACITY[SLOW] <= rate[SLOW] <= 1.1 * CAPACITY[SLOW], why
    assert rate[FAST] >= 1.5 * rate[SLOW], why
    assert last[""] == min(last[FAST], last[SLOW])  # the ISP's record: the lower level
    # a throttle lowers its own IP only: the slow IP's few throttles did not stop the fast one
    attempts = Counter(e["ip"] for e in accepted)
    assert throttled[SLOW] + throttled[FAST] <= 0.05 * (attempts[SLOW] + attempts[FAST]), (
        throttled, attempts)
