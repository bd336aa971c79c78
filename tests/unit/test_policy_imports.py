"""The policy core stays pure: standard library, schemas and kmta.errors only; no clock reads."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import kmta.policy

POLICY = Path(kmta.policy.__file__).parent
ALLOWED = {"schemas", "kmta"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_policy_imports_only_stdlib_schemas_and_errors() -> None:
    for path in sorted(POLICY.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "kmta":
                assert name == "kmta.errors" or name.startswith("kmta.policy"), (
                    f"{path.name}: {name}"
                )
            elif top != "__future__":
                assert top in ALLOWED or top in sys.stdlib_module_names, (
                    f"{path.name} imports {name}"
                )


def test_policy_never_reads_the_clock() -> None:
    for path in sorted(POLICY.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for call in ("time.time(", "time.monotonic(", "datetime.now(", "sleep("):
            assert call not in text, f"{path.name} calls {call}"


def test_public_surface() -> None:
    assert set(kmta.policy.__all__) <= set(dir(kmta.policy))
