"""How long a read-committed reader of the results topic takes to reach its end while a paced
run flows (issue 14, "Readers"): ``kcat -C -e`` with read_committed and read_uncommitted, and
``kmta results`` (which stops at the end offsets it saw when it started), every ``--every``
seconds. Prints one line per probe; delivers to the simulated providers on loopback only.

    python scripts/probe_readers.py --messages 4000 --senders 2 --rate 600
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ops.deployment import Pipeline, messages
from ops.kit import kafka_for, log, stop_broker

ROOT = Path(__file__).resolve().parent.parent


def paced_rules(per_min: int) -> dict:
    per_s = max(1, per_min // 60)  # speed is messages per tact
    isp = {"sending": {"tact": "1s", "max_connections": 4, "messages_per_connection": 100},
           "speed": {"min": 1, "max": per_s, "start": per_s},
           "retry": {"mode": "fixed", "interval": "5s", "max_attempts": 5, "max_age": "1h"}}
    default = {k: v for k, v in isp.items() if k != "speed"}
    return {"default": default, "isp": {n: isp for n in ("gmail", "yahoo", "outlook", "mailru")}}


def timed(cmd: list[str], limit: float) -> tuple[float | None, int]:
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return None, 0
    return time.monotonic() - t0, len(r.stdout.splitlines())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--rate", type=int, default=600, help="messages a minute per ISP")
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--limit", type=float, default=120.0, help="seconds before a probe gives up")
    ap.add_argument("--bootstrap")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kmta-readers-"))
    bootstrap, broker_data = kafka_for(a.bootstrap, base)
    p = Pipeline(bootstrap, base, rules=paced_rules(a.rate))
    try:
        p.start(senders=a.senders)
        topic = p.config.topic("results")
        ids = p.produce(messages(a.messages, ["gmail.com", "yahoo.com", "outlook.com",
                                              "mail.ru"]))
        done = threading.Event()
        worst: dict[str, float] = {}

        def finals() -> None:
            p.wait_finals(ids, timeout=3600)
            done.set()

        threading.Thread(target=finals, daemon=True).start()
        t0 = time.monotonic()
        readers = {
            "kcat committed": ["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-o",
                               "beginning", "-X", "isolation.level=read_committed"],
            "kcat uncommitted": ["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-o",
                                 "beginning", "-X", "isolation.level=read_uncommitted"],
            "kmta results": [sys.executable, "-m", "kmta.cli", "--config", str(p.config_path),
                             "results", "--json"],
        }
        while not done.is_set():
            for name, cmd in readers.items():
                t, n = timed(cmd, a.limit)
                shown = "stalled (gave up)" if t is None else f"{t:6.2f} s"
                worst[name] = max(worst.get(name, 0.0), a.limit if t is None else t)
                log(f"t={time.monotonic() - t0:5.0f}s {name:17s} {shown}  {n} records",
                    "readers")
            done.wait(a.every)
        log("worst: " + ", ".join(f"{k} {v:.1f} s" for k, v in worst.items()), "readers")
    finally:
        p.close()
        if broker_data:
            stop_broker(broker_data)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
