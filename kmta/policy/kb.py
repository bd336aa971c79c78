"""The ISP knowledge base: shipped rules, a local override and live edits, merged per ISP.

Merge order for one ISP (raw dicts, deep-merged, later wins)::

    shipped.default <- override.default <- shipped.isp.X <- override.isp.X <- live

so a partial override (``[isp.gmail.sending] max_connections = 2``) keeps the other shipped keys.
Lists are replaced, except ``replies``, which are concatenated specific-first: live,
override.isp.X, shipped.isp.X, override.default, shipped.default (a catch-all placed first would
pre-empt specific rules, KumoMTA PR #531). A reply rule whose ``name`` repeats an earlier one is
dropped, so an override replaces a shipped rule by reusing its name.

Rules narrowed to a source-IP pool (``pools.<P>`` tables, in ``[default]`` for every ISP or in
``[isp.X]``) are merged after all of that, in the same order::

    ... <- live <- default.pools.P (shipped, override) <- isp.X.pools.P (shipped, override)
        <- live.pools.P

so a warm-up pool's ``speed.max`` caps even an ISP whose own rule allows more.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmta.errors import ConfigError
from kmta.policy.classify import CATEGORIES
from schemas.rules import IspRule, ReplyRule, RetryRule, RulesFile, SendingRule, SpeedRule

__all__ = ["SHIPPED_ISPS", "EffectiveRule", "KnowledgeBase", "RulesError"]

SHIPPED_ISPS = Path(__file__).resolve().parent.parent / "data" / "isps.toml"

_SECTIONS = ("sending", "speed", "retry")
_DEFAULT_ONLY_FORBIDDEN = ("mx", "domains", "partitions")
_CACHE_SIZE = 4096


class RulesError(ConfigError):
    """A rules file or live edit is wrong. ``problems`` holds one ``"location: reason"`` line
    per problem; ``str()`` is all of them, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class EffectiveRule:
    """Everything that applies to one ISP after merging; every section filled in.
    ``partitions`` 0 means the ISP has no partitions of its own (it shares the common ones)."""

    isp: str
    sending: SendingRule
    speed: SpeedRule
    retry: RetryRule
    replies: tuple[ReplyRule, ...]
    partitions: int
    patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once here; matching runs for every reply.
        compiled = tuple(re.compile(r.match, re.IGNORECASE) for r in self.replies)
        object.__setattr__(self, "patterns", compiled)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for display (``kmta rules show``, the dashboard)."""
        return {
            "isp": self.isp,
            "partitions": self.partitions,
            "sending": self.sending.model_dump(exclude_none=True),
            "speed": self.speed.model_dump(exclude_none=True),
            "retry": self.retry.model_dump(exclude_none=True),
            "replies": [r.model_dump(exclude_none=True) for r in self.replies],
        }


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RulesError([f"{path}: cannot read: {e.strerror or e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise RulesError([f"{path}: not valid TOML: {e}"]) from None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``; ``replies`` are left to the caller."""
    out = dict(base)
    for key, value in over.items():
        if key == "replies":
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _table(data: Any, *keys: str) -> dict[str, Any]:
    """``data[k1][k2]...`` when every step is a table, else {} (the validator reports it)."""
    for key in keys:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data if isinstance(data, dict) else {}


def _clamp_start(speed: dict[str, Any]) -> dict[str, Any]:
    """An inherited ``start`` is only a first guess: when a more specific layer moves min/max,
    pull it into the new range instead of rejecting the edit."""
    low, high, start = speed.get("min"), speed.get("max"), speed.get("start")
    if high is None:
        high = float("inf")  # no cap
    numbers = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high, start)
    )
    if numbers and low <= high:  # type: ignore[operator]
        speed = {**speed, "start": min(max(start, low), high)}  # type: ignore[type-var]
    return speed


def _clamp_min(speed: dict[str, Any]) -> dict[str, Any]:
    """A more specific layer that lowers ``max`` below an inherited ``min`` (a warm-up pool's
    cap of 3 under a shipped minimum of 5) narrows the range to that cap instead of failing."""
    low, high = speed.get("min"), speed.get("max")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if numbers and low > high:  # type: ignore[operator]
        speed = {**speed, "min": high}
    return speed


