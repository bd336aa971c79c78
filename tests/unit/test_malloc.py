"""glibc's mmap threshold fixed for the worker and senders (kmta.pipeline.malloc). Each case
runs in a child process: mallopt's setting lasts for the process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# After an 8 MiB mapping is freed, does a 2 MiB allocation still get a mapping of its own
# (mallinfo2's hblkhd: bytes in mmapped chunks)? glibc's dynamic threshold says no.
PROBE = textwrap.dedent("""
    import argparse, ctypes, sys
    from kmta.cli import commands
    from kmta.pipeline.malloc import fix_mmap_threshold

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd "
                    "usmblks fsmblks uordblks fordblks keepcost").split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info

    def mapped_after_big_free(_args=None):
        big = bytearray(8 << 20)
        del big
        before = libc.mallinfo2().hblkhd
        buf = bytearray(2 << 20)
        return int(libc.mallinfo2().hblkhd - before >= 2 << 20)

    how = sys.argv[1]
    if how == "direct":
        print(fix_mmap_threshold(int(sys.argv[2])), mapped_after_big_free())
    else:  # the CLI's entry point, as it runs a command
        args = argparse.Namespace(command=how, func=mapped_after_big_free)
        print(commands._call(args))
""")


def run_probe(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "KMTA_MMAP_THRESHOLD"}
    return subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          env={**base, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=120)


def probe(*argv: str, env: dict[str, str] | None = None) -> str:
    out = run_probe(*argv, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux")
                                or os.confstr("CS_GNU_LIBC_VERSION") is None,
                                reason="glibc only")


def test_fixed_threshold_keeps_large_allocations_mapped() -> None:
    assert probe("direct", str(1 << 20)) == "True 1"


def test_zero_leaves_glibcs_dynamic_threshold() -> None:
    # the control: without the fix, the freed 8 MiB raised the threshold past 2 MiB
    assert probe("direct", "0") == "False 0"


@pytest.mark.parametrize("command", ["worker", "sender"])
def test_long_running_commands_fix_it(command: str) -> None:
    assert probe(command) == "1"


def test_other_commands_and_the_benchmark_knob_leave_it() -> None:
    assert probe("send") == "0"
    assert probe("worker", env={"KMTA_MMAP_THRESHOLD": "0"}) == "0"


def test_a_threshold_that_is_not_a_number_stops_with_a_clear_error() -> None:
    out = run_probe("worker", env={"KMTA_MMAP_THRESHOLD": "1M"})
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == ("kmta: KMTA_MMAP_THRESHOLD='1M': a number of bytes "
                                  "(0: glibc's dynamic threshold)")
