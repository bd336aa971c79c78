"""Retry schedules on the real pipeline: each deferred message is tried again when its ISP's
retry rule says (window, fixed, growing), judged by the results' and the provider's own clocks,
and ends ``expired`` once its attempts are used up."""
from __future__ import annotations

from collections import defaultdict

from tests.harness import FAST_RULES, generic_scenario, messages, wait_for

SCENARIO = generic_scenario(
    ("mailboxes", "127.0.1.10", ["window.test", "fixed.test", "growing.test"]))

# (jitter 0: the shipped [default] adds +-10 %)
# "full..." recipients get 452 4.2.2 mailbox full at every attempt: deferred until expired
RETRY = {
    "window": {"mode": "window", "window": ["3s", "5s"], "max_attempts": 3, "max_age": "1h"},
    "fixed": {"mode": "fixed", "interval": "2s", "jitter": 0, "max_attempts": 3,
              "max_age": "1h"},
    "growing": {"mode": "growing", "interval": "1s", "factor": 2, "max_interval": "10s",
                "jitter": 0, "max_attempts": 4, "max_age": "1h"},
}
# the gaps between consecutive attempts each rule promises (window: any moment in it)
EXPECTED = {"window": [(3.0, 5.0)] * 2, "fixed": [(2.0, 2.0)] * 2,
            "growing": [(1.0, 1.0), (2.0, 2.0), (4.0, 4.0)]}
LATE = 1.5  # a due message is back on its ISP's queue, picked up and sent within this


def rules() -> dict:
    isps = {name: {"domains": [f"{name}.test"], "partitions": 1,
                   "sending": FAST_RULES["default"]["sending"],
                   "speed": FAST_RULES["default"]["speed"], "retry": retry}
            for name, retry in RETRY.items()}
    return {"default": FAST_RULES["default"], "isp": isps}


def test_retry_windows_intervals_and_expiry(pipeline_factory) -> None:
    p = pipeline_factory(scenario=SCENARIO, rules=rules())
    p.start(senders=1)
    ids = {name: p.produce(messages(3, [f"{name}.test"], prefix="full")) for name in RETRY}
    finals = p.wait_finals([i for group in ids.values() for i in group], 90)
    events = defaultdict(list)
    for ev in p.results():
        if ev["status"] != "queued":
            events[ev["id"]].append(ev)
    def provider_saw() -> dict[str, list[float]] | None:
        """One "deferred" reply per attempt, as the provider logged it (flushed in 0.1 s)."""
        seen = defaultdict(list)
        for e in p.sim_events():
            if e["event"] == "deferred":
                seen[e["recipient"]].append(e["time"])
        want = sum(RETRY[name]["max_attempts"] * len(group) for name, group in ids.items())
        return seen if sum(map(len, seen.values())) >= want else None

    sim = wait_for(provider_saw, 10, "the sim log")
    for name, group in ids.items():
        attempts = RETRY[name]["max_attempts"]
        for i in group:
            evs = sorted(events[i], key=lambda e: e["attempt"])
            # every attempt but the last deferred, the last one the final "expired"
            assert [e["status"] for e in evs] == ["deferred"] * (attempts - 1) + ["expired"]
            assert [e["attempt"] for e in evs] == list(range(1, attempts + 1))
            assert finals[i]["status"] == "expired" and finals[i]["code"] == 452
            times = [e["timestamp"] for e in evs]
            seen = sim[evs[0]["to"]]
            assert len(seen) == attempts, (name, seen)
            for k, (low, high) in enumerate(EXPECTED[name]):
                planned = evs[k]["next_attempt_at"] - times[k]
                assert low - 0.01 <= planned <= high + 0.01, (name, k, planned)
                # the next attempt happened when planned: not before, barely after
                assert evs[k]["next_attempt_at"] - 0.05 <= times[k + 1], (name, k)
                assert times[k + 1] <= evs[k]["next_attempt_at"] + LATE, (name, k)
                gap = seen[k + 1] - seen[k]  # the provider's clock agrees
                assert low - 0.1 <= gap <= high + LATE, (name, k, gap)
            assert "next_attempt_at" not in evs[-1] or evs[-1]["next_attempt_at"] is None
