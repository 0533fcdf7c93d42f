"""Run an ASGI app under uvicorn in a background thread on ``127.0.0.1:<free port>``.

The base of the local fake model servers (:mod:`tests.fakes.openai_server`,
:mod:`tests.fakes.anthropic_server`): real HTTP on a real socket, started and
stopped from synchronous test code (fixtures, context managers).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any


class ThreadedServer:
    """Subclasses implement :meth:`_app` (an ASGI app). ``with Server() as s: s.port``."""

    name = "fake-server"
    lifespan = "off"  # "on" for apps with startup work (e.g. an MCP session manager)

    def __init__(self) -> None:
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None

    def _app(self) -> Any:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ThreadedServer":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan=self.lifespan,
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # don't wait for clients' idle keep-alive connections
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
