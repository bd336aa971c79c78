"""``kmta.policy.speed._replace``, the controller's copy-with-changes, is ``dataclasses.replace``
for a ``SpeedState``: same fields, equal and of equal hash, the original untouched."""
from __future__ import annotations

import dataclasses

import pytest

from kmta.policy.speed import SpeedState, _replace


def test_replace_is_dataclasses_replace() -> None:
    s = SpeedState(speed=12.5, period_start=100.0, clean=3, recent=(("192.0.2.1", 99.0),),
                   sources=("192.0.2.1",))
    for changes in ({}, {"clean": 4}, {"speed": 1.0, "mode": "hold", "deep": True},
                    {"recent": (), "cut_last": (("a@n", 1.0),), "floor": None}):
        got, want = _replace(s, **changes), dataclasses.replace(s, **changes)
        assert got == want and hash(got) == hash(want)
        assert dataclasses.asdict(got) == dataclasses.asdict(want)
        assert type(got) is SpeedState and got is not s
    assert s.clean == 3 and s.speed == 12.5  # the original is not changed
    with pytest.raises(dataclasses.FrozenInstanceError):
        _replace(s, clean=1).clean = 2  # type: ignore[misc]


def test_replace_refuses_unknown_field() -> None:
    with pytest.raises(TypeError, match="no field"):
        _replace(SpeedState(speed=1.0, period_start=0.0), speeed=2.0)
