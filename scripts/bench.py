#!/usr/bin/env python3
"""``make bench``: kmta's end-to-end throughput into a fast local SMTP sink, next to Postfix.

One run, on this machine, everything on loopback:

1. a Kafka broker of its own on free ports (or ``--bootstrap``), Postfix's ``smtp-sink`` on
   127.0.1.50, kmta's simulated DNS answering every bench domain with an MX on that address;
2. kmta: a brain worker and ``--senders`` sender nodes (``python -m kmta.cli``), rules without
   pacing; a warm-up batch, then ``--messages`` messages of ``--size`` bytes produced to the outbox
   and every final result event consumed;
3. Postfix (when installed and we are root): a throwaway instance in the temp dir, relayhost =
   the same sink; ``smtp-source`` injects the same number of messages of the same bytes.

Printed: produce (inject) rate, end-to-end rate, steady delivery rate (10 %..90 % of the
messages, counted at the sink for both), CPU per message by process (also above each process's
idle rate, ``--idle``), peak RSS (VmHWM) per process, and kmta/Postfix ratios.
``--compare LABEL=PATH`` adds kmta runs from other checkouts (e.g. the code before a change) to
the same run, for before/after ratios on a noisy machine. ``--profile DIR`` runs the worker and
senders under cProfile (``KMTA_PROFILE``) and prints their hot spots; ``--profile-clock cpu``
counts their CPU time instead of wall time (``KMTA_PROFILE_CLOCK``).

``--rtt MS`` puts a delaying proxy (ops/rttproxy.py: MS/2 each way) between the senders (and
Postfix) and the sink, sends every message to one domain from one source IP, and adds a
``lockstep`` variant (``[delivery] pipelining = false``) beside ``kmta``: printed per variant
are the connections used, per-connection throughput (messages per second of a connection's
busy time) and the client's turns per message. ``--sink chunking`` replaces smtp-sink
(PIPELINING only) by sim/chunking.py's sink, which offers CHUNKING too (BDAT). Short runs:
e.g. ``--rtt 30 --messages 2000 --warmup 50 --senders 1 --max-connections 1 --no-postfix``.

``--dkim ALG`` signs on both sides with the same key: kmta's worker at routing, Postfix through
Debian's OpenDKIM as a milter (ops/opendkim.py; relaxed/relaxed over kmta's header list; its
CPU and RSS count as Postfix's). One message from each goes to a sink that keeps it
(127.0.1.51, domain verify.kmta.test) and its signature is checked with dkimpy.

Every process started here is stopped at the end, also on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import tomli_w

from kmta.client import ResultCollector, produce
from kmta.config import Config, load_config
from kmta.pipeline.kafkaio import ensure_topics
from ops import signing_cost
from ops.figures import steady_rate
from ops.kit import (
    CpuMeter,
    Procs,
    Sink,
    broker_pid,
    children_of,
    clean_up,
    free_port,
    interrupt_on_signals,
    kafka_for,
    log,
    mx_zone,
    peak_rss_mb,
    port_free,
    profile_report,
    pss_mb,
    start_dns,
)
from ops.opendkim import KeepSink, OpenDkim, dkim_verdict
from ops.postfix import MASTER_CF
from ops.rttproxy import DelayProxy
from sim.dns import DnsServerThread

ROOT = Path(__file__).resolve().parent.parent

SINK_IP = "127.0.1.50"
SOURCE_IPS = ["127.0.0.2", "127.0.0.3"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "mail.ru",
           "shop-example.test", "news-example.test"]
RTT_DOMAINS = ["shop-example.test"]  # --rtt: one lane (the default rule, one partition)
KNOWN_ISPS = ("gmail", "yahoo", "outlook", "mailru")
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
KEEP_IP = "127.0.1.51"  # --dkim: a sink that keeps messages, for checking their signatures
VERIFY_DOMAIN = "verify.kmta.test"


def bench_rules(max_connections: int = 8) -> dict[str, Any]:
    """As tests/harness.py FAST_RULES: limits far above what the sink needs, so nothing is
    paced; ``max_connections`` per ISP (at least 2 for the known ISPs: some have 2 queue
    partitions; 1 is for --rtt, whose one domain has the default rule)."""
    lane: dict[str, Any] = {
        "sending": {"tact": "1s", "max_connections": max_connections,
                    "messages_per_connection": 500},
        "speed": {"min": 1, "max": 5000, "start": 5000},
        "retry": {"mode": "fixed", "interval": "2s", "max_attempts": 5, "max_age": "1h"},
    }
    isp = {**lane, "sending": {**lane["sending"], "max_connections": max(2, max_connections)}}
    return {"default": lane, "isp": {name: isp for name in KNOWN_ISPS}}


# -- message content ---------------------------------------------------------------------------
BODIES = ("newsletter", "text")


def make_docs(n: int, size: int, tag: str, domains: list[str] = DOMAINS,
              body: str = "newsletter") -> list[dict]:
    """``n`` messages over the bench domains whose composed RFC 5322 text is ~``size`` bytes:
    a newsletter (``text`` and ``html`` alternatives, personalised per recipient: greeting,
    tracking links, unsubscribe link) or one plain-text sentence repeated (``text``)."""
    if body == "text":
        text = _body(size)
        return [{"id": f"{tag}-{i}", "from": "bench@sender.kmta.test",
                 "to": f"user{i}@{domains[i % len(domains)]}", "subject": f"bench message {i}",
                 "text": text, "campaign": "bench"} for i in range(n)]
    text, html = newsletter(size)
    docs = []
    for i in range(n):
        who, mid = f"Reader {i}", f"{tag}-{i}"
        docs.append({"id": mid, "from": "bench@sender.kmta.test",
                     "to": f"user{i}@{domains[i % len(domains)]}",
                     "subject": f"Your weekly picks, {who}: autumn deals inside",
                     "text": text.replace("{{name}}", who).replace("{{id}}", mid),
                     "html": html.replace("{{name}}", who).replace("{{id}}", mid),
                     "campaign": "bench"})
    return docs


_VOCABULARY = (
    "offer season collection member shipping order account update weekly guide style home "
    "garden kitchen travel city weekend event ticket price discount limited new arrivals "
    "favourite choice quality design team story customer review rating local fresh market "
    "delivery return easy simple today tomorrow month exclusive access early sale stock "
    "colour size fit comfort classic modern winter autumn spring summer gift card save "
    "points reward program partner service support help question answer recipe coffee tea "
    "wine cheese bread book film music concert museum park beach mountain lake river"
)


def newsletter(size: int) -> tuple[str, str]:
    """A bulk-mail newsletter of about ``size`` composed bytes, as ESPs send them: an HTML
    part (table layout, inline styles, tracking links and images, lines of at most ~120
    characters, a few typographic characters outside ASCII) and its plain-text alternative.
    ``{{name}}`` and ``{{id}}`` are per-recipient placeholders. Deterministic."""
    import random

    rng = random.Random(size)
    overhead = len(composed_sample("x", "<p>x</p>").encode()) + 64  # headers, boundaries
    want = max(size - overhead, 600)

    def sentence() -> str:
        words = rng.choices(_VOCABULARY.split(), k=rng.randint(8, 16))
        return words[0].capitalize() + " " + " ".join(words[1:]) + rng.choice(".!.?")

    def para(k: int) -> str:
        return " ".join(sentence() for _ in range(k))

    head = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<title>Weekly picks</title>\n<style>body{margin:0;padding:0;background:#f4f4f4}'
            ' .btn{background:#e4572e;color:#ffffff;padding:12px 24px;border-radius:4px;'
            'text-decoration:none}</style>\n</head>\n<body>\n'
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            'style="background:#f4f4f4">\n<tr><td align="center">\n'
            '<table role="presentation" width="600" cellpadding="0" cellspacing="0" '
            'style="background:#ffffff;font-family:Arial,Helvetica,sans-serif;color:#333333">\n'
            '<tr><td style="padding:24px"><img src="https://img.news-example.test/logo.png" '
            'width="160" height="40" alt="News Example"></td></tr>\n'
            '<tr><td style="padding:0 24px;font-size:16px">Hello {{name}} \u2014 here is '
            'what\u2019s new this week.</td></tr>\n')
    foot = ('<tr><td style="padding:24px;font-size:12px;color:#888888">You receive this '
            'because you subscribed at news-example.test.<br>\n<a href="https://news-example'
            '.test/u?m={{id}}" style="color:#888888">Unsubscribe</a> \u00b7 <a href="https://'
            'news-example.test/prefs?m={{id}}" style="color:#888888">Preferences</a><br>\n'
            'News Example Ltd, 1 Market Street, Example City</td></tr>\n</table>\n'
            '</td></tr>\n</table>\n<img src="https://t.news-example.test/o.gif?m={{id}}" '
            'width="1" height="1" alt="">\n</body>\n</html>\n')
    text_head = "Hello {{name}} \u2014 here is what\u2019s new this week.\n\n"
    text_foot = ("Unsubscribe: https://news-example.test/u?m={{id}}\n"
                 "News Example Ltd, 1 Market Street, Example City\n")
    blocks: list[str] = []
    texts: list[str] = []
    k = 0
    while len(head) + len(foot) + len(text_head) + len(text_foot) + sum(map(len, blocks)) \
            + sum(map(len, texts)) < want:
        k += 1
        title, body = sentence().rstrip(".!?"), para(rng.randint(3, 6))
        price = f"\u20ac{rng.randint(5, 400)},{rng.randint(0, 99):02d}"
        link = f"https://t.news-example.test/c?m={{{{id}}}}&amp;l={k}"
        lines = textwrap.wrap(body, 110)
        blocks.append(
            f'<tr><td style="padding:16px 24px"><img src="https://img.news-example.test/p{k}'
            f'.jpg" width="552" height="276" alt="{title}" style="display:block">\n'
            f'<h2 style="font-size:20px;margin:12px 0">{title}</h2>\n<p style="font-size:'
            f'15px;line-height:22px">' + "\n".join(lines) + f'</p>\n<p>From {price} \u2013 '
            f'<a class="btn" href="{link}">Shop now</a></p></td></tr>\n')
        texts.append(f"{title}\n{'-' * len(title)}\n" + "\n".join(textwrap.wrap(body, 76))
                     + f"\nFrom {price}: {link.replace('&amp;', '&')}\n\n")
    return (text_head + "".join(texts) + text_foot, head + "".join(blocks) + foot)


def _body(size: int) -> str:
    overhead = len(composed_sample("x").encode())
    want = max(size - overhead, 10)
    line = "The quick brown fox jumps over the lazy dog; kmta bench text line...\n"
    text = (line * (want // len(line) + 1))[:want - 1] + "\n"
    return text


def composed_sample(text: str, html: str | None = None) -> str:
    from kmta.policy.compose import compose
    from schemas import OutboxMessage

    msg = OutboxMessage.model_validate({"from": "bench@sender.kmta.test",
                                        "to": "user1@gmail.com", "subject": "bench message 1",
                                        "text": text, "html": html})
    return compose(msg, "bench-00000000-1", "bench.kmta.test", time.time())


# -- kmta ----------------------------------------------------------------------------------------
class KmtaRun:
    """One isolated kmta deployment (fresh topic prefix) from the source tree ``root``."""

    def __init__(self, label: str, root: Path, bootstrap: str, base: Path, procs: Procs,
                 dns_port: int, smtp_port: int, senders: int, profile: Path | None,
                 max_connections: int = 8, dkim: str = "none",
                 delivery: dict[str, Any] | None = None,
                 source_ips: list[str] = SOURCE_IPS) -> None:
        self.label, self.root, self.procs, self.senders = label, root, procs, senders
        self.profile = profile
        self.dir = base / f"kmta-{label}"
        self.dir.mkdir(parents=True)
        (self.dir / "rules.toml").write_text(tomli_w.dumps(bench_rules(max_connections)))
        cfg = {
            "data_dir": str(self.dir / "data"),
            "kafka": {"bootstrap_servers": bootstrap,
                      "topic_prefix": f"bench{uuid.uuid4().hex[:8]}."},
            "dns": {"nameservers": [f"127.0.0.1:{dns_port}"]},
            "delivery": {"smtp_port": smtp_port, "allowed_networks": ["127.0.0.0/8"],
                         "allow_special": ["127.0.0.0/8"],
                         "helo_name": "bench.kmta.test", "unsigned": "allow",
                         **(delivery or {})},
            "pools": [{"name": "default", "source_ips": source_ips}],
            "rules": {"override": str(self.dir / "rules.toml")},
        }
        if dkim != "none":  # the worker signs every message (kmta/pipeline/outgoing.py)
            from kmta.pipeline.dkim import generate_key
            keys = []
            for alg in (["rsa-sha256", "ed25519-sha256"] if dkim == "dual" else [dkim]):
                path = self.dir / f"{alg}.pem"
                path.write_bytes(generate_key(alg))
                keys.append({"selector": alg.split("-")[0], "key_file": str(path),
                             "algorithm": alg})
            cfg["domains"] = [{"name": "sender.kmta.test", "dkim": keys}]
            cfg["delivery"]["unsigned"] = "refuse"
        self.python = tree_python(root)
        self.config_path = self.dir / "kmta.toml"
        # the bench client reads the full config; the tree's processes what their tree knows
        self.config_path.write_text(tomli_w.dumps(cfg))
        self.config: Config = load_config(self.config_path)
        if root != ROOT:
            self.config_path.write_text(tomli_w.dumps(prune_config(self.python, root, cfg)))
        # the worker alone serves /metrics (its event-apply delay is read from there)
        self.metrics = f"127.0.0.1:{free_port()}"
        self.worker_config = self.dir / "kmta-worker.toml"
        wcfg = {**cfg, "metrics": {"listen": self.metrics}}
        self.worker_config.write_text(tomli_w.dumps(
            wcfg if root == ROOT else prune_config(self.python, root, wcfg)))
        self.names = ["worker"] + [f"sender-{i + 1}" for i in range(senders)]
        self.names = [f"{label}.{n}" for n in self.names]

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        base = [self.python, "-m", "kmta.cli", "--config", str(self.config_path)]
        if self.root == ROOT:
            asyncio.run(ensure_topics(self.config))
        else:  # the tree's own topic settings
            r = subprocess.run([*base, "topics"], env=env, cwd=self.dir, capture_output=True,
                               text=True, timeout=120, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"{self.label}: kmta topics failed: {r.stderr[-2000:]}")
        if self.profile is not None:
            env["KMTA_PROFILE"] = str(self.profile / self.label)
        worker, *senders = self.names
        self.procs.spawn(worker, [self.python, "-m", "kmta.cli", "--config",
                                  str(self.worker_config), "worker", "--name", "brain-1"],
                         env, self.dir)
        for i, name in enumerate(senders):
            self.procs.spawn(name, [*base, "sender", "--node", f"sender-{i + 1}"], env,
                             self.dir)
        deadline = time.monotonic() + 120
        while not all("assigned" in self.procs.log_text(n) for n in senders):
            self.procs.check(self.names)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: senders got no partitions in 120 s")
            time.sleep(0.2)

    def pids(self) -> dict[str, int]:
        return {n.split(".", 1)[1]: self.procs.procs[n].pid for n in self.names
                if n in self.procs.procs}

    def stop(self) -> None:
        for name in self.names:
            self.procs.stop(name)


def tree_python(root: Path) -> str:
    """The interpreter for a source tree: its own ``.venv`` (scripts/bootstrap.sh) when it has
    one, so an older checkout runs with the dependencies it declared; else this one."""
    own = root / ".venv" / "bin" / "python"
    return str(own) if root != ROOT and own.exists() else sys.executable


def prune_config(python: str, root: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without the keys an older tree's config models do not know (they forbid
    unknown keys): asks that tree's interpreter for each section's fields."""
    probe = ("import json, sys; from kmta import config as c; "
             "m = {n: list(getattr(c, t).model_fields) for n, t in "
             "[('kafka', 'KafkaConfig'), ('dns', 'DnsConfig'), ('delivery', 'DeliveryConfig')] "
             "if hasattr(c, t)}; m[''] = list(c.Config.model_fields); print(json.dumps(m))")
    out = subprocess.run([python, "-c", probe], env={**os.environ, "PYTHONPATH": str(root)},
                         cwd=root,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    known = json.loads(out.strip().splitlines()[-1])
    pruned = {k: v for k, v in cfg.items() if k in known[""]}
    for section, fields in known.items():
        if section and isinstance(pruned.get(section), dict):
            dropped = set(pruned[section]) - set(fields)
            if dropped:
                log(f"{root.name}: config keys it does not know, left out: "
                    f"{section}.{', '.join(sorted(dropped))}")
            pruned[section] = {k: v for k, v in pruned[section].items() if k in fields}
    return pruned


APPLY_DELAY = "kmta_event_apply_delay_seconds"


# the event-apply delay's split (streams/decide.py): event -> results record's Kafka
# timestamp (sender side), record -> decide batch start, batch start -> apply
SPLIT = (("event->record", "kmta_event_record_delay_seconds"),
         ("record->batch", "kmta_record_batch_delay_seconds"),
         ("batch->apply", "kmta_batch_apply_delay_seconds"))


def apply_delay_buckets(text: str, name: str = APPLY_DELAY
                        ) -> tuple[dict[float, float], float | None]:
    """The cumulative buckets of the worker's histogram ``name`` (the event-apply delay's by
    default) and the event-apply delay's max gauge, from /metrics text (empty, None: a tree
    without the metric)."""
    buckets: dict[float, float] = {}
    worst = None
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("kmta_event_apply_delay_max_seconds "):
            worst = float(line.rsplit(" ", 1)[1])
    return buckets, worst


def bucket_quantile(before: dict[float, float], after: dict[float, float],
                    q: float) -> float | None:
    """The ``q`` quantile of the observations between two scrapes of a cumulative histogram,
    linearly interpolated inside its bucket (as PromQL's histogram_quantile)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for b, c in zip(bounds, counts, strict=True):
        if c >= rank:
            if b == float("inf"):
                return lower
            return lower + (b - lower) * ((rank - below) / (c - below) if c > below else 1.0)
        lower, below = b, c
    return lower


def quantiles(before: dict[float, float], after: dict[float, float],
              worst: float | None) -> dict[str, float | None]:
    """p50 and p99 between two scrapes (``bucket_quantile``), each at most ``worst``: a
    quantile interpolated in its bucket is at most the largest delay seen, and a segment of
    the delay at most the whole."""
    out: dict[str, float | None] = {}
    for q, f in (("p50", 0.5), ("p99", 0.99)):
        v = bucket_quantile(before, after, f)
        out[q] = v if v is None or worst is None else min(v, worst)
    return out


def scrape(hostport: str) -> str:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{hostport}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
            return body.decode()
    except OSError:
        return ""


async def measure_kmta(run: KmtaRun, docs: list[dict], sink: Sink, timeout: float,
                       others: dict[str, list[int]], quiet: bool = False,
                       idle: float = 0.0) -> dict[str, Any]:
    """Produce ``docs``, wait for every final event; rates counted at the client and the sink.
    With ``idle`` seconds, first the CPU every process spends with nothing to do (polls,
    heartbeats, timers: of every deployment on the broker) is measured, and also reported
    per message above that rate (what the messages themselves cost, whatever the rate the
    machine allows today)."""
    n = len(docs)
    collector = ResultCollector(run.config)
    await collector.start()
    pids = {**{k: [p] for k, p in run.pids().items()}, **others, "bench client": [os.getpid()]}
    idle_rate: dict[str, float] = {}
    if idle > 0:
        meter = CpuMeter(pids)
        meter.start()
        t_idle = time.monotonic()
        await asyncio.sleep(idle)
        spent = meter.stop()
        idle_rate = {k: v / (time.monotonic() - t_idle) for k, v in spent.items()}
    sess0, base = sink.counts()
    text0 = scrape(run.metrics)
    delay0, _ = apply_delay_buckets(text0)
    split0 = {k: apply_delay_buckets(text0, m)[0] for k, m in SPLIT}
    samples: list[tuple[float, int]] = []
    cpu = CpuMeter(pids)
    cpu.start()
    t0 = time.monotonic()
    wall0 = time.time()
    read_at: dict[str, float] = {}

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - t0, sink.counts()[1] - base))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        ids = await produce(run.config, docs)
        t_produced = time.monotonic() - t0
        want = set(ids)
        last_note = 0.0
        deadline = time.monotonic() + timeout
        while True:
            await collector.poll(200)
            seen_at = time.time()
            for i in list(collector.finals)[len(read_at):]:
                read_at[i] = seen_at
            done = len(want & collector.finals.keys())
            now = time.monotonic()
            if done == n:
                break
            if now > deadline:
                raise RuntimeError(f"{run.label}: {n - done} of {n} without a final event "
                                   f"after {timeout:.0f} s")
            run.procs.check(run.names)
            if not quiet and now - last_note > 5:
                last_note = now
                log(f"{run.label}: {done}/{n} final, sink {sink.counts()[1] - base}, "
                    f"{now - t0:.0f} s")
        t_end = time.monotonic() - t0
        waited = cpu.run_delays()
        cpu_s = cpu.stop()
        await asyncio.sleep(0.1)
    finally:
        sampler.cancel()
        await collector.stop()
    statuses = Counter(collector.finals[i]["status"] for i in ids)
    sess1, _ = sink.counts()
    text1 = scrape(run.metrics)
    delay1, worst = apply_delay_buckets(text1)
    split = {k: quantiles(split0[k], apply_delay_buckets(text1, m)[0], worst) for k, m in SPLIT}
    apply_delay = {**quantiles(delay0, delay1, worst), "max": worst}
    return {"messages": n, "produce_s": t_produced, "produce_rate": n / t_produced,
            "e2e_s": t_end, "e2e_rate": n / t_end, "steady_rate": steady_rate(samples, n),
            "statuses": dict(statuses), "smtp_sessions": sess1 - sess0,
            "apply_delay": apply_delay, "apply_split": split,
            "stages": stages(collector, ids, read_at, wall0),
            "cpu_s": cpu_s, "cpu_wait_s": waited,
            "cpu_ms_per_msg": {k: v * 1000 / n for k, v in cpu_s.items()},
            "idle_cpu_per_s": idle_rate,
            "cpu_ms_per_msg_above_idle": {
                k: (v - idle_rate[k] * t_end) * 1000 / n for k, v in cpu_s.items()
                if k in idle_rate}}


def stages(collector: ResultCollector, ids: list[str], read_at: dict[str, float],
           wall0: float) -> dict[str, Any]:
    """When the messages of a run passed each stage, in seconds after the first produce:
    routed (the router's ``queued`` event), delivered (the final event's timestamp: the sink's
    reply at the sender) and read (the bench's result reader had the final event: after the
    senders' transaction and the reader's poll). The stage that finishes last by much is
    where the run waited; per message, routed -> delivered and delivered -> read."""
    routed = {i: ev["timestamp"] for i in ids for ev in collector.events.get(i, ())
              if ev.get("status") == "queued"}
    final = {i: collector.finals[i]["timestamp"] for i in ids if i in collector.finals}

    def marks(values: list[float]) -> dict[str, float]:
        v = sorted(values)
        return {f"p{q}": v[min(len(v) - 1, len(v) * q // 100)] for q in (10, 50, 90, 100)} \
            if v else {}

    return {"routed": marks([t - wall0 for t in routed.values()]),
            "delivered": marks([t - wall0 for t in final.values()]),
            "read": marks([t - wall0 for t in read_at.values()]),
            "routed_to_delivered": marks([final[i] - routed[i] for i in final if i in routed]),
            "delivered_to_read": marks([read_at[i] - final[i] for i in final if i in read_at])}


def stages_report(results: dict[str, dict[str, Any]]) -> str:
    lines = ["busy / waiting for a CPU, s of the run (on CPU; runnable but not running, "
             "/proc/PID/task/*/schedstat)"]
    for label, r in results.items():
        if "cpu_wait_s" in r:
            lines.append(f"  {label:<10}e2e {r['e2e_s']:.1f} s: " + ", ".join(
                f"{k} {r['cpu_s'][k]:.1f} / {v:.1f}" for k, v in r["cpu_wait_s"].items()))
    lines += ["stages, s after the first produce (share of the messages past it: 10/50/90/100 %)"]
    for label, r in results.items():
        st = r.get("stages")
        if not st:
            continue
        for key in ("routed", "delivered", "read", "routed_to_delivered",
                    "delivered_to_read"):
            m = st[key]
            lines.append(f"  {label:<10}{key:<22}" + "".join(
                f"{m.get(q, 0):>9.3f}" for q in ("p10", "p50", "p90", "p100")))
    return "\n".join(lines)


async def measure_latency(run: KmtaRun, docs: list[dict], rate: float,
                          timeout: float) -> dict[str, Any]:
    """Produce ``docs`` paced at ``rate`` messages a second and take, per delivered message,
    the time from its hand-over to the outbox producer (wall clock, just before ``send``) to
    its delivered event: by the event's own ``timestamp`` (the sender's clock when the sink's
    final reply came; same machine, same clock) and by the moment the bench's result reader
    had it (receipt). ``accepted_at`` (the router's) splits the first into routing and
    sending. Percentiles over all delivered messages."""
    from kmta.pipeline.kafkaio import make_producer

    collector = ResultCollector(run.config)
    await collector.start()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()

    async def read() -> None:
        deadline = time.monotonic() + timeout
        while len(seen) < len(docs):
            await collector.poll(50)
            now = time.time()
            for i in list(collector.finals)[len(seen):]:
                seen[i] = now
            if time.monotonic() > deadline:
                raise RuntimeError(f"{run.label}: latency run: {len(docs) - len(seen)} of "
                                   f"{len(docs)} without a final event after {timeout:.0f} s")
        done.set()

    reader = asyncio.create_task(read())
    producer = make_producer(run.config, linger_ms=5)
    await producer.start()
    t0 = time.monotonic()
    try:
        futs = []
        for k, doc in enumerate(docs):
            ahead = t0 + k / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            sent[doc["id"]] = time.time()
            futs.append(await producer.send(run.config.topic("outbox"),
                                            json.dumps(doc).encode(), key=doc["id"].encode()))
        t_sent = time.monotonic() - t0
        await asyncio.gather(*futs)
        await reader
    finally:
        reader.cancel()
        await producer.stop()
        await collector.stop()
    finals = collector.finals
    ok = [i for i in sent if finals[i]["status"] == "delivered"]

    def pct(values: list[float]) -> dict[str, float]:
        v = sorted(values)
        return {"p50": v[len(v) // 2] * 1000, "p99": v[min(len(v) - 1, int(len(v) * 0.99))] * 1000,
                "max": v[-1] * 1000} if v else {}

    return {"messages": len(docs), "rate": rate, "produced_rate": len(docs) / t_sent,
            "delivered": len(ok),
            "event_ms": pct([finals[i]["timestamp"] - sent[i] for i in ok]),
            "receipt_ms": pct([seen[i] - sent[i] for i in ok]),
            "routed_ms": pct([finals[i]["accepted_at"] - sent[i] for i in ok
                              if finals[i].get("accepted_at")]),
            "sending_ms": pct([finals[i]["timestamp"] - finals[i]["accepted_at"] for i in ok
                               if finals[i].get("accepted_at")])}


def latency_report(lat: dict[str, dict[str, Any]]) -> str:
    lines = ["latency, produce -> delivered, at half of each variant's best end-to-end rate, ms:",
             f"  {'':<10}{'rate/s':>8}{'msgs':>7}  {'event p50':>10}{'p99':>8}{'max':>8}"
             f"  {'receipt p50':>12}{'p99':>8}  {'routed p50':>11}{'p99':>8}"
             f"  {'sending p50':>12}{'p99':>8}"]
    for label, r in lat.items():
        e, c, a, b = r["event_ms"], r["receipt_ms"], r["routed_ms"], r["sending_ms"]
        lines.append(f"  {label:<10}{r['rate']:>8.0f}{r['delivered']:>7}  {e['p50']:>10.0f}"
                     f"{e['p99']:>8.0f}{e['max']:>8.0f}  {c['p50']:>12.0f}{c['p99']:>8.0f}"
                     f"  {a.get('p50', 0):>11.0f}{a.get('p99', 0):>8.0f}"
                     f"  {b.get('p50', 0):>12.0f}{b.get('p99', 0):>8.0f}")
    lines.append("  event: the delivered event's timestamp (sender, after the final reply); "
                 "receipt: when the bench read it;")
    lines.append("  routed: the router's accepted_at; sending: accepted_at -> event")
    return "\n".join(lines)


# -- Postfix -------------------------------------------------------------------------------------

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
myhostname = postfix.bench.kmta.test
mydestination =
local_transport = error:local delivery is disabled in the bench
alias_maps =
alias_database =
relayhost = [{relay_ip}]:{relay_port}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
default_process_limit = 100
smtp_destination_concurrency_limit = 20
"""


class Postfix:
    """A throwaway Postfix instance (config, queue and log under ``dir``), relaying to the sink."""

    def __init__(self, base: Path, relay_ip: str, relay_port: int, milter: str | None = None,
                 transport: dict[str, str] | None = None) -> None:
        """``milter``: e.g. OpenDKIM's ``inet:127.0.0.1:PORT``, for every message received
        (a failing milter tempfails it, so an unsigned message never counts); ``transport``:
        domain -> next hop (``smtp:[IP]:PORT``) instead of the relay host (a keeping sink)."""
        self.dir = base / "postfix"
        self.conf = self.dir / "conf"
        self.port = free_port()
        for d in ("conf", "queue", "data"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        self.conf.joinpath("master.cf").write_text(MASTER_CF.format(
            listen=f"127.0.0.1:{self.port}"))
        main_cf = MAIN_CF.format(dir=self.dir, relay_ip=relay_ip, relay_port=relay_port)
        if milter:
            main_cf += (f"smtpd_milters = {milter}\nmilter_default_action = tempfail\n"
                        f"milter_protocol = 6\n")
        if transport:
            self.conf.joinpath("transport").write_text(
                "".join(f"{d} {hop}\n" for d, hop in transport.items()))
            main_cf += f"transport_maps = texthash:{self.conf}/transport\n"
        self.conf.joinpath("main.cf").write_text(main_cf)
        self.milter_pid: int | None = None  # its CPU and RSS count as Postfix's
        owner = pwd.getpwnam("postfix")
        os.chown(self.dir / "data", owner.pw_uid, owner.pw_gid)
        self.started = False

    @staticmethod
    def available() -> str | None:
        """Why Postfix cannot run here, or None."""
        if not Path(POSTFIX).exists() or not Path(SMTP_SOURCE).exists():
            return "postfix / smtp-source not installed (Debian package postfix)"
        if os.geteuid() != 0:
            return "Postfix's master must start as root"
        try:
            pwd.getpwnam("postfix")
        except KeyError:
            return "no postfix user"
        return None

    def _postfix(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.conf), action], capture_output=True,
                              text=True, timeout=60, check=False)

    def start(self) -> None:
        r = self._postfix("start")
        self.started = True
        deadline = time.monotonic() + 20
        while port_free("127.0.0.1", self.port):  # until smtpd listens
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not start ({r.returncode}): {r.stdout}{r.stderr}"
                                   f"\n{self.maillog()[-2000:]}")
            time.sleep(0.1)

    def master_pid(self) -> int | None:
        try:
            return int((self.dir / "queue/pid/master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def rss_mb(self) -> tuple[float, float, int]:
        """Over the master and its live children: the sum of their peak RSS (counts shared
        pages once per process), the sum of their PSS now, and how many they are."""
        pid = self.master_pid()
        if pid is None:
            return 0.0, 0.0, 0
        pids = [pid, *children_of(pid)]
        return (sum(peak_rss_mb(p) or 0.0 for p in pids), sum(pss_mb(p) for p in pids),
                len(pids))

    def maillog(self) -> str:
        p = self.dir / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        pid = self.master_pid()
        try:
            self._postfix("stop")
        except subprocess.TimeoutExpired:
            pass
        if pid is not None:
            deadline = time.monotonic() + 15
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            for p in [pid, *children_of(pid)]:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def measure_postfix(pf: Postfix, procs: Procs, sink: Sink, n: int, sessions: int,
                    message: Path, timeout: float) -> dict[str, Any]:
    sess0, base = sink.counts()

    def pids() -> dict[str, list[int]]:
        master = pf.master_pid()
        return {"postfix": [master, *children_of(master)] if master else [],
                **({"opendkim": [pf.milter_pid]} if pf.milter_pid else {}),
                "smtp-sink": [sink.pid]}

    cpu = CpuMeter(pids())
    cpu.start()
    rusage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(n), "-f", "bench@sender.kmta.test",
           "-t", "user@gmail.com", "-N", "-F", str(message), f"127.0.0.1:{pf.port}"]
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    src = procs.spawn("smtp-source", cmd)
    t_injected = None
    deadline = t0 + timeout
    while True:
        now = time.monotonic()
        got = sink.counts()[1] - base
        samples.append((now - t0, got))
        if t_injected is None and src.poll() is not None:
            t_injected = now - t0
            if src.returncode != 0:
                raise RuntimeError(f"smtp-source failed:\n{procs.log_text('smtp-source')[-2000:]}")
        if got >= n and t_injected is not None:
            break
        if now > deadline:
            raise RuntimeError(f"postfix: {n - got} of {n} not at the sink after {timeout:.0f} s"
                               f"\n{pf.maillog()[-2000:]}")
        time.sleep(0.05)
    procs.procs.pop("smtp-source", None)
    t_end = samples[-1][0]
    cpu_s = cpu.stop(pids())
    rusage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s["smtp-source"] = (rusage1.ru_utime - rusage0.ru_utime
                            + rusage1.ru_stime - rusage0.ru_stime)
    sess1, _ = sink.counts()
    return {"messages": n, "produce_s": t_injected, "produce_rate": n / t_injected,
            "e2e_s": t_end, "e2e_rate": n / t_end, "steady_rate": steady_rate(samples, n),
            "statuses": {"delivered": got}, "smtp_sessions": sess1 - sess0,
            "cpu_ms_per_msg": {k: v * 1000 / n for k, v in cpu_s.items()}}


def postfix_dkim(base: Path, procs: Procs, key: Path, algorithm: str, smtp_port: int,
                 keep: KeepSink) -> Postfix:
    """Postfix with OpenDKIM as its milter, signing with kmta's key; mail to VERIFY_DOMAIN
    goes to the keeping sink."""
    od = OpenDkim(procs, base / "opendkim", "sender.kmta.test", algorithm.split("-")[0], key,
                  algorithm)
    pf = Postfix(base, SINK_IP, smtp_port, milter=od.milter,
                 transport={VERIFY_DOMAIN: f"smtp:[{KEEP_IP}]:{keep.port}"})
    pf.milter_pid = od.pid
    return pf


def verify_kmta(run: KmtaRun, keep: KeepSink, key: Path, algorithm: str) -> str:
    """One message through kmta to the keeping sink; is its signature good?"""
    async def one() -> None:
        collector = ResultCollector(run.config)
        await collector.start()
        try:
            doc = make_docs(1, 2048, f"v{uuid.uuid4().hex[:6]}", [VERIFY_DOMAIN])
            if not await collector.wait_final(await produce(run.config, doc), 120):
                raise RuntimeError(f"{run.label}: no final event for the DKIM check message")
        finally:
            await collector.stop()

    asyncio.run(one())
    return _verdict(keep, key, algorithm)


def verify_postfix(pf: Postfix, procs: Procs, keep: KeepSink, message: Path, key: Path,
                   algorithm: str) -> str:
    before = keep.total
    procs.spawn("smtp-source-verify", [SMTP_SOURCE, "-d", "-s", "1", "-m", "1", "-f",
                                       "bench@sender.kmta.test", "-t", f"user@{VERIFY_DOMAIN}",
                                       "-N", "-F", str(message), f"127.0.0.1:{pf.port}"])
    deadline = time.monotonic() + 60
    while keep.total == before:
        if time.monotonic() > deadline:
            return f"NOTHING ARRIVED at the keeping sink\n{pf.maillog()[-1500:]}"
        time.sleep(0.1)
    return _verdict(keep, key, algorithm)


def _verdict(keep: KeepSink, key: Path, algorithm: str) -> str:
    return dkim_verdict(keep.messages[-1], key.read_bytes(), "sender.kmta.test",
                        algorithm.split("-")[0])


# -- report ----------------------------------------------------------------------------------------
_NOT_KMTA = ("smtp-sink", "bench client")  # the load's two ends, not the system measured


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def fmt(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:,.0f}{unit}"


def report(results: dict[str, dict[str, Any]], rss: dict[str, dict[str, float | None]],
           ref: str | None) -> str:
    labels = list(results)
    rows = [("produce / inject msg/s", "produce_rate"), ("end-to-end msg/s", "e2e_rate"),
            ("steady delivery msg/s", "steady_rate")]
    w = max(12, *(len(x) + 2 for x in labels))
    head = f"{'':<24}" + "".join(f"{x:>{w}}" for x in labels)
    others = [x for x in labels if ref and x != ref]
    head += "".join(f"{(x + '/' + ref):>{max(w, len(x) + len(ref) + 3)}}" for x in others)
    lines = [head]
    for title, key in rows:
        line = f"{title:<24}" + "".join(f"{fmt(results[x][key]):>{w}}" for x in labels)
        for x in others:
            a, b = results[x][key], results[ref][key] if ref else None
            r = "-" if not a or not b else f"{a / b:.2f}"
            line += f"{r:>{max(w, len(x) + len(ref) + 3)}}"
        lines.append(line)
    lines.append(f"{'elapsed s (e2e)':<24}" + "".join(
        f"{results[x]['e2e_s']:>{w}.1f}" for x in labels))
    for q in ("p50", "p99", "max"):
        lines.append(f"{'brain apply delay ' + q + ' s':<24}" + "".join(
            f"{_secs(results[x].get('apply_delay', {}).get(q)):>{w}}" for x in labels))
    for k, _ in SPLIT:
        for q in ("p50", "p99"):
            lines.append(f"{'  ' + k + ' ' + q + ' s':<24}" + "".join(
                f"{_secs(results[x].get('apply_split', {}).get(k, {}).get(q)):>{w}}"
                for x in labels))
    lines.append(f"{'SMTP sessions closed':<24}" + "".join(
        f"{results[x]['smtp_sessions']:>{w}}" for x in labels))
    cpu = {x: sum(results[x]["cpu_ms_per_msg"].values()) for x in labels}
    line = f"{'CPU ms/msg, all procs':<24}" + "".join(f"{cpu[x]:>{w}.2f}" for x in labels)
    for x in others:
        line += f"{cpu[x] / cpu[ref]:>{max(w, len(x) + len(ref) + 3)}.2f}" if cpu[ref] else ""
    lines.append(line)
    own = {x: sum(v for k, v in results[x]["cpu_ms_per_msg"].items()
                  if k not in _NOT_KMTA and k != "kafka JVM") for x in labels if x != "postfix"}
    if own:
        lines.append(f"{'CPU ms/msg, kmta procs':<24}" + "".join(
            f"{own[x]:>{w}.2f}" if x in own else f"{'':>{w}}" for x in labels)
            + "   (worker + senders)")
    above = {x: results[x].get("cpu_ms_per_msg_above_idle") for x in labels}
    if any(above.values()):
        busy = {x: sum(v for k, v in (above[x] or {}).items() if k not in _NOT_KMTA)
                for x in labels if above[x]}
        line = f"{'CPU ms/msg kmta+broker':<24}" + "".join(
            f"{busy[x]:>{w}.2f}" if x in busy else f"{'':>{w}}" for x in labels)
        lines.append(line + "   (above idle, without sink and client)")
    lines.append("")
    lines.append("CPU ms per message by process")
    for x in labels:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in results[x]["cpu_ms_per_msg"].items())
        lines.append(f"  {x}: {parts}")
    if any(above.values()):
        lines.append("above the idle rate (CPU per second with nothing to do, x elapsed):")
        for x in [x for x in labels if above[x]]:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in (above[x] or {}).items())
            idle = ", ".join(f"{k} {v * 100:.1f} %"
                             for k, v in results[x]["idle_cpu_per_s"].items())
            lines.append(f"  {x}: {parts}  (idle: {idle})")
    lines.append("")
    lines.append("peak RSS (VmHWM), MB")
    for label, procs in rss.items():
        parts = ", ".join(f"{k} {fmt(v)}" for k, v in procs.items())
        lines.append(f"  {label}: {parts}")
    lines.append("")
    for label, r in results.items():
        lines.append(f"  {label} outcomes: {json.dumps(r['statuses'])}")
    return "\n".join(lines)


