"""Property-based tests over the input paths (tests/fuzz_targets.py) with a fixed budget that
fits the unit tier; ``make fuzz`` runs the same targets with >= 100,000 examples.

Each target raises on an exception other than the module's own validation error and on a
broken property: a composed message has only the header lines kmta and the input named, every
line is <= 998 octets with CRLF ends, every record the router writes fits the topic limit, a
control command is applied only when signed, fresh and not seen before.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz_targets import TARGETS, check_message

BUDGET = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_property(name: str) -> None:
    target, strategy = TARGETS[name]
    seen: set[str] = set()

    @BUDGET
    @given(strategy)
    def run(value: object) -> None:
        seen.add(target(value))

    run()
    # the budget reaches past the validation errors: something is accepted too
    assert any(not o.startswith(("invalid", "refused", "dlq")) for o in seen), seen


def test_the_oracle_catches_an_injected_header() -> None:
    ok = "X-Kmta-Id: m\r\nFrom: a@b.c\r\nTo: d@e.f\r\nSubject: s\r\nDate: d\r\nMessage-ID: <m@x>" \
         "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
    assert check_message(ok, [])["subject"] == 1
    with pytest.raises(AssertionError, match="named"):
        check_message(ok.replace("Subject: s", "Subject: s\r\nBcc: x@y.z"), [])
    with pytest.raises(AssertionError, match="bare"):
        check_message(ok.replace("Subject: s", "Subject: s\x0bBcc:\nx"), [])
    with pytest.raises(AssertionError, match="a reader sees"):
        check_message(ok.replace("Subject: s", "Subject: s\x0bBcc: x@y.z"), [])
    with pytest.raises(AssertionError, match="octets"):
        check_message(ok.replace("body", "b" * 999), [])
    with pytest.raises(AssertionError, match="white space"):
        check_message(ok.replace("Subject: s", "Subject: s\r\n \r\n t"), [])
