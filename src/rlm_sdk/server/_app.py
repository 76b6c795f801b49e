"""The Starlette app: the page, its small JSON/SSE API, and the ``/v1`` endpoint.

Routes (every error is OpenAI's ``{"error": {...}}`` shape):

=======  ==============================  ================================================
GET      /                               the page
GET      /static/...                     its CSS and JS (served from the package)
GET      /api/config                     models offered, defaults, limits, offline flag
POST     /api/runs?query=&model=&...     start a run; the raw body is the context
GET      /api/runs/{id}                  a run's status and answer
GET      /api/runs/{id}/events           its events as SSE: the backlog, then live; ``end``
POST     /api/runs/{id}/stop             cancel it (and its REPL workers)
POST     /api/runs/{id}/follow-up?query= a follow-up question in the run's session: a new run
POST     /api/trajectories               open a saved JSONL trajectory (raw body)
GET      /api/demo/haystack?lines=N      a needle-in-a-haystack context for the demo
GET      /v1/models                      the ``rlm:`` model names
POST     /v1/chat/completions            a run as a chat completion (see :mod:`._openai`)
=======  ==============================  ================================================

Contexts and trajectories arrive as the raw request body (no multipart parser needed, no
size limit but the server's), options in the URL.
"""

from __future__ import annotations

import importlib.resources
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rlm_sdk import ConfigurationError, Event, RLMResult, load_events
from rlm_sdk._frontend import get_logger
from rlm_sdk.providers import ModelRouter, Provider
from rlm_sdk.repl import ForkServer
from rlm_sdk.testing import NIAH_QUERY, make_haystack

from ._config import MAX_RUNS_KEPT, ServerConfig
from ._http import (
    ApiError,
    EventStream,
    GuardMiddleware,
    TraceParentMiddleware,
    WriteText,
    read_body,
    sse,
    sse_json,
)
from ._jobs import RunOptions, make_job, make_rlm, parse_options
from ._openai import chat_completions, list_models
from ._runs import EventSink, Job, RunRegistry, ServerRun
from ._sessions import SessionPool

__all__ = ["build_app"]

_PACKAGE = "rlm_sdk.server"
_DEMO_MAX_LINES = 2_000_000


class _Handlers:
    """The routes' endpoints, bound to one app's config and run registry."""

    def __init__(
        self,
        config: ServerConfig,
        runs: RunRegistry,
        forkserver: ForkServer,
        provider: Provider,
        on_event: EventSink | None = None,
        sessions: SessionPool | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.runs = runs
        self.forkserver = forkserver
        self.provider = provider
        self.on_event = on_event
        self.index_html = (
            importlib.resources.files(_PACKAGE).joinpath("static", "index.html").read_text("utf-8")
        )

    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.index_html, headers={"cache-control": "no-cache"})

    async def get_config(self, request: Request) -> Response:
        return JSONResponse({**self.config.public(), "demo_query": NIAH_QUERY})

    def _run(self, request: Request) -> ServerRun:
        run_id = request.path_params["run_id"]
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(
                404, f"no run {run_id!r} (runs are kept in memory only)", code="run_not_found"
            )
        return run

    async def start_run(self, request: Request) -> Response:
        q = request.query_params
        options = parse_options(
            self.config,
            model=q.get("model") or None,
            sub_model=q.get("sub_model") or None,
            max_iterations=q.get("max_iterations"),
            max_depth=q.get("max_depth"),
        )
        context = (await read_body(request, self.config.max_body_bytes)).decode("utf-8", "replace")
        if self.sessions is not None and self.config.max_sessions > 0:
            # A page run is a session's first query, so that it can take a follow-up.
            sid = "page-" + uuid.uuid4().hex
            run = self.runs.start(self._session_job(sid, options, context, q.get("query", "")))
            run.session = sid
        else:
            job = make_job(
                self.config,
                options,
                context,
                q.get("query", ""),
                self.forkserver,
                self.provider,
                self.on_event,
            )
            run = self.runs.start(job)
        return JSONResponse(
            {"id": run.id, "events_url": f"/api/runs/{run.id}/events", "options": vars(options)},
            status_code=201,
        )

    def _session_job(self, sid: str, options: RunOptions, context: str | None, query: str) -> Job:
        sessions = self.sessions
        assert sessions is not None

        async def job(sink: EventSink) -> RLMResult:
            return await sessions.ask(
                sid,
                options,
                lambda: make_rlm(
                    self.config, options, self.forkserver, self.provider, self.on_event
                ),
                context,
                query or None,
                on_event=sink,
                resume=context is None,
            )

        return job

    async def follow_up(self, request: Request) -> Response:
        """A follow-up question in a finished run's session: a new run, followed like any."""
        earlier = self._run(request)
        query = request.query_params.get("query", "").strip()
        if not query:
            raise ApiError(400, "a follow-up needs a query", param="query")
        sid = earlier.session
        options = None if sid is None or self.sessions is None else self.sessions.options(sid)
        if sid is None or options is None:
            raise ApiError(
                409,
                "this run's session has closed (it was idle, or made room for others); "
                "start a new run",
                code="session_closed",
            )
        run = self.runs.start(self._session_job(sid, options, None, query))
        run.session = sid
        return JSONResponse(
            {"id": run.id, "events_url": f"/api/runs/{run.id}/events"}, status_code=201
        )

    async def get_run(self, request: Request) -> Response:
        return JSONResponse(self._run(request).summary())

    async def stop_run(self, request: Request) -> Response:
        run = self._run(request)
        self.runs.stop(run.id)
        return JSONResponse(run.summary())

    async def events(self, request: Request) -> Response:
        run = self._run(request)
        last = request.headers.get("last-event-id", "")
        start = int(last) + 1 if last.isdigit() else 0

        async def produce(write: WriteText) -> None:
            async with aclosing(run.follow(start)) as events:
                async for index, line in events:
                    await write(sse(line, id=index))
            await write(sse_json(run.summary(), event="end"))

        return EventStream(produce)

    async def open_trajectory(self, request: Request) -> Response:
        body = await read_body(request, self.config.max_body_bytes)
        name = request.query_params.get("name") or "the file"
        events = await anyio.to_thread.run_sync(_load_trajectory, body, name)
        if not events:
            raise ApiError(400, f"{name} holds no events", code="invalid_trajectory")
        run = self.runs.add_saved(events)
        roots = sum(1 for e in events if e.type == "run_started" and e.parent_run_id is None)
        return JSONResponse(
            {
                "id": run.id,
                "events_url": f"/api/runs/{run.id}/events",
                "events": len(events),
                "runs": roots,
            },
            status_code=201,
        )

    async def demo_haystack(self, request: Request) -> Response:
        raw = request.query_params.get("lines", "100000")
        if not raw.isdigit() or not 1 <= int(raw) <= _DEMO_MAX_LINES:
            raise ApiError(
                400, f"lines must be a whole number from 1 to {_DEMO_MAX_LINES:,}", param="lines"
            )
        text, _number = await anyio.to_thread.run_sync(lambda: make_haystack(int(raw)))
        return PlainTextResponse(text, headers={"cache-control": "no-store"})

    async def v1_models(self, request: Request) -> Response:
        return list_models(self.config)

    async def v1_chat(self, request: Request) -> Response:
        return await chat_completions(
            request, self.config, self.forkserver, self.provider, self.on_event, self.sessions
        )


