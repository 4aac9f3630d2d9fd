"""An aiohttp server on a loopback port, served from its own thread and event loop: what the
protocol fakes (OpenAI's HTTP API, its Realtime websocket) run on, so that code under test
in any thread or loop can reach them like the real service."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoopbackServer:
    def __init__(self, name: str, handler: Handler, host: str, port: int, max_body: int) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._handler = handler
        self._max_body = max_body
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Bind (port 0: a free one, then in `self.port`) and serve every path and method."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            app = web.Application(client_max_size=self._max_body)
            app.router.add_route("*", "/{tail:.*}", self._handler)
            runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._runner = runner

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"the {self.name} server did not start")
        if failure:
            raise RuntimeError(f"the {self.name} server failed to start") from failure[0]

    def stop(
        self, timeout_s: float = 5.0, before: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Run `before` on the server's loop (closing open websockets, say), stop serving,
        stop the loop and join the thread."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if loop.is_running():

            async def shutdown() -> None:
                if before is not None:
                    await before()
                if runner is not None:
                    await runner.cleanup()

            done = asyncio.run_coroutine_threadsafe(shutdown(), loop)
            with contextlib.suppress(Exception):
                done.result(timeout_s)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = self._runner = None
