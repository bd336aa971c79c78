"""The operator dashboard: a pure data layer (``model``), a Kafka feed (``feed``) and a Dash app
(``app``). Import the submodules directly; this package imports nothing heavy."""

__all__ = ["app", "auth", "charts", "cli", "feed", "layout", "model", "rules"]