# -- --rtt ---------------------------------------------------------------------------------------
def rtt_figures(proxy: DelayProxy, since: float, until: float, n: int) -> dict[str, Any]:
    """Per-connection figures of one measured run, from what the proxy saw."""
    conns, busy_s, turns = proxy.busy(since, until)
    return {"connections": conns, "busy_s": busy_s,
            "per_connection_rate": n / busy_s if busy_s else None,
            "turns_per_msg": turns / n}


def rtt_report(results: dict[str, dict[str, Any]], rtt: float, sink: str) -> str:
    lines = [f"per connection, {rtt:g} ms round trip, sink {sink}:",
             f"  {'':<12}{'conns':>7}{'busy s':>9}{'msg/s/conn':>12}{'turns/msg':>11}"
             f"{'x lockstep':>12}"]
    base = results.get("lockstep", {}).get("rtt", {}).get("per_connection_rate")
    for label, r in results.items():
        f = r.get("rtt")
        if not f:
            continue
        rate = f["per_connection_rate"]
        x = f"{rate / base:.2f}" if rate and base else "-"
        lines.append(f"  {label:<12}{f['connections']:>7}{f['busy_s']:>9.1f}"
                     f"{fmt(rate) if rate is None or rate >= 10 else f'{rate:.1f}':>12}"
                     f"{f['turns_per_msg']:>11.2f}{x:>12}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000, help="messages per measured run")
    p.add_argument("--size", type=int, default=2048, help="bytes per composed message")
    p.add_argument("--body", choices=BODIES, default="newsletter",
                   help="newsletter: HTML with a text alternative, personalised (default); "
                        "text: one plain sentence repeated (the bench's body before)")
    p.add_argument("--senders", type=int, default=2, help="kmta sender processes")
    p.add_argument("--warmup", type=int, default=500, help="warm-up messages before measuring")
    p.add_argument("--max-connections", type=int, default=8,
                   help="kmta's max_connections per ISP (>= 2); Postfix keeps its default 20")
    p.add_argument("--bootstrap", help="use this Kafka cluster instead of starting a broker")
    p.add_argument("--no-postfix", action="store_true", help="skip the Postfix comparison")
    p.add_argument("--postfix-sessions", type=int, default=20,
                   help="smtp-source parallel sessions into Postfix")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                   help="also run kmta from another checkout (e.g. before a change)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat every run this often, interleaved; the best round is kept")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run worker and senders under cProfile; pstats and reports in DIR")
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--profile-clock", choices=["wall", "cpu"], default="wall",
                   help="cProfile's clock (KMTA_PROFILE_CLOCK): wall time, or the main "
                        "thread's CPU time (on a loaded machine, waits for a CPU left out)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per measured run")
    p.add_argument("--idle", type=float, default=5.0, metavar="S",
                   help="seconds of idle CPU measured before each kmta run (0: off): CPU per "
                        "message is also printed above that rate")
    p.add_argument("--dkim", choices=["none", "rsa-sha256", "ed25519-sha256", "dual"],
                   default="none", help="sign every message with this (default none): kmta "
                                        "at routing, Postfix through OpenDKIM (same key; "
                                        "dual: Postfix signs rsa-sha256 only)")
    p.add_argument("--latency", type=float, default=20.0, metavar="S",
                   help="after the rounds, S seconds of messages paced at half of each kmta "
                        "variant's best end-to-end rate: produce -> delivered p50/p99 (0: off)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    p.add_argument("--rtt", type=float, metavar="MS",
                   help="round-trip time added between senders and sink (a delaying proxy); "
                        "one domain, one source IP, and a lock-step variant beside kmta")
    p.add_argument("--sink", choices=["smtp-sink", "chunking"], default="smtp-sink",
                   help="smtp-sink (PIPELINING) or sim/chunking.py (PIPELINING and CHUNKING)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(SMTP_SINK).exists():
        print("bench: smtp-sink not found (Debian package postfix)", file=sys.stderr)
        return 2

    interrupt_on_signals()
    base = Path(tempfile.mkdtemp(prefix="kmta-bench-"))
    base.chmod(0o755)  # Postfix's daemons (user postfix) read their queue under it
    logdir = base / "logs"
    logdir.mkdir()
    procs = Procs(logdir)
    dns: DnsServerThread | None = None
    broker_data: Path | None = None
    pf: Postfix | None = None
    runs: list[KmtaRun] = []
    proxy: DelayProxy | None = None
    keep: KeepSink | None = None
    signed: dict[str, str] = {}  # --dkim: label -> the check of one message at the keeping sink
    key_alg = "rsa-sha256" if args.dkim == "dual" else args.dkim  # what Postfix signs with
    try:
        bootstrap, broker_data = kafka_for(args.bootstrap, base)
        sink_port = free_port(SINK_IP)
        sink = Sink(procs, SINK_IP, sink_port, chunking=args.sink == "chunking")
        smtp_port = sink_port  # where senders and Postfix connect: the sink, or the proxy
        if args.rtt is not None:
            proxy = DelayProxy(SINK_IP, SINK_IP, sink_port, args.rtt).start()
            smtp_port = proxy.port
            log(f"rtt proxy {SINK_IP}:{proxy.port} -> {sink_port}, {args.rtt:g} ms round trip")
        domains = RTT_DOMAINS if proxy else DOMAINS
        mx_ips = {f"mx.{d}": SINK_IP for d in DOMAINS}
        if args.dkim != "none":
            keep = KeepSink(KEEP_IP, smtp_port).start()
            mx_ips[f"mx.{VERIFY_DOMAIN}"] = KEEP_IP
        dns = start_dns(mx_zone({h[3:]: h for h in mx_ips}, mx_ips, ttl=3600))
        log(f"broker {bootstrap}, {args.sink} {SINK_IP}:{sink_port}, dns 127.0.0.1:{dns.port}, "
            f"dir {base}")
        variants: list[tuple[str, Path, dict[str, Any]]] = [("kmta", ROOT, {})]
        if proxy is not None:  # the same code, one command per round trip
            variants.append(("lockstep", ROOT, {"pipelining": False}))
        for item in args.compare:
            label, _, path = item.partition("=")
            variants.append((label, Path(path).resolve(), {}))
        if args.profile:
            os.environ["KMTA_PROFILE_CLOCK"] = args.profile_clock  # the processes inherit it
        for label, root, delivery in variants:
            run = KmtaRun(label, root, bootstrap, base, procs, dns.port, smtp_port, args.senders,
                          args.profile.resolve() if args.profile else None,
                          args.max_connections, args.dkim, delivery,
                          SOURCE_IPS[:1] if proxy else SOURCE_IPS)
            log(f"{label}: starting worker + {args.senders} senders from {root} ...")
            run.start()
            runs.append(run)
        others = {"smtp-sink": [sink.pid]}
        if broker_data is not None:
            others["kafka JVM"] = [broker_pid(broker_data) or 0]
        # every variant stays up; only the one being measured gets messages
        for run in runs:
            log(f"{run.label}: warm-up with {args.warmup} messages ...")
            warm = make_docs(args.warmup, args.size, f"w{uuid.uuid4().hex[:6]}", domains,
                             args.body)
            asyncio.run(measure_kmta(run, warm, sink, 300, others, quiet=True))
            if keep is not None:
                signed[run.label] = verify_kmta(run, keep, run.dir / f"{key_alg}.pem", key_alg)
                log(f"{run.label}: DKIM at the keeping sink: {signed[run.label]}")
        results: dict[str, dict[str, Any]] = {}
        all_rounds: dict[str, list[dict[str, Any]]] = {}
        for rnd in range(args.rounds):
            for run in runs:
                log(f"{run.label}: round {rnd + 1}: {args.messages} messages of ~{args.size} B")
                docs = make_docs(args.messages, args.size, f"b{uuid.uuid4().hex[:6]}", domains,
                                 args.body)
                t_a = time.monotonic()
                r = asyncio.run(measure_kmta(run, docs, sink, args.timeout, others,
                                             idle=args.idle))
                if proxy is not None:
                    r["rtt"] = rtt_figures(proxy, t_a, time.monotonic(), args.messages)
                log(f"{run.label}: {r['e2e_rate']:.0f} msg/s end to end "
                    f"(produce {r['produce_rate']:.0f}/s, steady {fmt(r['steady_rate'])}/s)")
                all_rounds.setdefault(run.label, []).append(r)
        for label, rs in all_rounds.items():
            results[label] = max(rs, key=lambda r: r["e2e_rate"])
        latency: dict[str, dict[str, Any]] = {}
        for run in runs if args.latency > 0 else []:
            rate = results[run.label]["e2e_rate"] / 2
            n = max(50, int(rate * args.latency))
            log(f"{run.label}: latency: {n} messages paced at {rate:.0f}/s ...")
            docs = make_docs(n, args.size, f"l{uuid.uuid4().hex[:6]}", domains, args.body)
            latency[run.label] = asyncio.run(measure_latency(run, docs, rate, args.timeout))
        rss: dict[str, dict[str, float | None]] = {}
        for run in runs:
            rss[run.label] = {k: peak_rss_mb(p) for k, p in run.pids().items()}
        if broker_data is not None:
            rss["broker"] = {"kafka JVM": peak_rss_mb(broker_pid(broker_data))}
        for run in runs:
            run.stop()  # orderly: profiles are written at exit
        if broker_data is not None:
            from ops.kafka import manager
            manager.stop(broker_data)
            broker_data = None
        ref = None
        why = "--no-postfix" if args.no_postfix else Postfix.available()
        if why is None:
            log("postfix: starting a throwaway instance ...")
            key = runs[0].dir / f"{key_alg}.pem"
            if keep is not None and OpenDkim.available() is None:
                pf = postfix_dkim(base, procs, key, key_alg, smtp_port, keep)
            else:
                pf = Postfix(base, SINK_IP, smtp_port)
                if keep is not None:
                    signed["postfix"] = f"UNSIGNED: {OpenDkim.available()}"
            pf.start()
            msg_file = base / "message.eml"
            one = make_docs(1, args.size, "postfix", body=args.body)[0]
            msg_file.write_text(composed_sample(one["text"], one.get("html"))
                                .replace("\r\n", "\n"))
            measure_postfix(pf, procs, sink, min(args.warmup, 1000), args.postfix_sessions,
                            msg_file, 300)
            if keep is not None and pf.milter_pid:
                signed["postfix"] = verify_postfix(pf, procs, keep, msg_file, key, key_alg)
                log(f"postfix: DKIM at the keeping sink: {signed['postfix']}")
            pf_rounds = []
            for rnd in range(args.rounds):
                log(f"postfix: round {rnd + 1}: {args.messages} messages, "
                    f"{args.postfix_sessions} injecting sessions")
                t_a = time.monotonic()
                r = measure_postfix(pf, procs, sink, args.messages, args.postfix_sessions,
                                    msg_file, args.timeout)
                if proxy is not None:
                    r["rtt"] = rtt_figures(proxy, t_a, time.monotonic(), args.messages)
                log(f"postfix: {r['e2e_rate']:.0f} msg/s end to end "
                    f"(inject {r['produce_rate']:.0f}/s, steady {fmt(r['steady_rate'])}/s)")
                pf_rounds.append(r)
            results["postfix"] = max(pf_rounds, key=lambda r: r["e2e_rate"])
            total, pss, count = pf.rss_mb()
            rss["postfix"] = {f"sum of VmHWM over {count} processes": total,
                              "sum of PSS": pss}
            if pf.milter_pid:
                rss["postfix"]["opendkim VmHWM"] = peak_rss_mb(pf.milter_pid)
            ref = "postfix"
        else:
            log(f"postfix comparison skipped: {why}")
        if ref is None and len(results) > 1:
            ref = runs[-1].label
        print()
        print(f"kmta bench: {args.messages} messages of ~{args.size} B, {args.senders} senders, "
              f"{len(domains)} domains, {os.cpu_count()} CPUs; best of {args.rounds} round(s); "
              f"DKIM {args.dkim}")
        print(report(results, rss, ref))
        print()
        print(stages_report(results))
        print()
        if signed:
            print(f"DKIM ({key_alg}, one message each at a sink that keeps it, dkimpy verify):")
            print("\n".join(f"  {label}: {v}" for label, v in signed.items()))
            print()
        if args.rtt is not None:
            print(rtt_report(results, args.rtt, args.sink))
            print()
        if latency:
            print(latency_report(latency))
            print()
        signing = signing_cost.measure(1.0)  # the worker's per-message signing cost
        print(signing_cost.render(signing))
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "results": results, "rss_mb": rss,
                                             "rounds": all_rounds, "latency": latency,
                                             "dkim_signing": signing, "dkim_check": signed},
                                            indent=2))
        if args.profile:
            print()
            print(profile_report(args.profile.resolve(), args.profile_top))
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        for run in runs:
            run.stop()
        if pf is not None:
            pf.stop()
        if proxy is not None:
            proxy.stop()
        if keep is not None:
            keep.stop()
        clean_up(procs, dns, broker_data, base, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
