"""OS-level handling of one broker JVM: detached launch, pid files, liveness, log tails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

__all__ = ["alive", "launch", "listening", "log_tail", "read_pid", "send_signal", "tail"]

PID_FILE = "kafka.pid"


def launch(node_dir: Path, cmd: list[str]) -> int:
    """Start ``cmd`` detached, output appended to ``node_dir/stdout.log``; write and return its pid.

    A shell backgrounds the JVM and exits at once, so the broker is re-parented away from us (no
    zombie or ResourceWarning in the caller) and its new session keeps it clear of Ctrl-C.
    """
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", str(node_dir / "stdout.log"), *cmd],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    pid = int(out.stdout.strip())
    (node_dir / PID_FILE).write_text(f"{pid}\n")
    return pid


def read_pid(node_dir: Path) -> int | None:
    try:
        return int((node_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int, tag: str) -> bool:
    """Is ``pid`` a live process whose command line contains ``tag``?

    On Linux the tag check rejects pids recycled by other programs, and zombies count as dead.
    """
    if Path("/proc/self").is_dir():
        proc = Path(f"/proc/{pid}")
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        return state != "Z" and tag.encode() in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def send_signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(node_dir: Path) -> str:
    """The last lines of the node's JVM output and broker log, for error messages."""
    parts = []
    for path in (node_dir / "stdout.log", node_dir / "logs" / "server.log"):
        if path.is_file():
            parts.append(f"--- {path} ---\n{tail(path.read_text(errors='replace'))}")
    return "\n".join(parts) or "(no logs)"


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
