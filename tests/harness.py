"""The tests' names for the shared kit: ``ops.deployment`` (an isolated kmta deployment per test)
and ``ops.kit`` (ports, waiting)."""
from __future__ import annotations

from ops.deployment import (
    FAST_RULES,
    FAST_SCENARIO,
    ROOT,
    Pipeline,
    generic_scenario,
    held_at_sender,
    held_on_sender,
    messages,
    run,
)
from ops.kit import free_port, wait_for

__all__ = ["FAST_RULES", "FAST_SCENARIO", "ROOT", "Pipeline", "free_port", "generic_scenario",
           "held_at_sender", "held_on_sender", "messages", "run", "wait_for"]