def _canonical(live: Mapping[str, Any] | None) -> str | bool | None:
    """A live edit as a cache key: None for none, its sorted JSON, or False when it is not
    plain JSON data (then it is not cached). The brain and the senders look up the rule of an
    ISP with a live edit for every delivery; merging and validating it again each time cost
    ~90 us."""
    if not live:
        return None
    try:
        return json.dumps(live, sort_keys=True)
    except (TypeError, ValueError):
        return False


def _list(value: Any) -> list[Any]:
    """``value`` when it is a list, else [] (the schema check reports the wrong type)."""
    return value if isinstance(value, list) else []


def _replies(layer: Mapping[str, Any]) -> list[Any]:
    return _list(layer.get("replies"))


def _errors(exc: ValueError) -> list[dict[str, Any]]:
    """The error list of a schema ValidationError. pydantic's ValidationError is a ValueError;
    catching it as such keeps the policy core free of a direct pydantic import."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return list(errors())
    return [{"type": "value_error", "loc": (), "msg": str(exc)}]


def _location(loc: Sequence[int | str], raw: Any) -> str:
    """``("isp", "gmail", "replies", 2, "match")`` -> ``isp.gmail.replies[2](name).match``."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f"({node['name']})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if err["type"] != "value_error" and isinstance(value, (str, int, float, bool)):
        msg += f" (got {value!r})"
    return msg


def _is_section_check(err: Mapping[str, Any]) -> bool:
    """A cross-field check of a whole sending/speed/retry section (min > max, window order).
    A file or live edit may hold such a section only in part, so these are checked after the
    merge instead."""
    loc = err["loc"]
    return err["type"] == "value_error" and bool(loc) and loc[-1] in _SECTIONS


def _schema_problems(label: str, errors: list[Any], raw: Any) -> list[str]:
    return [
        f"{label}: {_location(e['loc'], raw)}: {_message(e)}"
        for e in errors
        if not _is_section_check(e)
    ]


def _layer_problems(
    label: str, layer: Any, where: tuple[str, ...], *, is_default: bool
) -> list[str]:
    """Checks the schema cannot make on one table of one file (before any merging)."""
    if not isinstance(layer, dict):
        return []
    problems: list[str] = []
    loc = ".".join(where)
    if is_default:
        problems += [
            f"{label}: {loc}.{k}: not allowed in [default] (it names one ISP)"
            for k in _DEFAULT_ONLY_FORBIDDEN
            if k in layer
        ]
    seen: set[str] = set()
    for i, reply in enumerate(_replies(layer)):
        if not isinstance(reply, dict):
            continue
        name = reply.get("name")
        at = f"{label}: {loc}.replies[{i}]({name})"
        if isinstance(name, str):
            if name in seen:
                problems.append(f"{at}.name: duplicate rule name in this table")
            seen.add(name)
        category = reply.get("category")
        if category is not None and category not in CATEGORIES:
            problems.append(
                f"{at}.category: unknown category {category!r} "
                f"(known: {', '.join(sorted(CATEGORIES))})"
            )
    pools = layer.get("pools")
    if isinstance(pools, dict):
        for pool, pool_layer in pools.items():
            problems += _layer_problems(label, pool_layer, (*where, "pools", str(pool)),
                                        is_default=False)
    for i, pattern in enumerate(_list(layer.get("mx"))):
        if isinstance(pattern, str) and not pattern.strip(". *"):
            problems.append(f"{label}: {loc}.mx[{i}]: pattern {pattern!r} matches every host")
    return problems


