"""``kmta demo``: the whole pipeline on this machine, on embedded defaults.

Starts a Kafka broker (assembled from Maven Central), the simulated providers and their DNS, a
brain worker, sender nodes and the admin panel; sends a few thousand messages with a progress bar
and prints what happened per ISP. Everything delivers to loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import tomli_w

from kmta.config import Config, load_config
from kmta.errors import KmtaError

__all__ = [
    "demo_config",
    "demo_domains",
    "demo_messages",
    "demo_rules",
    "provider_summary",
    "run_demo",
]

DEMO_PORTS = {"kafka": 9092, "dns": 5353, "smtp": 2525, "dashboard": 8050}
DEMO_DOMAIN = "sender.kmta.test"  # the From domain of the demo's messages


def demo_domains(home: Path) -> list[dict]:
    """The demo's sending domain, signed RSA + ed25519 (dual) with keys made here once
    (``kmta dkim keygen`` does the same), VERP bounces to ``bounce.<domain>``."""
    from kmta.pipeline.dkim import generate_key

    keys = []
    for selector, alg in (("demo-rsa", "rsa-sha256"), ("demo-ed", "ed25519-sha256")):
        path = home / "keys" / f"{DEMO_DOMAIN}.{selector}.pem"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(generate_key(alg))
        keys.append({"selector": selector, "key_file": str(path), "algorithm": alg})
    return [{"name": DEMO_DOMAIN, "return_path": f"bounce.{DEMO_DOMAIN}", "dkim": keys}]


def demo_config(home: Path, kafka: str, dns_port: int, smtp_port: int, dash_port: int,
                password: str, prefix: str = "kmta.", control_secret: str | None = None) -> dict:
    """The demo's config. Control commands are signed with ``control_secret`` (a fresh one per
    demo by default), so the demo runs like production: the worker applies only signed ones."""
    return {
        "data_dir": str(home),
        "kafka": {"bootstrap_servers": kafka, "topic_prefix": prefix,
                  "delay_tiers": [1, 5, 30, 120, 600, 3600]},
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"]},
        # the simulated providers live on loopback, a special-use range: opted in explicitly
        "delivery": {"smtp_port": smtp_port, "allowed_networks": ["127.0.0.0/8"],
                     "allow_special": ["127.0.0.0/8"], "helo_name": "demo.kmta.test",
                     # the demo's own messages are signed; others (kmta send) may go unsigned
                     "unsigned": "allow", "verp_secret": secrets.token_urlsafe(18)},
        "domains": demo_domains(home),
        "pools": [{"name": "default", "source_ips": ["127.0.0.2", "127.0.0.3"]}],
        "rules": {"override": str(home / "demo-rules.toml")},
        "dashboard": {"host": "127.0.0.1", "port": dash_port, "mode": "demo",
                      "password": password},
        "control": {"secret": control_secret or secrets.token_hex(32)},
    }


def demo_scenario(config: Config) -> str:
    """The embedded scenario plus the demo domain's DKIM TXT records in the simulated DNS."""
    from kmta.pipeline.dkim import load_keys, txt_record
    from sim.scenario import DEFAULT_SCENARIO_TOML

    txt = {f"{k.selector}._domainkey.{k.domain}": [txt_record(k)]
           for keys in load_keys(config.domains).values() for k in keys}
    return DEFAULT_SCENARIO_TOML + "\n" + tomli_w.dumps({"dns": {"txt": txt}})


