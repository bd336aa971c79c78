"""Every import points down: a room imports only the rooms below it (docs/architecture.md, "Where
code lives"). Imports are read with ast, function-local ones included, so a lazy import cannot
hide an arrow that runs back up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kmta", "schemas", "streams", "senders", "dashboard", "inbound", "sim", "ops")

# room -> the other rooms it may import (its own room and the standard library always)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "schemas": set(),
    "policy": {"errors", "schemas"},
    "config": {"errors", "schemas"},
    "kmta": set(),  # kmta/__init__.py
    "pipeline": {"errors", "schemas", "policy", "config"},
    "client": {"errors", "schemas", "policy", "config", "pipeline"},
    "streams": {"errors", "schemas", "policy", "config", "pipeline"},
    "senders": {"errors", "schemas", "policy", "config", "pipeline"},
    "dashboard": {"errors", "schemas", "policy", "config", "pipeline"},
    "inbound": {"errors", "schemas", "policy", "config", "pipeline"},
    "sim": {"errors", "schemas"},
    "ops": {"errors", "schemas", "policy", "config", "pipeline", "client", "sim"},
    "cli": {"errors", "schemas", "policy", "config", "pipeline", "client", "sim", "ops",
            "streams", "senders", "dashboard", "inbound"},
}
PROCESS_KINDS = {"streams", "senders", "dashboard", "inbound"}
# third-party packages a room may import: None = any, except the process kinds' frameworks below
THIRD_PARTY: dict[str, set[str] | None] = {
    "errors": set(), "policy": set(), "schemas": {"pydantic"}, "config": {"pydantic"},
    "kmta": set(),
}
FRAMEWORKS = {"faust": {"streams", "cli"}, "mode": {"streams", "cli"},
              "dash": {"dashboard"}, "flask": {"dashboard"}, "plotly": {"dashboard"}}


def room_of(module: str) -> str | None:
    """The room of an importable name; None for the standard library and third-party code."""
    parts = module.split(".")
    top = parts[0]
    if top == "kmta":
        if len(parts) == 1:
            return "kmta"
        return {"policy": "policy", "errors": "errors", "config": "config",
                "pipeline": "pipeline", "client": "client", "cli": "cli"}[parts[1]]
    if top in PACKAGES:
        return top
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    return imports_of(path.read_text(encoding="utf-8"), package)


def imports_of(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, at any depth; relative
    imports resolved."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            # ``from kmta import cli`` imports the submodule kmta.cli
            names |= {f"{mod}.{a.name}" for a in node.names if room_of(mod) == "kmta"}
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                node.func, "attr", None)) in ("__import__", "import_module")
              and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value))
    return names


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_rooms_form_a_ladder() -> None:
    """The allowed arrows have no cycle, so there is an order from bottom to top."""
    done: set[str] = set()
    todo = dict(ALLOWED)
    while todo:
        ready = [r for r, below in todo.items() if below <= done]
        assert ready, f"cycle among {sorted(todo)}"
        for r in ready:
            done.add(r)
            del todo[r]


def test_every_import_points_down() -> None:
    wrong = []
    for path in sources():
        here = room_of(module_name(path))
        assert here in ALLOWED, path
        for name in imports(path):
            top = name.split(".")[0]
            there = room_of(name)
            if there is not None:
                if there != here and there not in ALLOWED[here]:
                    wrong.append(f"{path.relative_to(ROOT)} ({here}) imports {name} ({there})")
            elif top in sys.stdlib_module_names or top == "__future__":
                continue
            elif top in FRAMEWORKS and here not in FRAMEWORKS[top]:
                wrong.append(f"{path.relative_to(ROOT)} ({here}) imports {name}")
            elif THIRD_PARTY.get(here) is not None and top not in THIRD_PARTY[here]:
                wrong.append(f"{path.relative_to(ROOT)} ({here}) imports third-party {name}")
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_imports_process_kinds() -> None:
    for room, below in ALLOWED.items():
        if room != "cli":
            assert not (below & PROCESS_KINDS), room


@pytest.mark.parametrize(("source", "arrow"), [
    ("from streams.app import build\n", "streams.app"),
    ("def f():\n    from senders.node import SenderNode\n", "senders.node"),
    ("from ..node import x\n", "senders.node"),
    ("from kmta import cli\n", "kmta.cli"),
    ("__import__('dashboard.cli')\n", "dashboard.cli"),
])
def test_the_checker_sees_lazy_and_relative_imports(source: str, arrow: str) -> None:
    """The checker itself: a function-local, relative or dynamic import is an arrow too."""
    assert arrow in imports_of(source, "senders.sub")


FRAMEWORK_PROBE = """
import sys
import kmta.cli, kmta.cli.sender
from kmta.cli import build_parser
assert build_parser().parse_args(["sender"]).func.__name__ == "run_sender"
print(sorted({m.split(".")[0] for m in sys.modules} & {"faust", "mode", "dash", "flask",
                                                         "plotly", "streams", "dashboard"}))
"""


def test_the_sender_process_loads_no_faust() -> None:
    """What ``kmta sender`` imports (the command line and the sender process module) loads
    neither faust, the brain, nor the dashboard."""
    out = subprocess.run([sys.executable, "-c", FRAMEWORK_PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_the_policy_core_never_reads_the_clock() -> None:
    """Time is an argument of every policy function: no clock reads, no sleeps."""
    for path in sorted((ROOT / "kmta" / "policy").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for call in ("time.time(", "time.monotonic(", "datetime.now(", "sleep("):
            assert call not in text, f"{path.name} calls {call}"


def test_the_policy_core_exports_what_it_names() -> None:
    import kmta.policy

    assert set(kmta.policy.__all__) <= set(dir(kmta.policy))
