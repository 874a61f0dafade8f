"""`workhorse serve --ray ADDRESS|local`: the same server on Ray Serve, one deployment per model.

- **A deployment per model** (`model-NAME`): each replica is a whole workhorse server for that one
  model and the tasks that run on it. It answers through the same FastAPI app (routes, errors, API
  keys, the console, task micro-batching), with llama.cpp's threads set to the replica's CPUs.
  Each model's replicas scale on their own ongoing requests, between 1 and `ray_max_replicas`.
- **The ingress** (`workhorse`, no CPU of its own) takes each request from Ray Serve's HTTP proxy
  and hands it to the deployment of the model it needs (`serve_routing.route`); the answer streams
  back as the replica sends it, so streamed completions arrive token by token. Answers about the
  whole server are merged from every model's.
- **The metrics board** (`metrics`): every replica posts its Prometheus exposition there each
  second; `/metrics` answers with all of them, each sample labelled with its replica.

Replicas share the call log as processes on one machine share a SQLite file; on several
machines, put it in PostgreSQL (`call_log: postgresql://…`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from workhorse.scale.cluster import join_ray
from workhorse.scale.serve_routing import Route, ServerMap, merge, merge_metrics, route

log = logging.getLogger(__name__)
APP = "workhorse"  # the application, and its ingress deployment
METRICS_BOARD = "metrics"
TARGET_ONGOING_REQUESTS = 8  # per model replica: a replica batches this many requests' items well
INGRESS_TARGET_ONGOING = 256  # the ingress only relays
METRICS_EVERY_S = 1.0
METRICS_KEPT_S = 5 * METRICS_EVERY_S  # a replica silent for longer has gone (scaled down or dead)
# Scope keys an ASGI app reads; the rest of the proxy's scope (its app, state) does not travel.
PORTABLE_SCOPE = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "query_string", "headers",
                  "client", "server")


class MetricsBoard:
    """The newest exposition of each replica."""

    def __init__(self) -> None:
        self.posted: dict[str, tuple[float, str]] = {}

    def post(self, replica: str, exposition: str) -> None:
        self.posted[replica] = (time.monotonic(), exposition)

    def read(self) -> dict[str, str]:
        now = time.monotonic()
        self.posted = {replica: entry for replica, entry in self.posted.items() if now - entry[0] <= METRICS_KEPT_S}
        return {replica: exposition for replica, (_, exposition) in self.posted.items()}


class ModelReplica:
    """One server for one model: its state loaded in the replica's process, its app called as ASGI."""

    def __init__(self, settings_json: str, tasks: list[str], peer_tasks: list[str], board: Any) -> None:
        from workhorse.serve.app import create_app
        from workhorse.serve.settings import ServeSettings
        from workhorse.serve.state import ServerState

        settings = ServeSettings.model_validate_json(settings_json)
        self.state = ServerState(settings, tasks=tasks, peer_tasks=peer_tasks)
        self.state.load()
        self.app = create_app(settings, state=self.state)
        self.board = board
        self._posting: asyncio.Task | None = None  # started with the app, in the replica's loop

    async def _start(self) -> None:
        """Run the app's startup (the task-store watcher) and start posting metrics, once, in the
        replica's loop."""
        if self._posting is not None:
            return
        self._posting = asyncio.create_task(self._post_metrics())
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()

    async def check_health(self) -> None:
        await self._start()  # Ray Serve checks a new replica at once: its metrics are on the board before any request

    async def _post_metrics(self) -> None:
        from prometheus_client import generate_latest
        from ray import serve

        context = serve.get_replica_context()
        replica = f"{context.replica_id.deployment_id.name}#{context.replica_id.unique_id}"
        while True:
            with contextlib.suppress(Exception):  # a board being replaced: post again next time
                exposition = (await asyncio.to_thread(generate_latest, self.state.metrics.registry)).decode()
                await self.board.post.remote(replica, exposition)
            await asyncio.sleep(METRICS_EVERY_S)

    async def handle(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[Any]:
        """Answer one request: first {"status", "headers"}, then the body's chunks as the app sends them."""
        await self._start()
        messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: the app has returned
        gone = asyncio.Event()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def answer() -> None:
            try:
                await self.app(scope | {"root_path": ""}, receive, messages.put)
            finally:
                messages.put_nowait(None)

        app = asyncio.create_task(answer())
        try:
            while True:
                message = await messages.get()
                if message is None:  # the app ended without a message left to send
                    await app  # its exception, if it raised one
                    return
                if message["type"] == "http.response.start":
                    yield {"status": message["status"], "headers": message.get("headers", [])}
                elif message["type"] == "http.response.body":
                    if message.get("body"):
                        yield message["body"]
                    if not message.get("more_body", False):
                        return
        finally:
            gone.set()  # the client left (Ray cancels this generator) or the answer is complete
            if not app.done():
                app.cancel()
            elif not app.cancelled() and app.exception() is not None:  # answered 500 already; logged here
                log.error("request failed", exc_info=app.exception())


class Ingress:
    """Hands each request to its model's deployment and relays the answer."""

    def __init__(self, server_json: str, models: dict[str, Any], board: Any, max_body_bytes: int) -> None:
        self.server = ServerMap.from_json(server_json)
        self.models = models
        self.board = board
        self.max_body = max_body_bytes

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import StreamingResponse

        body = await self._body(request)
        scope = {key: request.scope[key] for key in PORTABLE_SCOPE if key in request.scope}
        chosen: Route = route(self.server, request.method, request.url.path, body)
        if chosen.answer is not None:
            return chosen.answer
        if chosen.merge is not None:
            return await self._merged(chosen.merge, scope, body)
        answer = self.models[chosen.model].options(stream=True).handle.remote(scope, body)
        start = await answer.__anext__()

        async def rest() -> AsyncIterator[bytes]:
            async for chunk in answer:
                yield chunk

        return StreamingResponse(rest(), status_code=start["status"], headers=_headers(start["headers"]))

    async def _body(self, request: Any) -> bytes:
        """The request's body, read no further than one byte past the limit: the replica's own
        check then answers 413, and a huge body is not held here."""
        chunks, size = [], 0
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body:
                break
        return b"".join(chunks)

    async def _merged(self, kind: str, scope: dict[str, Any], body: bytes) -> Any:
        """The request answered by every model's deployment (each checks the key and the Host),
        the answers merged; the first refusal is the answer when one refuses. For `/metrics` one
        deployment's checks do (every replica's exposition is on the board)."""
        from starlette.responses import JSONResponse, Response

        asked = list(self.models.values())[:1] if kind == "metrics" else self.models.values()
        answers = await asyncio.gather(*(self._whole(handle, scope, body) for handle in asked))
        for status, headers, content in answers:
            if status != 200:
                return Response(content, status_code=status, headers=headers)
        if kind == "metrics":
            exposition = merge_metrics(await self.board.read.remote())
            return Response(exposition, headers={"content-type": answers[0][1].get("content-type", "text/plain")})
        return JSONResponse(merge(kind, [json.loads(content) for _, _, content in answers]))

    async def _whole(self, handle: Any, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, str], bytes]:
        answer = handle.options(stream=True).handle.remote(scope, body)
        start = await answer.__anext__()
        return start["status"], _headers(start["headers"]), b"".join([chunk async for chunk in answer])


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """An ASGI header list as a dict, without the length (the relay recounts it)."""
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in raw if key.lower() != b"content-length"}