def demo_rules() -> dict:
    """A local override for the demo, which must finish in a minute: retries come after
    seconds, connection limits match the simulators, and a provider's throttle reply is only a
    signal to the speed controller (action "defer": the shipped fallbacks that cap or lock
    after many of them last 30 minutes). The *speed* is the shipped controller's, unchanged: it
    is not told the simulators' capacities. Block replies still lock (for 20 s)."""
    from kmta.policy.kb import KnowledgeBase
    from kmta.policy.reply import Reply
    from kmta.policy.reply_rules import match_reply
    from sim.profiles import profile_replies
    from sim.scenario import default_scenario

    kb = KnowledgeBase.load()
    retry = {"mode": "growing", "interval": "3s", "factor": 2, "max_interval": "30s",
             "max_age": "1h"}
    isp: dict[str, dict] = {}
    for spec in default_scenario().providers:
        b = spec.behaviour
        name = kb.isp_for(spec.domains[0], [spec.mx_host]) if spec.domains else spec.name
        entry: dict = {"sending": {"tact": "10s", "connections_per_tact": 200,
                                   "max_connections": max(1, min(b.max_connections or 10, 10)),
                                   "messages_per_connection": max(
                                       1, min(b.messages_per_connection or 100, 100))}}
        replies = []
        prof = profile_replies(spec.profile)
        for text, action in ((prof.get("throttle_reply"), "defer"),
                             (prof.get("block_reply"), "lock"),
                             (prof.get("too_many_connections_reply"), "defer"),
                             (prof.get("max_messages_reply"), "defer"),
                             (prof.get("tempfail_reply"), "defer")):
            if not text:
                continue
            first = text.replace("{ip}", "127.0.0.2").split("\n")
            code = int(first[0][:3])
            reply = Reply.parse(code, "\n".join(line[4:] for line in first))
            rule = match_reply(reply, kb.effective(name))
            if rule is not None and all(r["name"] != rule.name for r in replies):
                new = {"name": rule.name, "match": rule.match, "action": action,
                       "category": rule.category or "rate_limit"}
                if action == "lock":
                    new.update(duration="20s", threshold=1)
                replies.append(new)
        entry["retry"] = dict(retry)
        if replies:
            entry["replies"] = replies
        if name in kb.isp_names():
            isp[name] = entry
    return {
        "default": {"retry": retry,
                    "sending": {"tact": "10s", "connections_per_tact": 200,
                                "max_connections": 10}},
        "isp": isp,
    }


