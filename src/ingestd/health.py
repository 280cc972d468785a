"""The daemon's small HTTP face: /health, /metrics, and the CLI's way in while it runs.

Embedded Qdrant allows one process per storage folder, so while the daemon runs, `ingestd
search`, `status`, `retry` and `forget` are answered here rather than by opening the store.
Binds to 127.0.0.1 unless HEALTH_HOST says otherwise (the container sets 0.0.0.0).

An action that fails because a dependency is out (Voyage halted or unreachable, Qdrant down)
answers 503 with a JSON `error` saying which, rather than aiohttp's bare 500: the CLI prints
the message, and a client can tell "try later" from "bad request" (400). Messages are masked.
A dormant daemon answers an action with 503 and Retry-After while it wakes; the CLI waits.

This module is imported by the dormant daemon, which must stay small: the error types of
qdrant-client, httpx and the providers are imported only when an action fails.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ingestd.ledger import Ledger
from ingestd.logs import get_logger, mask
from ingestd.paths import DAEMON_FILE
from ingestd.settings import OpsSettings
from ingestd.system import network_namespace

log = get_logger("ingestd.health")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Unavailable(Exception):
    """Not now, soon: the daemon is starting, or waking from dormancy."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def announce(settings: OpsSettings, port: int) -> None:
    """Where the CLI finds the daemon: the bound port, and the published one for a CLI outside
    the daemon's network namespace (the host of its container)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "pid": os.getpid(),
        "host": settings.health_host,
        "port": port,
        "published_port": settings.health_published_port,
        "netns": network_namespace(),
    }
    (settings.state_dir / DAEMON_FILE).write_text(json.dumps(info))


def hand_over(server: HealthServer, ledger: Ledger) -> None:
    """Before a re-exec: the next image keeps the state lock, and a port the OS chose
    (HEALTH_PORT=0), which clients already know."""
    ledger.hand_off_lock()
    if server.port == 0:
        os.environ["HEALTH_PORT"] = str(server.bound_port)


def withdraw(state_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (state_dir / DAEMON_FILE).unlink()


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], Awaitable[dict[str, Any]]],
        metrics: Callable[[], bytes],
        actions: dict[str, Handler],
    ) -> None:
        self.host, self.port = host, port
        self._health, self._metrics, self._actions = health, metrics, actions
        self._runner: web.AppRunner | None = None
        self.bound_port = port

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/health", self._on_health)
        app.router.add_get("/metrics", self._on_metrics)
        app.router.add_post("/api/{action}", self._on_action)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.bound_port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_health(self, _: web.Request) -> web.Response:
        """200 when ok, 503 when degraded: what Docker's HEALTHCHECK and load balancers read."""
        try:
            body = await self._health()
        except Exception as exc:  # a broken report must still answer, and say why
            log.exception(
                "health.error", path="/health", error=f"{type(exc).__name__}: {exc}", outcome="degraded"
            )
            body = {"status": "degraded", "last_error": f"health report failed: {type(exc).__name__}: {exc}"}
        return web.json_response(body, status=200 if body.get("status") == "ok" else 503)

    async def _on_metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=self._metrics())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _on_action(self, request: web.Request) -> web.Response:
        handler = self._actions.get(request.match_info["action"])
        if handler is None:
            raise web.HTTPNotFound()
        try:
            params = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        action = request.match_info["action"]
        try:
            return web.json_response(await handler(params if isinstance(params, dict) else {}))
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": mask(str(exc))}, status=400)
        except Unavailable as exc:
            return _unavailable(action, str(exc), exc.retry_after)
        except Exception as exc:
            reason = _dependency_failure(exc)
            if reason is None:
                raise
            return _unavailable(action, reason)


def _dependency_failure(exc: Exception) -> str | None:
    """Which dependency an action's error blames, or None for a bug (aiohttp's 500)."""
    import sqlite3

    import httpx
    from qdrant_client.http.exceptions import ApiException

    from ingestd.errors import EmbeddingSignal, GaveUp

    if isinstance(exc, EmbeddingSignal | GaveUp):
        return f"embedding unavailable: {exc}"
    # What Qdrant's REST client raises when the server is down, slow or refuses (the store does
    # not use gRPC); embedded Qdrant fails with OSError or sqlite3 errors.
    if isinstance(exc, ApiException | httpx.HTTPError | OSError | TimeoutError | sqlite3.Error):
        return f"vector store unavailable: {type(exc).__name__}: {exc}"
    return None


def _unavailable(action: str, message: str, retry_after: float | None = None) -> web.Response:
    """503 with the reason, logged once per request; Retry-After when it is only a matter of time."""
    text = mask(message)[:500]
    level = log.warning if retry_after is None else log.info  # starting or waking is no fault
    level("api.unavailable", path=f"/api/{action}", error=text, outcome="503")
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
    return web.json_response({"error": text}, status=503, headers=headers)
