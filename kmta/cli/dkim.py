"""``kmta dkim keygen`` and ``kmta dkim check``: make a key and its DNS record; compare the
published records with the configured keys through the configured resolver."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from kmta.config import Config, DkimKeyConfig
from kmta.errors import ConfigError
from kmta.pipeline.dkim import DkimKey, generate_key, load_key, txt_record
from kmta.policy.signing import active_keys

__all__ = ["add_parser", "check", "dns_zone_line"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dkim", help="DKIM keys: make one, check DNS against the config",
                       description="keygen writes a private key (PEM, PKCS#8) and prints the "
                       "TXT record to publish; check looks up every configured selector "
                       "through [dns] and says whether DNS matches the key.")
    s = p.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    k = s.add_parser("keygen", help="write a new key and print its DNS TXT record")
    k.add_argument("domain")
    k.add_argument("selector")
    k.add_argument("--algorithm", choices=["rsa-sha256", "ed25519-sha256"],
                   default="rsa-sha256", help="rsa-sha256 (2048 bits) or ed25519-sha256")
    k.add_argument("--out", help="key file (default <data_dir>/keys/DOMAIN.SELECTOR.pem)")
    k.set_defaults(func=run_keygen)
    c = s.add_parser("check", help="compare published TXT records with the configured keys")
    c.add_argument("--json", action="store_true",
                   help="print JSON: [{name, verdict, detail, problem}]")
    c.set_defaults(func=run_check)


def dns_zone_line(key: DkimKey) -> str:
    """A zone-file line; the value in quoted strings of at most 255 characters."""
    v = txt_record(key)
    parts = " ".join(f'"{v[i:i + 255]}"' for i in range(0, len(v), 255))
    return f"{key.selector}._domainkey.{key.domain}. IN TXT ( {parts} )"


def run_keygen(args: argparse.Namespace) -> int:
    config: Config = args.config_obj
    domain, selector = args.domain.lower().rstrip("."), args.selector
    out = Path(args.out) if args.out else Path(config.data_dir) / "keys" / (
        f"{domain}.{selector}.pem")
    if out.exists():
        raise ConfigError(f"{out} exists; not overwriting a key (remove it or use --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    pem = generate_key(args.algorithm)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    key = load_key(domain, DkimKeyConfig(selector=selector, key_file=str(out),
                                         algorithm=args.algorithm))
    print(f"wrote {out}")
    print("publish in DNS:")
    print(dns_zone_line(key))
    print("then add to the config:")
    print(f'[[domains]]\nname = "{domain}"\n[[domains.dkim]]\nselector = "{selector}"\n'
          f'key_file = "{out.resolve()}"\nalgorithm = "{args.algorithm}"')
    return 0


def _tags(record: str) -> dict[str, str]:
    out = {}
    for part in record.split(";"):
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip()] = "".join(v.split())
    return out


async def check(config: Config, now: float) -> list[tuple[str, str, str]]:
    """``(selector name, verdict, detail)`` per configured selector; verdict is ok, mismatch,
    missing, revoked, dns-error or key-error."""
    from kmta.pipeline.resolver import Resolver
    resolver = Resolver(config.dns)
    rows = []
    for d in config.domains:
        for kc in d.dkim:
            name = f"{kc.selector}._domainkey.{d.name}"
            try:
                key = load_key(d.name, kc)
            except ConfigError as e:
                rows.append((name, "key-error", str(e)))
                continue
            state = "signing now" if active_keys([key], now) else (
                "not yet valid" if (kc.window()[0] or 0) > now else "retired")
            found = await resolver.txt(name)
            if found is None:
                rows.append((name, "dns-error", f"lookup failed ({state})"))
                continue
            recs = [_tags(r) for r in found if "p=" in r]
            if not recs:
                rows.append((name, "missing", f"no DKIM TXT record ({state}); publish: "
                             f"{txt_record(key)}"))
                continue
            want_k = "rsa" if kc.algorithm == "rsa-sha256" else "ed25519"
            rec = recs[0]
            if len(recs) > 1:
                rows.append((name, "mismatch", f"{len(recs)} TXT records; publish one ({state})"))
            elif rec.get("p", "") == "":
                rows.append((name, "revoked", f"p= is empty ({state})"))
            elif rec.get("k", "rsa") != want_k or rec.get("p") != key.public_b64:
                rows.append((name, "mismatch", f"DNS has k={rec.get('k', 'rsa')} and another "
                             f"public key than {kc.key_file} ({state})"))
            else:
                rows.append((name, "ok", f"{kc.algorithm}, {key.bits} bits, {state}"))
    return rows


def run_check(args: argparse.Namespace) -> int:
    config: Config = args.config_obj
    if not config.domains:
        print("[]" if args.json else "no [[domains]] configured")
        return 1
    now = time.time()
    rows = [{"name": name, "verdict": verdict, "detail": detail,
             # a key signing now that DNS does not confirm, or a key kmta cannot use
             "problem": (verdict != "ok" and "signing now" in detail) or verdict == "key-error"}
            for name, verdict, detail in asyncio.run(check(config, now))]
    if args.json:
        print(json.dumps(rows, indent=2))
    width = max(len(r["name"]) for r in rows) if rows else 0
    for r in [] if args.json else rows:
        print(f"{r['name']:<{width}}  {r['verdict']:<9}  {r['detail']}")
    return 1 if any(r["problem"] for r in rows) else 0