def provider_summary(log: Path, since: float, source_ips: int) -> str:
    """What the simulated providers saw (their own log, from ``since``): per provider the
    blocks kmta earned, the throttle replies it got, and the peak delivered rate (best 5 s
    window, all source IPs) against the provider's capacity, which kmta was not told."""
    import json

    from sim.scenario import default_scenario

    caps = {p.name: p.behaviour.capacity for p in default_scenario().providers}
    per: dict[str, Counter] = defaultdict(Counter)
    seconds: dict[str, Counter] = defaultdict(Counter)
    if log.exists():
        with log.open(encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("time", 0) < since:
                    continue
                name, event = rec.get("provider", "?"), rec.get("event")
                per[name][event] += 1
                if event == "throttled" and rec.get("block"):
                    per[name]["blocks"] += 1
                if event == "accepted":
                    seconds[name][int(rec["time"])] += 1
    lines = [f"{'provider':<12}{'capacity/s':>11}{'peak/s':>9}{'of cap':>8}{'throttles':>11}"
             f"{'blocks':>8}{'refused':>9}"]
    for name in sorted(per, key=lambda k: -per[k]["accepted"]):
        cap = caps.get(name)
        total = cap * source_ips if cap else None
        secs = seconds[name]
        peak = max((sum(secs.get(t + i, 0) for i in range(5)) / 5 for t in secs), default=0.0)
        share = f"{peak / total * 100:.0f} %" if total else "-"
        lines.append(f"{name:<12}{total if total else '-':>11}{peak:>9.1f}{share:>8}"
                     f"{per[name]['throttled']:>11}{per[name]['blocks']:>8}"
                     f"{per[name]['blocked']:>9}")
    lines.append("capacity/s: what the simulated provider accepts from the pool's "
                 f"{source_ips} source IPs (kmta is not told); blocks: blocks kmta earned "
                 "(the provider's K throttles within a minute); refused: attempts refused by a "
                 "block")
    return "\n".join(lines)


def demo_messages(n: int, rng: random.Random) -> list[dict]:
    """Messages over the simulated providers' domains, with a few unknown users, greylisted
    and temporarily failing recipients, and domains that do not exist or take no mail."""
    from sim.scenario import default_scenario

    weights = {"gmail.com": 30, "yahoo.com": 12, "aol.com": 3, "outlook.com": 10,
               "hotmail.com": 6, "mail.ru": 5, "yandex.ru": 5, "orange.fr": 4,
               "shop-example.test": 8, "news-example.test": 6, "greylist-example.test": 2,
               "nx.invalid": 1, "nullmx.test": 1}
    known = set(default_scenario().domains()) | {"nx.invalid", "nullmx.test"}
    domains = [d for d in weights if d in known]
    docs = []
    for i in range(n):
        d = rng.choices(domains, [weights[x] for x in domains])[0]
        r = rng.random()
        local = (f"unknown{i}" if r < 0.01 else f"tempfail{i}" if r < 0.03
                 else f"user{i}")
        docs.append({"from": f"news@{DEMO_DOMAIN}", "to": f"{local}@{d}",
                     "subject": f"Demo message {i}", "text": f"Hello {local}, this is {i}.\n",
                     "campaign": rng.choice(["spring-sale", "newsletter", "welcome"]),
                     "unsubscribe_url": f"https://{DEMO_DOMAIN}/unsubscribe?m={i}",
                     "unsubscribe_mailto": f"unsubscribe@{DEMO_DOMAIN}",
                     "meta": {"n": i}})
    return docs


class Procs:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, "-m", "kmta.cli", *args], stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p))
        return p

    def check(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise KmtaError(f"{name} exited with {p.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 30
        for _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_line(path: Path, text: str, timeout: float, procs: Procs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        procs.check()
        time.sleep(0.1)
    raise KmtaError(f"timed out waiting for {text!r} in {path}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(args: argparse.Namespace) -> int:
    from kmta.pipeline.kafkaio import ensure_topics
    from ops.kafka import cli as kafka_cli
    from ops.kafka import manager

    env = os.environ
    home = Path(env.get("KMTA_HOME", ".kmta")).absolute() / "demo"
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"kmta demo: working directory {home}", flush=True)
    print("[1/6] Kafka (KRaft) from Maven Central jars ...", flush=True)
    libs = manager.ensure_jars(kafka_cli.default_cache_dir(env),
                               kafka_home=Path(env["KAFKA_HOME"]) if env.get("KAFKA_HOME")
                               else None)
    if not any(n.alive for n in manager.status(home / "kafka")):
        shutil.rmtree(home / "kafka", ignore_errors=True)  # each demo starts from empty topics
    info = manager.start(home / "kafka", 1, DEMO_PORTS["kafka"], libs=libs)
    signal.signal(signal.SIGTERM, _interrupt)
    password = secrets.token_urlsafe(9)
    cfg_path = home / "demo.toml"
    cfg_path.touch(mode=0o600)  # it holds the control secret and the panel password
    cfg_path.write_text(tomli_w.dumps(demo_config(
        home, info.bootstrap_servers, DEMO_PORTS["dns"], DEMO_PORTS["smtp"],
        DEMO_PORTS["dashboard"], password)))
    (home / "demo-rules.toml").write_text(tomli_w.dumps(demo_rules()))
    config = load_config(cfg_path)
    for d in config.domains:
        sels = ", ".join(f"{k.selector} ({k.algorithm})" for k in d.dkim)
        print(f"      signing {d.name}: {sels}; keys in {home / 'keys'}", flush=True)
    asyncio.run(ensure_topics(config))
    procs = Procs(logs)
    try:
        print("[2/6] simulated providers + DNS on 127.0.1.x ...", flush=True)
        scenario = home / "scenario.toml"
        scenario.write_text(demo_scenario(config))
        procs.start("isp-sim", ["isp-sim", "--scenario", str(scenario),
                                "--dns", f"127.0.0.1:{DEMO_PORTS['dns']}",
                                "--smtp-port", str(DEMO_PORTS["smtp"]),
                                "--log", str(logs / "isp-sim.jsonl")])
        _wait_line(logs / "isp-sim.log", "ready", 30, procs)
        check = subprocess.run([sys.executable, "-m", "kmta.cli", "--config", str(cfg_path),
                                "dkim", "check"], capture_output=True, text=True, timeout=60)
        for line in check.stdout.splitlines():  # what the operator's kmta dkim check says
            print(f"      DKIM {line}", flush=True)
        print(f"[3/6] brain worker + {args.senders} sender nodes + admin panel ...", flush=True)
        procs.start("worker", ["--config", str(cfg_path), "worker", "--name", "brain-1"])
        for i in range(args.senders):
            procs.start(f"sender-{i + 1}", ["--config", str(cfg_path), "sender",
                                            "--node", f"sender-{i + 1}"])
        procs.start("dashboard", ["--config", str(cfg_path), "dashboard"])
        for i in range(args.senders):
            _wait_line(logs / f"sender-{i + 1}.log", "assigned", 60, procs)
        print(f"[4/6] sending {args.messages} messages to {config.topic('outbox')} ...",
              flush=True)
        started = time.time()
        summary = asyncio.run(_send_and_wait(config, args.messages, procs))
        print("[5/6] results per ISP", flush=True)
        print(summary)
        print(provider_summary(logs / "isp-sim.jsonl", started,
                               len(config.pools[0].source_ips) if config.pools else 1))
        url = f"http://127.0.0.1:{DEMO_PORTS['dashboard']}/"
        print(f"[6/6] admin panel: {url}  (user admin, password {password})", flush=True)
        print(f"      logs: {logs}", flush=True)
        if not args.exit:
            print("Press Ctrl-C to stop the demo.", flush=True)
            while True:
                procs.check()
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        procs.stop()
        if not args.keep_kafka:
            manager.stop(home / "kafka")
    return 0


async def _send_and_wait(config: Config, n: int, procs: Procs) -> str:
    from kmta.client import Progress, ResultCollector, produce

    docs = demo_messages(n, random.Random(42))
    collector = ResultCollector(config)
    await collector.start()
    t0 = time.monotonic()
    ids = await produce(config, docs, Progress(len(docs), "sent"))
    progress = Progress(len(ids), "final")
    deadline = time.monotonic() + 900
    want = set(ids)
    reached: dict[float, float] = {}  # share of messages final -> seconds since sending began
    greylisted = {i for i, d in zip(ids, docs, strict=False)
                  if d["to"].endswith("@greylist-example.test")}
    plain = want - greylisted  # greylisting holds a message back 30 s by design
    plain_99: float | None = None
    while time.monotonic() < deadline:
        await collector.poll()
        done = len(want & collector.finals.keys())
        progress.update(done, collector.summary_line(want))
        for share in (0.9, 0.99, 1.0):
            if share not in reached and done >= share * len(want):
                reached[share] = time.monotonic() - t0
        if plain_99 is None and len(plain & collector.finals.keys()) >= 0.99 * len(plain):
            plain_99 = time.monotonic() - t0
        if done == len(want):
            break
        procs.check()
    progress.close(len(want & collector.finals.keys()), collector.summary_line(want))
    elapsed = time.monotonic() - t0
    await collector.stop()
    per_isp: dict[str, Counter] = defaultdict(Counter)
    deferrals: Counter = Counter()
    for i in ids:
        evs = collector.events.get(i, [])
        fin = collector.finals.get(i)
        isp = (fin or (evs[-1] if evs else {})).get("isp") or "?"
        per_isp[isp][fin["status"] if fin else "pending"] += 1
        deferrals[isp] += sum(1 for e in evs if e["status"] == "deferred")
    cols = ["delivered", "bounced", "expired", "suppressed", "rejected", "cancelled", "pending"]
    lines = [f"{'ISP':<22}" + "".join(f"{c:>11}" for c in cols) + f"{'deferrals':>11}"]
    for isp in sorted(per_isp, key=lambda k: -sum(per_isp[k].values())):
        lines.append(f"{isp:<22}" + "".join(f"{per_isp[isp][c]:>11}" for c in cols)
                     + f"{deferrals[isp]:>11}")
    tot = Counter()
    for c in per_isp.values():
        tot.update(c)
    lines.append(f"{'total':<22}" + "".join(f"{tot[c]:>11}" for c in cols)
                 + f"{sum(deferrals.values()):>11}")
    lines.append(f"{len(ids)} messages in {elapsed:.1f} s ({len(ids) / elapsed:.0f} msg/s "
                 "end to end, paced per provider); final: " + ", ".join(
                     f"{share * 100:.0f} % after {at:.0f} s" for share, at in sorted(
                         reached.items()))
                 + (f"; 99 % of the {len(plain)} not greylisted after {plain_99:.0f} s"
                    if plain_99 is not None else ""))
    return "\n".join(lines)