def _load_trajectory(body: bytes, name: str) -> list[Event]:
    """Validate a JSONL trajectory with the recorder's own loader (it reads files)."""
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        try:
            return list(load_events(path))
        except (ConfigurationError, UnicodeDecodeError) as err:
            message = str(err).replace(path, name)
            raise ApiError(400, message, code="invalid_trajectory") from err
    finally:
        Path(path).unlink(missing_ok=True)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return ApiError(
        exc.status_code,
        f"{exc.detail}: {request.method} {request.url.path}",
        code="not_found" if exc.status_code == 404 else None,
    ).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    get_logger().error("rlm.server.internal_error", path=request.url.path, error=repr(exc))
    return ApiError(500, f"internal error: {type(exc).__name__}", type="server_error").response()


def build_app(config: ServerConfig) -> Starlette:
    """The app for ``config``; see :func:`rlm_sdk.server.create_app`."""
    runs = RunRegistry(MAX_RUNS_KEPT)
    forkserver = ForkServer()
    # Every run shares the app's providers: one set of connections, one bound on requests
    # in flight per provider, whatever the number of runs.
    shared = ModelRouter()
    middleware = [Middleware(GuardMiddleware, allowed_hosts=config.allowed_hosts)]
    tracer: EventSink | None = None
    if config.otel:
        from rlm_sdk.otel import OTelTracer  # the `otel` extra, only when tracing is on

        tracer = OTelTracer()
        middleware.append(Middleware(TraceParentMiddleware))
    sessions = SessionPool(config.max_sessions, config.session_idle_timeout)
    h = _Handlers(config, runs, forkserver, config.provider or shared, tracer, sessions)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with forkserver, runs.running(), sessions.running():
                yield
        finally:
            await shared.aclose()

    routes = [
        Route("/", h.index),
        Route("/api/config", h.get_config),
        Route("/api/runs", h.start_run, methods=["POST"]),
        Route("/api/runs/{run_id}", h.get_run),
        Route("/api/runs/{run_id}/events", h.events),
        Route("/api/runs/{run_id}/stop", h.stop_run, methods=["POST"]),
        Route("/api/runs/{run_id}/follow-up", h.follow_up, methods=["POST"]),
        Route("/api/trajectories", h.open_trajectory, methods=["POST"]),
        Route("/api/demo/haystack", h.demo_haystack),
        Route("/v1/models", h.v1_models),
        Route("/v1/chat/completions", h.v1_chat, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[(_PACKAGE, "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.runs = runs
    app.state.sessions = sessions
    return app
