"""One isolated kmta deployment on a real Kafka broker, with the simulated providers and kmta's
own processes: what the integration tests and ``make bench-adaptive`` run against.

Each test gets a fresh topic prefix (so fresh topics and consumer groups), its own DNS and SMTP
ports, and its own worker and sender processes started with ``python -m kmta.cli``, exactly as a
user starts them. Waiting is polling with a deadline, never a blind sleep.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tomli_w

from kmta.client import ResultCollector
from kmta.config import Config, load_config
from kmta.pipeline.control import make_command
from kmta.pipeline.kafkaio import client_options, ensure_topics, make_producer, topic_partitions
from ops.kit import free_port, wait_for
from schemas import envelope_codec

ROOT = Path(__file__).resolve().parent.parent

FAST_SCENARIO = """
[dns]
ttl = 60
nxdomain = ["nx.invalid"]
null_mx = ["nullmx.test"]
servfail = ["servfail.test"]

[[provider]]
name = "gmail"
profile = "gmail"
ip = "127.0.1.1"
domains = ["gmail.com", "googlemail.com"]

[[provider]]
name = "yahoo"
profile = "yahoo"
ip = "127.0.1.2"
domains = ["yahoo.com", "aol.com"]

[[provider]]
name = "outlook"
profile = "outlook"
ip = "127.0.1.3"
domains = ["outlook.com", "hotmail.com"]

[[provider]]
name = "mailru"
profile = "mailru"
ip = "127.0.1.4"
domains = ["mail.ru", "bk.ru"]

