"""Write the JSON Schema files of the public topics from the pydantic models.

    python -m schemas.generate           # (re)write schemas/<topic>.schema.json
    python -m schemas.generate --check   # exit 1 when a file differs from the models

The models are the source of truth; the files are for producers and consumers that are not
written in Python (kcat, other services). A unit test fails when they drift apart.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from schemas.base import Model
from schemas.control import ControlCommand, ControlRecord
from schemas.events import DeadLetter, DeliveryEvent
from schemas.message import OutboxMessage
from schemas.nodes import NodeStats
from schemas.state import IspState
from schemas.suppression import Suppression

__all__ = ["DIALECT", "SCHEMAS", "render", "schema_for", "stale", "write"]

DIR = Path(__file__).resolve().parent
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# topic (without the prefix) -> the model of its records
SCHEMAS: dict[str, type[Model]] = {
    "outbox": OutboxMessage,
    "results": DeliveryEvent,
    "control": ControlCommand,
    "state": IspState,
    "dlq": DeadLetter,
    "audit": ControlRecord,
    "nodes": NodeStats,
    "suppression": Suppression,
}


def schema_for(model: type[Model]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the records as they travel: field names by alias."""
    return {"$schema": DIALECT, **model.model_json_schema(by_alias=True)}


def render(model: type[Model]) -> str:
    return json.dumps(schema_for(model), indent=2, ensure_ascii=False) + "\n"


def path_of(topic: str, directory: Path = DIR) -> Path:
    return directory / f"{topic}.schema.json"


def write(directory: Path = DIR) -> list[Path]:
    """Write every schema file; returns the paths written."""
    out = []
    for topic, model in SCHEMAS.items():
        p = path_of(topic, directory)
        p.write_text(render(model), encoding="utf-8")
        out.append(p)
    return out


def stale(directory: Path = DIR) -> list[str]:
    """Topics whose file is missing or differs from what the models generate."""
    bad = []
    for topic, model in SCHEMAS.items():
        p = path_of(topic, directory)
        if not p.exists() or p.read_text(encoding="utf-8") != render(model):
            bad.append(topic)
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    ap.add_argument("--dir", type=Path, default=DIR, help="output directory")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale(args.dir)
        for topic in bad:
            print(f"{path_of(topic, args.dir)} is out of date: run python -m schemas.generate",
                  file=sys.stderr)
        return 1 if bad else 0
    for p in write(args.dir):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
