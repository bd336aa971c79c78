"""The kit the tests and the benchmarks share: free ports, a Kafka broker of their own, child
processes in their own process groups, the smtp-sink, a DNS zone of MX records, /proc figures.

Everything here binds and connects to loopback only.
"""
from __future__ import annotations

import io
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sim.dns import DnsServerThread, Zone

__all__ = ["SMTP_SINK", "CpuMeter", "Procs", "Sink", "broker_pid", "children_of", "clean_up",
           "cpu_seconds", "free_port", "kafka_for", "log", "mx_zone", "peak_rss_mb",
           "port_free", "profile_report", "pss_mb", "run_delay_seconds", "start_broker",
           "start_dns", "stop_broker", "wait_for"]

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
CONTROLLER_OFFSET = 100  # ops.kafka.manager's controller listens on the broker port + 100


def log(msg: str, tag: str = "bench") -> None:
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- ports -------------------------------------------------------------------------------------
def interrupt_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so a benchmark's ``finally`` stops
    every process it started (SIGINT too: a background job starts with it ignored)."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", also: Iterable[str] = ()) -> int:
    """A TCP port free on ``host`` and on every address in ``also``."""
    also = list(also)
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if all(port_free(h, port) for h in also):
            return port
    raise RuntimeError("no free port")


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``cond`` until it returns something true (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- a Kafka broker of one's own ----------------------------------------------------------------
def start_broker(data: Path, heap: str = "768m") -> str:
    """Start a one-node KRaft broker with its data in ``data`` on free ports (the broker's and
    its controller's); return its bootstrap servers."""
    from ops.kafka import cli as kafka_cli
    from ops.kafka import manager

    home = os.environ.get("KAFKA_HOME")
    libs = manager.ensure_jars(kafka_cli.default_cache_dir(os.environ),
                               kafka_home=Path(home) if home else None)
    for _ in range(50):
        port = free_port()
        if port + CONTROLLER_OFFSET < 65536 and port_free("127.0.0.1", port + CONTROLLER_OFFSET):
            break
    else:
        raise RuntimeError("no free pair of ports for a broker")
    info = manager.start(data, 1, port, libs=libs, heap=heap)
    return str(info.bootstrap_servers)


def stop_broker(data: Path) -> None:
    from ops.kafka import manager

    manager.stop(data)


def broker_pid(data: Path | None) -> int | None:
    if data is None:
        return None
    from ops.kafka import manager

    sts = manager.status(data)
    return sts[0].pid if sts else None


def kafka_for(bootstrap: str | None, base: Path) -> tuple[str, Path | None]:
    """The given cluster, or a broker of one's own under ``base`` (and its data dir)."""
    if bootstrap:
        return bootstrap, None
    log("starting a Kafka broker ...")
    data = base / "kafka"
    return start_broker(data), data


# -- DNS -----------------------------------------------------------------------------------------
def mx_zone(mx: dict[str, str], hosts: dict[str, str], **extra: Any) -> Zone:
    """A zone where each domain of ``mx`` has that one MX host, and each host of ``hosts`` its
    A record (loopback)."""
    return Zone(records={**{d: {"mx": [(10, m)]} for d, m in mx.items()},
                         **{h: {"a": [ip]} for h, ip in hosts.items()}}, **extra)


def start_dns(zone: Zone) -> DnsServerThread:
    return DnsServerThread(zone).start()


# -- processes -----------------------------------------------------------------------------------
class Procs:
    """Child processes, each in its own session (Ctrl-C reaches only us; we stop them)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                             start_new_session=True)
        out.close()
        self.procs[name] = p
        return p

    def log_text(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check(self, names: list[str] | None = None) -> None:
        for name in names or list(self.procs):
            p = self.procs.get(name)
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n"
                                   f"{self.log_text(name)[-3000:]}")

    def stop(self, name: str, timeout: float = 40.0) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=20)


def clean_up(procs: Procs, dns: DnsServerThread | None, broker_data: Path | None, base: Path,
             keep: bool) -> None:
    """Stop every process a run started, its DNS server and broker; remove its temp dir."""
    procs.stop_all()
    if dns is not None:
        dns.stop()
    if broker_data is not None:
        stop_broker(broker_data)
    if keep:
        log(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)


class Sink:
    """``smtp-sink -c``: a C SMTP server that accepts and discards; its running counters
    (``sess=N quit=N mesg=N``) are read from its output file."""

    def __init__(self, procs: Procs, ip: str, port: int, chunking: bool = False) -> None:
        """``chunking``: sim/chunking.py's sink instead (PIPELINING and CHUNKING; smtp-sink
        offers no CHUNKING), with the same counters."""
        self.ip, self.port = ip, port
        self.path = procs.logdir / "smtp-sink.log"
        if chunking:
            root = str(Path(__file__).resolve().parent.parent)
            self.pid = procs.spawn("smtp-sink", [sys.executable, "-m", "sim.chunking",
                                                 f"{ip}:{port}"],
                                   {**os.environ, "PYTHONPATH": root}).pid
        else:
            cmd = [SMTP_SINK, "-c", "-m", "1000"]
            if os.geteuid() == 0:
                cmd += ["-u", "nobody"]
            self.pid = procs.spawn("smtp-sink", [*cmd, f"{ip}:{port}", "1024"]).pid
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((ip, port), 1):
                    break
            except OSError:
                procs.check(["smtp-sink"])
                if time.monotonic() > deadline:
                    raise RuntimeError("smtp-sink did not start") from None
                time.sleep(0.05)

    def counts(self) -> tuple[int, int]:
        """(sessions, messages) so far."""
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 200))
                tail = f.read().decode(errors="replace")
        except OSError:
            return 0, 0
        found = re.findall(r"sess=(\d+) quit=\d+ mesg=(\d+)", tail)
        return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)


# -- /proc figures ---------------------------------------------------------------------------
def peak_rss_mb(pid: int | None) -> float | None:
    """VmHWM (peak resident set) of a live process, in MB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pss_mb(pid: int) -> float:
    """Proportional set size now (shared pages split between their users), in MB."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None, children: bool = False) -> float:
    """CPU time (user + system) of a process so far; with ``children`` that of its reaped
    children too. 0 for a process that is gone."""
    if pid is None:
        return 0.0
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
    return ticks / _TICK


def run_delay_seconds(pid: int | None) -> float:
    """Seconds the threads of a process (alive now) spent runnable but waiting for a CPU
    (``/proc/PID/task/*/schedstat``, second field): on a machine shared with other work, what
    a process lost to others, as opposed to waiting for I/O or timers. 0 for a process gone."""
    if pid is None:
        return 0.0
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for t in tasks:
        try:
            total += int((t / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


class CpuMeter:
    """CPU seconds spent by named processes between ``start()`` and ``stop()``; processes
    that appear in between count from zero."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.t0: dict[int, float] = {}
        self.d0: dict[int, float] = {}

    def _now(self) -> dict[int, float]:
        return {p: cpu_seconds(p, children=True) for ps in self.pids.values() for p in ps}

    def _delays(self) -> dict[int, float]:
        return {p: run_delay_seconds(p) for ps in self.pids.values() for p in ps}

    def start(self) -> None:
        self.t0 = self._now()
        self.d0 = self._delays()

    def run_delays(self) -> dict[str, float]:
        """Per name, the seconds its processes waited for a CPU since ``start()``."""
        now = self._delays()
        return {name: sum(now[p] - self.d0.get(p, 0.0) for p in ps)
                for name, ps in self.pids.items()}

    def stop(self, pids: dict[str, list[int]] | None = None) -> dict[str, float]:
        if pids is not None:
            self.pids = pids
        now = self._now()
        return {name: sum(now[p] - self.t0.get(p, 0.0) for p in ps)
                for name, ps in self.pids.items()}


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d.name))
    return out


def profile_report(d: Path, top: int) -> str:
    """The ``top`` functions by own and by cumulative time of every ``*.pstats`` under ``d``
    (each full text written beside its file)."""
    out = []
    for f in sorted(d.glob("**/*.pstats")):
        buf = io.StringIO()
        pstats.Stats(str(f), stream=buf).sort_stats("tottime").print_stats(top)
        buf2 = io.StringIO()
        pstats.Stats(str(f), stream=buf2).sort_stats("cumulative").print_stats(top)
        (f.with_suffix(".txt")).write_text(buf.getvalue() + buf2.getvalue())
        out.append(f"==== {f.relative_to(d)} (full text: {f.with_suffix('.txt')})\n"
                   + _trim(buf.getvalue(), top))
    return "\n".join(out)


def _trim(text: str, top: int) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "ncalls" in line:
            return "\n".join(lines[max(0, i - 3):i + 1 + top])
    return text
