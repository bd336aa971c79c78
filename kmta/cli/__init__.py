"""The ``kmta`` command (``python -m kmta.cli`` is the same). The only room that imports the
process kinds: ``streams`` (``kmta worker``), ``senders`` (``kmta sender``) and ``dashboard``."""
from __future__ import annotations

from kmta.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
