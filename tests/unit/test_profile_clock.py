"""``KMTA_PROFILE_CLOCK``: the worker's and senders' cProfile counts wall time (default) or the
main thread's CPU time (``cpu``), so that a profile taken on a loaded machine does not charge
the time spent waiting for a CPU to the code that was running."""
from __future__ import annotations

import pstats
import time

import pytest

from kmta.cli.commands import profiler


def _profile(clock: str) -> pstats.Stats:
    def sleeper() -> None:
        time.sleep(0.2)  # wall time, no CPU

    def spinner() -> None:
        end = time.thread_time() + 0.05  # CPU time
        while time.thread_time() < end:
            pass
    prof = profiler(clock)
    prof.enable()
    sleeper()
    spinner()
    prof.disable()
    return pstats.Stats(prof)


def _cum(stats: pstats.Stats, name: str) -> float:
    return next(v[3] for k, v in stats.stats.items() if k[2] == name)  # type: ignore[attr-defined]


def test_the_cpu_clock_leaves_out_time_not_on_a_cpu() -> None:
    wall, cpu = _profile(""), _profile("cpu")
    assert _cum(wall, "sleeper") >= 0.19  # the sleep counts on the wall clock
    # and not on the CPU clock, where the spinner's 50 ms of CPU do (however loaded the machine)
    assert _cum(cpu, "sleeper") < 0.05 <= _cum(cpu, "spinner")


def test_an_unknown_clock_is_refused() -> None:
    with pytest.raises(SystemExit, match="wall or cpu"):
        profiler("cycles")
    assert profiler("wall") is not None