def deployment_name(model: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9._-]", "_", model)


def application(settings: Any, *, max_replicas: int, cpus_per_replica: float) -> Any:
    """The Ray Serve application: a deployment per model, the ingress in front, the metrics board."""
    from pydantic import SecretStr
    from ray import serve

    from workhorse.models import resolve
    from workhorse.serve.state import default_embedding_model, place_tasks

    references = {resolve(reference).name: reference for reference in settings.models}
    models = list(references)
    placed = place_tasks(settings, models)
    server = ServerMap(models, {task.spec.name: task.model for task in placed}, default_embedding_model(settings, models))
    # One console secret for every replica: a session signed by one is good on all of them.
    shared = settings.model_copy(update={
        "threads": max(1, int(cpus_per_replica)),  # Ray sets OMP_NUM_THREADS=1 in workers: say it
        "console_secret": settings.console_secret or SecretStr(secrets.token_urlsafe(32)),
    })
    board = serve.deployment(MetricsBoard, name=METRICS_BOARD, ray_actor_options={"num_cpus": 0}).bind()
    deployments = {}
    for name, reference in references.items():
        tasks = [task.reference for task in placed if task.model == name]
        peers = [task.reference for task in placed if task.model != name]
        only = shared.model_copy(update={"models": [reference], "embedding_model": None})
        replica = serve.deployment(
            ModelReplica,
            name=deployment_name(name),
            ray_actor_options={"num_cpus": cpus_per_replica},
            autoscaling_config={"min_replicas": 1, "initial_replicas": 1, "max_replicas": max_replicas,
                                "target_ongoing_requests": TARGET_ONGOING_REQUESTS},
            max_ongoing_requests=max(settings.queue_limit, TARGET_ONGOING_REQUESTS),
        )
        deployments[name] = replica.bind(_settings_json(only), tasks, peers, board)
    ingress = serve.deployment(
        Ingress, name=APP, ray_actor_options={"num_cpus": 0},
        autoscaling_config={"min_replicas": 1, "initial_replicas": 1, "max_replicas": max_replicas,
                            "target_ongoing_requests": INGRESS_TARGET_ONGOING},
        max_ongoing_requests=4 * INGRESS_TARGET_ONGOING,
    )
    return ingress.bind(server.to_json(), deployments, board, settings.max_body_bytes)


def _settings_json(settings: Any) -> str:
    """The settings as JSON for the replicas, secrets written out (pydantic masks them)."""
    values = json.loads(settings.model_dump_json())
    values["api_keys"] = [key.get_secret_value() for key in settings.api_keys]
    values["console_secret"] = settings.console_secret.get_secret_value()
    return json.dumps(values)


def run(settings: Any, address: str, *, max_replicas: int, cpus_per_replica: float, blocking: bool = True) -> None:
    """Start (or join) Ray, start Ray Serve's proxy on the settings' host and port, deploy; with
    `blocking`, serve until interrupted (Ctrl+C shuts the replicas down)."""
    from ray import serve

    join_ray(address, len(settings.models) * max_replicas * cpus_per_replica)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(application(settings, max_replicas=max_replicas, cpus_per_replica=cpus_per_replica),
              name=APP, route_prefix="/", blocking=False)
    log.info("serving on Ray Serve at http://%s:%d: %d models, each up to %d replicas of %g CPUs", settings.host,
             settings.port, len(settings.models), max_replicas, cpus_per_replica)
    if not blocking:
        return
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
