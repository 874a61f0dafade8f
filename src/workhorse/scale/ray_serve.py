"""`workhorse serve --ray ADDRESS|local`: the same server as replicas on Ray Serve.

Each replica is a whole workhorse server: it loads the settings' models and tasks and answers
through the same FastAPI app (routes, errors, `/metrics`, the console, task micro-batching), with
llama.cpp's threads set to the replica's CPUs. Ray Serve's HTTP proxy takes the requests and hands
each to a replica, adding replicas while the ongoing requests per replica stay above the target
and removing them when idle (`ray_max_replicas`). A replica answers a request whole: a streamed
completion arrives in one piece.

Replicas share the call log as processes on one machine share a SQLite file; on several
machines, put it in PostgreSQL (`call_log: postgresql://…`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from workhorse.scale.cluster import join_ray

log = logging.getLogger(__name__)
DEPLOYMENT = "workhorse"
TARGET_ONGOING_REQUESTS = 8  # per replica: a replica batches this many requests' items well


class WorkhorseReplica:
    """One server: its state loaded in the replica's process, its app called as ASGI."""

    def __init__(self, settings_json: str) -> None:
        from workhorse.serve.app import create_app
        from workhorse.serve.settings import ServeSettings
        from workhorse.serve.state import ServerState

        settings = ServeSettings.model_validate_json(settings_json)
        self.state = ServerState(settings)
        self.state.load()
        self.app = create_app(settings, state=self.state)
        self._started = False

    async def _start(self) -> None:
        """Run the app's startup (the task-store watcher, the app's state) once, in the replica's loop."""
        if not self._started:
            self._lifespan = self.app.router.lifespan_context(self.app)
            await self._lifespan.__aenter__()
            self._started = True

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import Response

        await self._start()
        body = await request.body()
        scope = dict(request.scope)
        scope["root_path"] = ""  # the proxy's route prefix is "/": paths are the server's own
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client's disconnect is not relayed: wait like an open connection
            return {"type": "http.disconnect"}

        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in start.get("headers", [])
                   if key.lower() != b"content-length"}
        return Response(b"".join(chunks), status_code=start.get("status", 500), headers=headers)


def deployment(settings: Any, *, max_replicas: int, cpus_per_replica: float) -> Any:
    """The Ray Serve application: WorkhorseReplica behind the proxy, autoscaled on ongoing requests."""
    from ray import serve

    replica = serve.deployment(
        WorkhorseReplica,
        name=DEPLOYMENT,
        ray_actor_options={"num_cpus": cpus_per_replica},
        autoscaling_config={"min_replicas": 1, "initial_replicas": 1, "max_replicas": max_replicas,
                            "target_ongoing_requests": TARGET_ONGOING_REQUESTS},
        max_ongoing_requests=max(settings.queue_limit, TARGET_ONGOING_REQUESTS),
    )
    # The replicas' llama.cpp threads: their share of CPUs (Ray sets OMP_NUM_THREADS=1 in workers).
    threads = max(1, int(cpus_per_replica))
    chosen = settings.model_copy(update={"threads": threads})
    return replica.bind(_settings_json(chosen))


def _settings_json(settings: Any) -> str:
    """The settings as JSON for the replicas, API keys written out (pydantic masks secrets)."""
    import json

    values = json.loads(settings.model_dump_json())
    values["api_keys"] = [key.get_secret_value() for key in settings.api_keys]
    return json.dumps(values)


def run(settings: Any, address: str, *, max_replicas: int, cpus_per_replica: float, blocking: bool = True) -> None:
    """Start (or join) Ray, start Ray Serve's proxy on the settings' host and port, deploy; with
    `blocking`, serve until interrupted (Ctrl+C shuts the replicas down)."""
    import time

    from ray import serve

    join_ray(address, max_replicas * cpus_per_replica)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(deployment(settings, max_replicas=max_replicas, cpus_per_replica=cpus_per_replica),
              name=DEPLOYMENT, route_prefix="/", blocking=False)
    log.info("serving on Ray Serve at http://%s:%d (up to %d replicas of %g CPUs)", settings.host, settings.port,
             max_replicas, cpus_per_replica)
    if not blocking:
        return
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