[[provider]]
name = "small"
profile = "generic"
ip = "127.0.1.10"
domains = ["shop-example.test", "news-example.test"]
"""

# Limits far above what the fast simulators need, so tests of the plumbing are not paced.
_FAST_ISP: dict[str, Any] = {
    "sending": {"tact": "1s", "max_connections": 8, "messages_per_connection": 500},
    "speed": {"min": 1, "max": 5000, "start": 5000},
    "retry": {"mode": "fixed", "interval": "2s", "max_attempts": 5, "max_age": "1h"},
}
FAST_RULES: dict[str, Any] = {
    "default": _FAST_ISP,
    "isp": {name: _FAST_ISP for name in ("gmail", "yahoo", "outlook", "mailru")},
}


def run(coro):
    return asyncio.run(coro)


class Pipeline:
    """One isolated kmta deployment for one test."""

    def __init__(self, bootstrap: str, tmp: Path, scenario: str = FAST_SCENARIO,
                 rules: dict | None = None, extra: dict | None = None,
                 pools: list[dict] | None = None, metrics: bool = False) -> None:
        self.tmp = tmp
        # metrics: each process gets a config of its own with a [metrics] listen port of its
        # own (``metrics_url(name)``); the rest of the config is the same
        self.metrics_ports: dict[str, int] | None = {} if metrics else None
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        sim_ips = ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4", "127.0.1.10",
                   "127.0.1.11"]
        self.smtp_port = free_port("127.0.0.1", sim_ips)
        self.dns_port = free_port()
        self.sim_log = tmp / "sim.jsonl"
        (tmp / "scenario.toml").write_text(scenario)
        rules_path = tmp / "rules.toml"
        rules_path.write_text(tomli_w.dumps(FAST_RULES if rules is None else rules))
        cfg: dict[str, Any] = {
            "data_dir": str(tmp / "data"),
            "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": self.prefix},
            "dns": {"nameservers": [f"127.0.0.1:{self.dns_port}"], "negative_ttl": 5},
            "delivery": {"smtp_port": self.smtp_port, "allowed_networks": ["127.0.0.0/8"],
                         "allow_special": ["127.0.0.0/8"],
                         "helo_name": "test.kmta.local", "unsigned": "allow"},
            "pools": pools if pools is not None else [
                {"name": "default", "source_ips": ["127.0.0.2", "127.0.0.3"]}],
            "rules": {"override": str(rules_path)},
        }
        for section, values in (extra or {}).items():
            if isinstance(values, dict):
                cfg.setdefault(section, {}).update(values)
            else:
                cfg[section] = values
        self.config_path = tmp / "kmta.toml"
        self.config_path.write_text(tomli_w.dumps(cfg))
        self.config: Config = load_config(self.config_path)
        self.procs: dict[str, subprocess.Popen] = {}
        run(ensure_topics(self.config))

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.metrics_ports is not None:
            mine = self._config_of(name)
            args = [mine if a == str(self.config_path) else a for a in args]
        with open(self.tmp / f"{name}.log", "ab") as log:  # the child keeps its own copy
            p = subprocess.Popen([sys.executable, "-m", "kmta.cli", *args], stdout=log,
                                 stderr=subprocess.STDOUT, cwd=self.tmp, env=env,
                                 start_new_session=True)
        self.procs[name] = p
        return p

    def _config_of(self, name: str) -> str:
        assert self.metrics_ports is not None
        port = self.metrics_ports.setdefault(name, free_port())
        doc = tomllib.loads(self.config_path.read_text())
        doc["metrics"] = {"listen": f"127.0.0.1:{port}"}
        path = self.tmp / f"{name}.toml"
        path.write_text(tomli_w.dumps(doc))
        return str(path)

    def metrics_url(self, name: str) -> str:
        """The base URL of a process's metrics port (``/metrics``, ``/healthz``, ``/readyz``)."""
        assert self.metrics_ports is not None, "Pipeline(metrics=True) serves them"
        return f"http://127.0.0.1:{self.metrics_ports[name]}"

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_log(self, name: str, text: str, timeout: float = 60) -> None:
        def ok() -> bool:
            p = self.procs[name]
            if p.poll() is not None:
                raise AssertionError(f"{name} exited {p.returncode}:\n{self.log(name)[-3000:]}")
            return text in self.log(name)
        wait_for(ok, timeout, f"{text!r} in {name} log")

    def start_sim(self) -> None:
        self._spawn("sim", ["isp-sim", "--scenario", str(self.tmp / "scenario.toml"),
                            "--dns", f"127.0.0.1:{self.dns_port}",
                            "--smtp-port", str(self.smtp_port), "--log", str(self.sim_log)])
        self._wait_log("sim", "ready", 30)

    def start_worker(self, name: str = "worker") -> None:
        self._spawn(name, ["--config", str(self.config_path), "worker", "--name", name])

    def start_sender(self, name: str = "sender-1") -> None:
        before = self.log(name).count("assigned")
        self._spawn(name, ["--config", str(self.config_path), "sender", "--node", name])
        wait_for(lambda: self._alive(name) and self.log(name).count("assigned") > before, 90,
                 f"{name} to get partitions")

    def start_inbound(self, name: str = "inbound", *args: str) -> None:
        mark = "kmta inbound: SMTP on"
        before = self.log(name).count(mark)  # the log is appended to across restarts
        self._spawn(name, ["--config", str(self.config_path), "inbound", "--node", name, *args])
        if "--process-only" not in args:
            wait_for(lambda: self._alive(name) and self.log(name).count(mark) > before, 60,
                     f"{name} to listen")

    def start_unsubscribe(self, name: str = "unsubscribe") -> None:
        self._spawn(name, ["--config", str(self.config_path), "unsubscribe", "--node", name])
        self._wait_log(name, "kmta unsubscribe: HTTP on", 60)

    def _alive(self, name: str) -> bool:
        p = self.procs[name]
        if p.poll() is not None:
            raise AssertionError(f"{name} exited {p.returncode}:\n{self.log(name)[-3000:]}")
        return True

    def start(self, senders: int = 1) -> None:
        self.start_sim()
        self.start_worker()
        for i in range(senders):
            self.start_sender(f"sender-{i + 1}")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    def kill(self, name: str) -> None:
        self.stop(name, signal.SIGKILL)

    def pids(self) -> dict[str, int]:
        """The pid of each process still running: a fault test checks none was restarted."""
        return {name: p.pid for name, p in self.procs.items() if self._alive(name)}

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=20)

    # -- Kafka -------------------------------------------------------------------------------
    def produce(self, docs: list[dict]) -> list[str]:
        from kmta.client import produce
        return run(produce(self.config, docs))

    def produce_raw(self, values: list[bytes], topic: str = "outbox") -> None:
        async def go() -> None:
            p = make_producer(self.config)
            await p.start()
            try:
                for v in values:
                    await p.send_and_wait(self.config.topic(topic), v)
            finally:
                await p.stop()
        run(go())

    def control(self, action: str, isp: str, **kw: Any) -> None:
        cmd = make_command(action, isp, "test", now=time.time(), secret=None, **kw)
        self.produce_raw_keyed("control", isp.encode(), cmd.to_json())

    def produce_raw_keyed(self, topic: str, key: bytes, value: bytes | None) -> None:
        async def go() -> None:
            p = make_producer(self.config)
            await p.start()
            try:
                await p.send_and_wait(self.config.topic(topic), value, key=key)
            finally:
                await p.stop()
        run(go())

    def read_topic(self, topic: str) -> list[dict]:
        """Every record of a topic, decoded as JSON (from the beginning to the current end);
        the queue and delay topics' records as their envelopes' JSON (the body as text)."""
        internal = topic == "queue" or topic.startswith("delay.")

        def decode(value: bytes) -> dict:
            if internal:
                return json.loads(envelope_codec.readable(value)[0])
            return json.loads(value)

        from aiokafka import AIOKafkaConsumer

        async def go() -> list[dict]:
            c = AIOKafkaConsumer(**client_options(self.config), enable_auto_commit=False,
                                 isolation_level="read_committed")
            await c.start()
            try:
                tps = await topic_partitions(self.config, [self.config.topic(topic)])
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                end = await c.end_offsets(tps)
                out: list[dict] = []
                while True:
                    pos = {tp: await c.position(tp) for tp in tps}
                    if all(pos[tp] >= end[tp] for tp in tps):
                        return out
                    batch = await c.getmany(timeout_ms=500)
                    for recs in batch.values():
                        out.extend(decode(r.value) for r in recs if r.value is not None)
            finally:
                await c.stop()
        return run(go())

    def results(self) -> list[dict]:
        return self.read_topic("results")

    def finals(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for ev in self.results():
            if ev.get("final"):
                out.setdefault(ev["id"], ev)
        return out

    def wait_finals(self, ids: Iterable[str], timeout: float) -> dict[str, dict]:
        want = set(ids)
        collector = ResultCollector(self.config)

        async def go() -> dict[str, dict]:
            await collector.start(from_beginning=True)
            try:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    await collector.poll(500)
                    if want <= collector.finals.keys():
                        return {i: collector.finals[i] for i in want}
                    for name in self.procs:
                        self._alive(name)
                missing = want - collector.finals.keys()
                raise AssertionError(f"{len(missing)} of {len(want)} ids without a final "
                                     f"event after {timeout}s, e.g. {sorted(missing)[:5]}")
            finally:
                await collector.stop()
        return run(go())

    def sim_events(self) -> list[dict]:
        if not self.sim_log.exists():
            return []
        out = []
        for line in self.sim_log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written
        return out


def messages(n: int, domains: list[str], prefix: str = "user", **extra: Any) -> list[dict]:
    return [{"from": "sender@kmta.test", "to": f"{prefix}{i}@{domains[i % len(domains)]}",
             "subject": f"test {i}", "text": f"body {i}\n", **extra} for i in range(n)]


def generic_scenario(*providers: tuple[str, str, list[str]]) -> str:
    """A scenario of generic simulated providers, ``(name, ip, domains)`` each: one provider
    per ISP under test, so that the sim's connection log tells the ISPs apart."""
    out = "[dns]\nttl = 60\n"
    for name, ip, domains in providers:
        out += (f'\n[[provider]]\nname = "{name}"\nprofile = "generic"\nip = "{ip}"\n'
                f"domains = {json.dumps(domains)}\n")
    return out


def held_on_sender(p: Pipeline, isp: str) -> int:
    """Messages of ``isp`` waiting on sender nodes that report the ISP as paused (the nodes'
    latest heartbeats)."""
    latest: dict[str, dict] = {}
    for st in p.read_topic("nodes"):
        latest[st["node"]] = st
    loads = [n["isps"].get(isp) for n in latest.values()]
    return sum(x["backlog"] for x in loads if x and x["paused"])


def held_at_sender(p: Pipeline, isp: str, ids: Iterable[str]) -> bool:
    """Every one of ``ids`` is queued (its ``queued`` event, written with its queue record) and
    a sender node shows ``isp`` paused with a backlog. A blocked lane pauses its partition at
    the first record that reaches it, so the rest of the held messages may wait in the queue
    topic behind the paused partition rather than in the lane: how many the heartbeat counts
    depends on how the router's transactions split them."""
    want = set(ids)
    queued = {e["id"] for e in p.results() if e.get("status") == "queued" and e["id"] in want}
    return queued == want and held_on_sender(p, isp) > 0
