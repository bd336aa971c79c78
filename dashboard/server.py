"""The dashboard's production WSGI server: waitress (pure Python, a thread pool behind one
listening socket), stoppable from another thread or a signal handler."""

from __future__ import annotations

import threading
from typing import Any

import waitress
from waitress import wasyncore

__all__ = ["WebServer"]


class WebServer:
    """Binds at construction (``port`` 0 = any free port); ``serve()`` blocks until ``stop()``."""

    def __init__(self, app: Any, host: str, port: int, threads: int = 8) -> None:
        self._map: dict = {}  # every socket of the server: listeners, connections, its trigger
        self._server = waitress.create_server(
            app, map=self._map, host=host, port=port, threads=threads, ident="kmta",
            # the dashboard polls every second: idle keep-alive connections go after 2 min
            channel_timeout=120, expose_tracebacks=False,
        )
        self._stop = threading.Event()
        listen = getattr(self._server, "effective_listen", None)
        self.host, self.port = listen[0] if listen else (
            self._server.effective_host, self._server.effective_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def serve(self) -> None:
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
        finally:  # in the loop's own thread: close the listener and every open connection
            self._server.task_dispatcher.shutdown()
            wasyncore.close_all(self._map)

    def stop(self) -> None:
        """Safe from any thread and from a signal handler."""
        self._stop.set()
        for obj in list(self._map.values()):  # wake the loop now, not at its next timeout
            if hasattr(obj, "pull_trigger"):
                obj.pull_trigger()
                break
