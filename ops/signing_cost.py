"""DKIM signing cost per message: CPU time of kmta's signing step (``Outgoing.stamp``: the
header list, relaxed/relaxed canonicalisation, hashing, the signature) for RSA-2048
and ed25519, on composed messages of 2 KB and 100 KB (``scripts/bench_dkim.py``, ``make bench``).

Each figure is the median of 5 rounds of process CPU time (``time.process_time``) per message;
one worker signs each message once (retries reuse the signature), so messages per core second
is 1 / this figure.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from kmta.config import Config
from kmta.pipeline.dkim import generate_key
from kmta.pipeline.outgoing import Outgoing
from kmta.policy.compose import compose
from schemas import OutboxMessage

__all__ = ["CASES", "measure", "render"]

CASES = [("rsa-sha256", 2048), ("ed25519-sha256", 2048), ("rsa-sha256", 102400),
         ("ed25519-sha256", 102400), ("dual", 2048)]


def _message(size: int) -> str:
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tem\n"
    msg = OutboxMessage.model_validate({
        "from": "news@shop.example", "to": "ann@gmail.com", "subject": "Spring sale",
        "text": line * max(1, (size - 600) // len(line)), "campaign": "spring",
        "unsubscribe_url": "https://shop.example/u/abc"})
    return compose(msg, "18c1f2a3b4d-0123456789abcdef", "shop.example", 1.8e9)


def measure(seconds: float) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for alg in ("rsa-sha256", "ed25519-sha256"):
            paths[alg] = Path(d) / f"{alg}.pem"
            paths[alg].write_bytes(generate_key(alg))
        rows = []
        for alg, size in CASES:
            algs = ["rsa-sha256", "ed25519-sha256"] if alg == "dual" else [alg]
            out = Outgoing(Config.model_validate({"domains": [{"name": "shop.example", "dkim": [
                {"selector": f"s{i}", "key_file": str(paths[a]), "algorithm": a}
                for i, a in enumerate(algs)]}]}))
            data = _message(size)
            out.stamp(data, "m", "news@shop.example", "shop.example", 1.8e9)  # warm up
            rounds = []
            for _ in range(5):
                n, t0 = 0, time.process_time()
                while time.process_time() - t0 < seconds / 5:
                    out.stamp(data, "m", "news@shop.example", "shop.example", 1.8e9)
                    n += 1
                rounds.append((time.process_time() - t0) / n)
            rows.append({"algorithm": "rsa-sha256 + ed25519-sha256" if alg == "dual" else alg,
                         "bytes": len(data.encode()), "cpu_ms": statistics.median(rounds) * 1e3})
        return rows


def render(rows: list[dict]) -> str:
    out = ["DKIM signing CPU per message (worker, at routing: relaxed/relaxed)"]
    for r in rows:
        out.append(f"  {r['algorithm']:<28} {r['bytes'] / 1024:>6.0f} KB  {r['cpu_ms']:7.2f} ms"
                   f"  ({1e3 / r['cpu_ms']:6.0f} msg/s per core)")
    return "\n".join(out)