class KnowledgeBase:
    """Merged provider knowledge: MX rollup, and the effective rule per ISP."""

    def __init__(self, shipped: dict[str, Any], override: dict[str, Any] | None = None) -> None:
        """Index already validated rules; use ``load`` or ``from_dicts``, which validate."""
        override = override or {}
        self._shipped = copy.deepcopy(shipped)
        self._override = copy.deepcopy(override)
        names = list(_table(shipped, "isp"))
        names += [n for n in _table(override, "isp") if n not in names]
        self._names = names
        self._cache: dict[tuple[str, str | None, str | bool | None], EffectiveRule] = {}
        self._domains: dict[str, str] = {}
        self._mx: list[tuple[str, tuple[str, ...]]] = []
        for name in names:
            merged = _merge(_table(shipped, "isp", name), _table(override, "isp", name))
            for domain in _list(merged.get("domains")):
                self._domains.setdefault(str(domain).lower().rstrip("."), name)
            patterns = tuple(str(p).lower().rstrip(".") for p in _list(merged.get("mx")))
            self._mx.append((name, patterns))

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, shipped: Path | None = None, override: Path | None = None) -> KnowledgeBase:
        """Read the shipped file (default ``kmta/data/isps.toml``) and an optional override."""
        shipped_path = shipped or SHIPPED_ISPS
        shipped_data = _read_toml(shipped_path)
        override_data = _read_toml(override) if override is not None else {}
        return cls._build(
            shipped_data, override_data, (str(shipped_path), str(override or "override"))
        )

    @classmethod
    def from_dicts(
        cls, shipped: dict[str, Any], override: dict[str, Any] | None = None
    ) -> KnowledgeBase:
        """Build from parsed TOML; raise RulesError (a ConfigError) listing every problem."""
        return cls._build(shipped, override or {}, ("shipped", "override"))

    @classmethod
    def _build(
        cls, shipped: dict[str, Any], override: dict[str, Any], labels: tuple[str, str]
    ) -> KnowledgeBase:
        problems: list[str] = []
        for data, label in ((shipped, labels[0]), (override, labels[1])):
            try:
                RulesFile.model_validate(data)
            except ValueError as e:
                problems += _schema_problems(label, _errors(e), data)
            problems += _layer_problems(label, data.get("default"), ("default",), is_default=True)
            for name, layer in _table(data, "isp").items():
                problems += _layer_problems(label, layer, ("isp", name), is_default=False)
        kb = cls(shipped, override)
        problems += kb._domain_problems()
        problems += kb._merged_problems()
        if problems:
            raise RulesError(problems)
        return kb

    def _domain_problems(self) -> list[str]:
        owner: dict[str, str] = {}
        problems = []
        for name in self._names:
            merged = _merge(_table(self._shipped, "isp", name), _table(self._override, "isp", name))
            for domain in _list(merged.get("domains")):
                key = str(domain).lower().rstrip(".")
                if key in owner and owner[key] != name:
                    problems.append(
                        f"isp.{name}.domains: {key!r} is also listed in isp.{owner[key]}"
                    )
                owner.setdefault(key, name)
        return problems

    def _merged_problems(self) -> list[str]:
        """Cross-field checks on each merged rule (every ISP, alone and with each pool it has
        rules for); a problem of [default] is reported once, not again for every ISP."""
        base = self._check(None, None)
        for pool in self._pool_names(None, None):
            base += [p for p in self._check(None, None, pool) if p not in base]
        problems = [f"merged rules: {p}" for p in base]
        for name in self._names:
            seen: list[str] = []
            for narrowed in (None, *self._pool_names(name, None)):
                seen += [p for p in self._check(name, None, narrowed) if p not in seen]
            problems += [
                f"merged rules: {p}" for p in seen
                if p.replace(f"isp.{name}", "default", 1) not in base
            ]
        return problems

    def _layers(self, isp: str | None, live: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """The tables that make up ``isp``'s rule, generic first: [default] (shipped,
        override), [isp.X] (shipped, override), the live edit."""
        layers = [_table(self._shipped, "default"), _table(self._override, "default")]
        if isp is not None:
            layers += [_table(self._shipped, "isp", isp), _table(self._override, "isp", isp)]
        if live:
            layers.append(dict(live))
        return layers

    def _pool_names(self, isp: str | None, live: Mapping[str, Any] | None) -> list[str]:
        """Pools that have rules of their own for ``isp`` (its tables and [default]'s)."""
        names: list[str] = []
        for layer in self._layers(isp, live):
            names += [str(n) for n in _table(layer, "pools") if str(n) not in names]
        return names

    # ---- merging ----------------------------------------------------------------------------
    def _raw(
        self, isp: str | None, live: Mapping[str, Any] | None, pool: str | None = None
    ) -> dict[str, Any]:
        layers = self._layers(isp, live)
        layers[:2] = [
            {k: v for k, v in layer.items() if k not in _DEFAULT_ONLY_FORBIDDEN}
            for layer in layers[:2]
        ]
        # a pool narrows the ISP's whole rule: its tables come after every ISP layer, in the
        # same order ([default] pool, shipped, override, live)
        pool_layers = [_table(layer, "pools", pool) for layer in layers] if pool else []
        layers = [{k: v for k, v in layer.items() if k != "pools"} for layer in layers]
        layers += pool_layers
        merged: dict[str, Any] = {}
        start_layer = min_layer = max_layer = -1
        for i, layer in enumerate(layers):
            merged = _merge(merged, layer)
            speed = layer.get("speed")
            if isinstance(speed, Mapping):
                start_layer = i if "start" in speed else start_layer
                min_layer = i if "min" in speed else min_layer
                max_layer = i if "max" in speed else max_layer
        if max_layer > min_layer:
            merged["speed"] = _clamp_min(merged["speed"])
        if max(min_layer, max_layer) > start_layer:
            merged["speed"] = _clamp_start(merged["speed"])
        replies: list[Any] = []
        names: set[str] = set()
        for layer in reversed(layers):  # specific before generic
            for reply in _replies(layer):
                name = reply.get("name") if isinstance(reply, dict) else None
                if isinstance(name, str) and name in names:
                    continue
                if isinstance(name, str):
                    names.add(name)
                replies.append(reply)
        merged["replies"] = replies
        return merged

    def _check(
        self, isp: str | None, live: Mapping[str, Any] | None, pool: str | None = None
    ) -> list[str]:
        """Problems of the merged rule (only the cross-field ones when ``live`` is None)."""
        try:
            self._effective(isp, live, pool)
        except _Invalid as e:
            return list(e.problems)
        return []

    def _effective(
        self, isp: str | None, live: Mapping[str, Any] | None, pool: str | None = None
    ) -> EffectiveRule:
        merged = self._raw(isp, live, pool)
        where = f"isp.{isp}" if isp is not None else "default"
        if pool:
            where += f" (pool {pool})"
        # Each section on its own, so that one bad section does not hide the others' problems.
        errors: list[Any] = []
        sections: dict[str, Any] = {}
        tried: set[str] = set()
        for name, model in (("sending", SendingRule), ("speed", SpeedRule), ("retry", RetryRule)):
            raw = merged.get(name, {})
            if not isinstance(raw, dict):
                continue  # IspRule below reports the wrong type
            tried.add(name)
            try:
                sections[name] = model.model_validate(raw)
            except ValueError as e:
                errors += [{**x, "loc": (name, *x["loc"])} for x in _errors(e)]
        rest = {k: v for k, v in merged.items() if k not in tried}
        try:
            rule: IspRule | None = IspRule.model_validate(rest)
        except ValueError as e:
            rule = None
            errors += _errors(e)
        if not live:  # field errors of the files were reported per file, with the file's name
            errors = [x for x in errors if _is_section_check(x)]
        problems = [
            f"{_location((where, *x['loc']), {where: merged})}: {_message(x)}"
            for x in errors
        ]
        sending: SendingRule = sections.get("sending") or SendingRule()
        retry: RetryRule = sections.get("retry") or RetryRule()
        known = isp is not None and isp in self._names
        partitions = ((rule.partitions if rule else None) or 1) if known else 0
        if "sending" in sections and partitions > sending.max_connections:
            problems.append(
                f"{where}.partitions: {partitions} partitions but sending.max_connections "
                f"is {sending.max_connections}: every partition needs a connection"
            )
        if "retry" in sections and retry.mode == "growing" and retry.max_interval < retry.interval:
            problems.append(
                f"{where}.retry: max_interval ({retry.max_interval}) is below "
                f"interval ({retry.interval})"
            )
        if problems or rule is None:
            raise _Invalid(problems)  # empty: the files' own problems were reported per file
        return EffectiveRule(
            isp=isp or "default",
            sending=sending,
            speed=sections.get("speed") or SpeedRule(),
            retry=retry,
            replies=tuple(rule.replies),
            partitions=partitions,
        )

    # ---- public queries ---------------------------------------------------------------------
    def isp_names(self) -> list[str]:
        """Known ISP names, in file order (shipped first, then ISPs only the override adds)."""
        return list(self._names)

    def member_isp(self, domain: str) -> str | None:
        """The ISP that lists ``domain`` in its ``domains`` (case-insensitive, a trailing dot
        ignored); None for any other domain, which only its MX hosts can place."""
        return self._domains.get(domain.lower().rstrip("."))

    def isp_for(self, domain: str, mx_hosts: Sequence[str]) -> str:
        """MX rollup: the ISP that ``domain`` belongs to.

        A member domain listed in ``domains`` wins (exact, case-insensitive); then the ``mx``
        glob patterns, ISP by ISP in file order, against every MX host (case-insensitive, a
        trailing dot ignored). An unknown domain is its own ISP: the domain, lowercased.
        """
        key = domain.lower().rstrip(".")
        if key in self._domains:
            return self._domains[key]
        hosts = [h.lower().rstrip(".") for h in mx_hosts]
        for name, patterns in self._mx:
            for pattern in patterns:
                if any(fnmatch.fnmatchcase(h, pattern) for h in hosts):
                    return name
        return key

    def partitions(self, isp: str) -> int:
        """Queue partitions of an ISP of its own (default 1); 0 for unknown ISPs (shared)."""
        return self.effective(isp).partitions

    def effective(
        self, isp: str, live: Mapping[str, Any] | None = None, pool: str | None = None
    ) -> EffectiveRule:
        """The merged, validated rule for ``isp`` (an ISP name, or an unknown domain, which
        gets ``[default]``); ``live`` is a partial IspRule dict from an operator edit; ``pool``
        narrows it with the pool's tables (``pools.<pool>``), if any."""
        key = (isp, pool or None, _canonical(live))
        if key[2] is not False and key in self._cache:
            return self._cache[key]
        try:
            rule = self._effective(isp, live, pool or None)
        except _Invalid as e:
            where = f"{isp} (pool {pool})" if pool else isp
            raise RulesError(
                [f"rules for {where}: {p}" for p in e.problems] or [f"rules for {where}: invalid"]
            ) from None
        if key[2] is not False:
            if len(self._cache) >= _CACHE_SIZE:  # unknown domains are ISPs too: keep it bounded
                self._cache.clear()
            self._cache[key] = rule
        return rule

    def validate_live(self, isp: str, live: Mapping[str, Any]) -> EffectiveRule:
        """Validate an operator's edit for ``isp`` merged over the files; return the result or
        raise RulesError whose lines say where the edit is wrong (``isp.gmail.speed.max: ...``)."""
        if not isinstance(live, Mapping):
            raise RulesError([f"live edit for {isp}: must be a table, got {type(live).__name__}"])
        problems = _layer_problems("live edit", dict(live), ("isp", isp), is_default=False)
        if "pools" in live:
            # the merge below reads only tables; a pools value of the wrong shape is said here
            try:
                IspRule.model_validate({"pools": live["pools"]})
            except ValueError as e:
                problems += _schema_problems("live edit", [
                    x for x in _errors(e) if len(x["loc"]) <= 2], {"pools": live["pools"]})
        for pool in (None, *self._pool_names(isp, live)):
            try:
                self._effective(isp, live, pool)
            except _Invalid as e:
                problems += [f"live edit: {p}" for p in e.problems if f"live edit: {p}"
                             not in problems]
        if problems:
            raise RulesError(problems)
        return self._effective(isp, live)


class _Invalid(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
