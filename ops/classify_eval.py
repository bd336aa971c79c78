"""``make eval-classify``: score reply classification on the labelled corpus in tests/data/replies/.

Every reply goes through the sender's own steps (``kmta.policy.verdict.judge``: ``Reply.parse`` ->
the classifier -> the ISP's reply rules -> disposition -> suppression) and is compared with its
label: the category, whether it is temporary (should be deferred, not bounced) and whether it
should suppress the recipient. ``tuned.jsonl`` is the part the rules were tuned on;
``heldout.jsonl`` was held out when it was made (its misses were read once since, to find general
causes); ``heldout2.jsonl`` to ``heldout39.jsonl`` were each written from public
sources the other parts do not use, after the rule changes before them, and scored blind once
(their misses were read afterwards for the next round: part 25's in round 22, part 26's
after its blind score in round 22, part 27's after its blind score in round 23, part 28's
after its blind score in round 25, part 29's and part 30's in round 27).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase
from kmta.policy.reply import Reply
from kmta.policy.verdict import Verdict, explain

__all__ = ["CORPUS", "PARTS", "Score", "load_corpus", "main", "score"]

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "replies"
#: the corpus parts, scored in this order by default
PARTS = (
    "tuned", "heldout", "heldout2", "heldout3", "heldout4", "heldout5", "heldout6", "heldout7",
    "heldout8", "heldout9", "heldout10", "heldout11", "heldout12", "heldout13",
    "heldout14", "heldout15", "heldout16", "heldout17", "heldout18", "heldout19", "heldout20",
    "heldout21", "heldout22", "heldout23", "heldout24", "heldout25", "heldout26", "heldout27",
    "heldout28", "heldout29", "heldout30", "heldout31", "heldout32", "heldout33", "heldout34",
    "heldout35",
    "heldout36",
    "heldout37",
    "heldout38",
    "heldout39",
    "heldout40",
)


@dataclass
class Score:
    """Counts for one corpus part; the rates are percentages."""

    total: int = 0
    correct: int = 0
    per_class: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    temp: Counter[tuple[str, str]] = field(default_factory=Counter)  # (truth, verdict)
    supp: Counter[tuple[str, str]] = field(default_factory=Counter)
    misses: list[tuple[dict[str, Any], Verdict]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.total if self.total else 0.0

    def _rate(self, counter: Counter[tuple[str, str]], truth: str, got: str) -> float:
        n = sum(v for (t, _), v in counter.items() if t == truth)
        return 100.0 * counter[(truth, got)] / n if n else 0.0

    @property
    def temporary_bounced(self) -> float:
        """Share of temporary replies that were bounced."""
        return self._rate(self.temp, "temporary", "bounce")

    @property
    def soft_suppressed(self) -> float:
        """Share of replies that must not suppress which did."""
        return self._rate(self.supp, "keep", "suppress")

    @property
    def hard_suppressed(self) -> float:
        """Share of hard bounces (unknown user/domain) that suppressed the recipient."""
        return self._rate(self.supp, "suppress", "suppress")


def load_corpus(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of one corpus file."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def score(records: Iterable[dict[str, Any]], classifier: Classifier, kb: KnowledgeBase) -> Score:
    """Judge every record as the sender would and count agreements with its labels."""
    s = Score()
    for r in records:
        reply = Reply.parse(r.get("code"), r["text"])
        _, v = explain(reply, classifier, kb, r.get("isp"), r.get("domain"))
        s.total += 1
        ok = v.category == r["label"]
        s.correct += ok
        s.per_class[r["label"]][0] += ok
        s.per_class[r["label"]][1] += 1
        s.temp[("temporary" if r["temporary"] else "permanent", v.verdict)] += 1
        s.supp[("suppress" if r["suppress"] else "keep", "suppress" if v.suppress else "keep")] += 1
        # a permanent reply deferred by a lock is no mistake: the scope stops, the message waits
        if not ok or (r["temporary"] and v.verdict == "bounce") or v.suppress != r["suppress"]:
            s.misses.append((r, v))
    return s


def report(name: str, s: Score, out: TextIO, misses: bool = False) -> None:
    """Print accuracy per class and the two confusion tables."""
    print(f"== {name}: {s.total} replies", file=out)
    print(
        f"category accuracy {s.accuracy:5.1f} %   temporary bounced {s.temporary_bounced:4.1f} %   "
        f"soft suppressed {s.soft_suppressed:4.1f} %   hard suppressed {s.hard_suppressed:5.1f} %",
        file=out,
    )
    print(f"  {'class':<20}{'n':>5}{'right':>7}{'acc %':>8}", file=out)
    for label, (ok, n) in sorted(s.per_class.items(), key=lambda kv: -kv[1][1]):
        print(f"  {label:<20}{n:>5}{ok:>7}{100.0 * ok / n:>8.1f}", file=out)
    print(f"  {'truth / verdict':<20}{'bounce':>8}{'defer':>8}", file=out)
    for truth in ("temporary", "permanent"):
        print(f"  {truth:<20}{s.temp[(truth, 'bounce')]:>8}{s.temp[(truth, 'defer')]:>8}", file=out)
    print(f"  {'truth / decision':<20}{'suppress':>9}{'keep':>7}", file=out)
    for truth in ("suppress", "keep"):
        print(
            f"  {truth:<20}{s.supp[(truth, 'suppress')]:>9}{s.supp[(truth, 'keep')]:>7}", file=out
        )
    if misses:
        for r, v in s.misses:
            print(
                f"  MISS {r['label']:>17} -> {v.category:<17} {v.verdict:<6} "
                f"{'S' if v.suppress else '-'} [{v.classifier_rule}/{v.rule}] "
                f"{r.get('code')} {r['text'][:110]}",
                file=out,
            )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Score each given corpus file (default: tuned and held-out parts); print the tables."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="eval-classify", description=__doc__)
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--misses", action="store_true", help="list every disagreement")
    args = parser.parse_args(argv)
    files = args.files or [CORPUS / f"{part}.jsonl" for part in PARTS]
    classifier, kb = Classifier.load(), KnowledgeBase.load()
    for path in files:
        report(path.name, score(load_corpus(path), classifier, kb), out, misses=args.misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
