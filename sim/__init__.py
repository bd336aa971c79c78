"""Simulated mailbox providers (SMTP) and their DNS, on loopback: ``kmta isp-sim``.

Names are imported lazily so that ``python -m sim.dns`` runs without importing the SMTP side.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ProviderBehaviour": "behaviour",
    "ProviderRules": "behaviour",
    "Verdict": "behaviour",
    "DnsServer": "dns",
    "DnsServerThread": "dns",
    "Zone": "dns",
    "EventLog": "eventlog",
    "DEFAULT_SCENARIO_TOML": "scenario",
    "ProviderSpec": "scenario",
    "RunningScenario": "scenario",
    "Scenario": "scenario",
    "default_scenario": "scenario",
    "load_scenario": "scenario",
    "run_scenario": "scenario",
    "AcceptedMessage": "smtp",
    "ProviderSim": "smtp",
    "ProbeClient": "probe",
    "ProbeResult": "probe",
    "send_one": "probe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sim' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sim.{module}"), name)
