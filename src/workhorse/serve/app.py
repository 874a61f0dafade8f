"""The app factory: `create_app(settings)` builds the FastAPI app; models load in its lifespan.

    uvicorn.run(create_app(load_settings()), host=..., port=...)   # what `workhorse serve` does
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workhorse import __version__
from workhorse.serve import call_routes, openai_routes, task_routes
from workhorse.serve.errors import error_body, install_error_handlers
from workhorse.serve.metrics import Metrics
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc")
CONSOLE = "/ui"  # signs its visitors in with a key of its own and a session cookie (console/access.py)
# A client still sending a refused body does not read the answer until it has sent it all: bodies
# up to this size are read and dropped so that it sees its 413; larger ones end the connection.
DRAIN_BYTES = 16 * 1024 * 1024
CLOSE = {"Connection": "close"}


def create_app(settings: ServeSettings, *, state: ServerState | None = None) -> FastAPI:
    """`state`: an already loaded ServerState (tests share one between apps); otherwise the
    lifespan loads the models named in `settings` and closes them on shutdown."""
    served = state or ServerState(settings)
    metrics = served.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.workhorse = served
        if state is None:  # otherwise loaded and closed by its owner
            await asyncio.to_thread(served.load)
        interval = settings.task_reload_s
        watcher = asyncio.create_task(served.watch_task_store(interval)) if interval > 0 else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
        if state is None:
            await served.close()

    app = FastAPI(
        title="workhorse",
        version=__version__,
        description="Small models doing line work: OpenAI-compatible generation, embeddings and task endpoints.",
        lifespan=lifespan,
    )
    app.state.started_at = time.time()
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(openai_routes.router)
    app.include_router(task_routes.router)
    app.include_router(call_routes.router)
    if settings.console:
        from workhorse.serve.console import routes as console

        console.install(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "Loading or shutting down"}})
    async def readyz(request: Request) -> Response:
        """Models are loaded and requests are accepted."""
        served = getattr(request.app.state, "workhorse", None)
        if served is None or not served.ready:
            return JSONResponse({"status": "not ready"}, 503)
        return JSONResponse({"status": "ready", "models": list(served.models), "tasks": list(served.tasks)})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        data = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    default_openapi = app.openapi

    def openapi_of_this_server() -> dict[str, Any]:
        """The spec names this server's models and tasks, so clients (and fuzzers) see the valid
        values; it is kept only once they are loaded (asked for earlier, it is built anew)."""
        if app.openapi_schema is not None:  # only the named spec is ever kept
            return app.openapi_schema
        spec = copy.deepcopy(default_openapi())
        app.openapi_schema = None  # FastAPI's builder keeps what it built: not before the names are known
        if not served.ready:
            return spec
        app.openapi_schema = _with_served_names(spec, list(served.models), list(served.tasks))
        return app.openapi_schema

    app.openapi = openapi_of_this_server  # type: ignore[method-assign]

    app.add_middleware(_Guard, settings=settings, metrics=metrics)
    if settings.cors_origins:  # outermost: it answers preflights (which carry no key) and labels refusals
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"])
    return app


def _with_served_names(spec: dict[str, Any], models: list[str], tasks: list[str]) -> dict[str, Any]:
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("ChatRequest", "CompletionRequest", "EmbeddingRequest"):
        model_field = schemas.get(name, {}).get("properties", {}).get("model")
        if model_field is not None and models:
            model_field["enum"] = models
    for path, item in spec.get("paths", {}).items():
        if path.startswith("/v1/tasks/{name}"):
            for operation in item.values():
                for parameter in operation.get("parameters", []):
                    if parameter.get("name") == "name" and tasks:
                        parameter["schema"]["enum"] = tasks
    return spec


class _Guard:
    """Pure ASGI middleware (response streams pass through untouched): bearer keys, the body size
    limit (413, also for chunked bodies without Content-Length), and request counting."""

    def __init__(self, app: ASGIApp, *, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.keys = settings.api_key_values()
        self.hosts = settings.host_names()
        self.max_body = settings.max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = _route_label(path)
        status_seen: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
            await send(message)

        try:
            if self.hosts is not None and _host_name(scope) not in self.hosts:
                await _reply(counting_send, 421, f"this server does not answer to the host {_host_name(scope)!r}: "
                             "address it by a loopback name, or list the name in allowed_hosts")
                return
            if self.keys and not path.startswith(OPEN_PATHS) and not _console(path) and not self._authorised(scope):
                await _reply(counting_send, 401, "missing or wrong API key: send Authorization: Bearer <key>",
                             {"WWW-Authenticate": "Bearer"})
                return
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                drained = int(declared) <= DRAIN_BYTES and await _drain(receive, DRAIN_BYTES)
                await _reply(counting_send, 413, f"request body of {int(declared)} bytes exceeds the limit of {self.max_body}",
                             None if drained else CLOSE)
                return
            body, complete = await self._read_body(receive)
            if body is None:
                # The chunk that passed the limit may have been the last one: then there is nothing to drain.
                drained = complete or await _drain(receive, DRAIN_BYTES)
                await _reply(counting_send, 413, f"request body exceeds the limit of {self.max_body} bytes",
                             None if drained else CLOSE)
                return
            await self.app(scope, _replay(body, receive), counting_send)
        finally:
            self.metrics.requests.labels(route, str(status_seen[0] if status_seen else 0)).inc()

    def _authorised(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        # Compare against every key in constant time (no early exit on the first match).
        return any([hmac.compare_digest(token.strip(), key) for key in self.keys])

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, bool]:
        """(the whole request body, or None past the limit; whether the client has sent all of it)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), True
            chunk = message.get("body", b"")
            size += len(chunk)
            complete = not message.get("more_body", False)
            if size > self.max_body:
                return None, complete
            chunks.append(chunk)
            if complete:
                return b"".join(chunks), True


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and drop the rest of a request body; False when it is longer than `budget`."""
    read = 0
    while read <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return False
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


def _console(path: str) -> bool:
    return path == CONSOLE or path.startswith(CONSOLE + "/")


def _host_name(scope: Scope) -> str:
    """The request's Host header without its port ("[::1]:8080" → "::1")."""
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the buffered body to the app, then pass on what follows (the disconnect)."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


def _route_label(path: str) -> str:
    """A bounded label set for metrics: task names are not labels here (they are in latency)."""
    if path.startswith("/v1/tasks/"):
        return "/v1/tasks/{name}"
    if _console(path):
        return CONSOLE
    return path if path.startswith(("/v1/", "/healthz", "/readyz", "/metrics")) else "other"


async def _reply(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    import json

    body = json.dumps(error_body(status, message)).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
