"""The ASGI application: ``uvicorn webhooks.app:app``. Stateless, so run as many as you like."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webhooks import analysis, api, control, endpoints, events, exports, health, receiver, ui, users
from webhooks.ingest import Enqueuer, InboxWriter, PostgresInboxWriter, postgres_conninfo
from webhooks.request_ids import RequestIds
from worker import tracing
from worker.db import make_engine, make_sessionmaker
from worker.inbox import wakeups
from worker.logging import configure_logging
from worker.metrics import DatabaseGauges
from worker.policies.config import book_for
from worker.privacy.modes import store_redactor
from worker.sealing import Sealer
from worker.sessions import templates
from worker.settings import Settings, get_settings, require_production
from worker.tasks import enqueue_drain

Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(path: str, **handlers: Endpoint) -> Route:
    """One route per path, whatever its methods: a 405 then names every method the path serves
    (Starlette answers it from the first route whose path matches)."""
    if "GET" in handlers:
        handlers.setdefault("HEAD", handlers["GET"])

    async def dispatch(request: Request) -> Response:
        return await handlers[request.method](request)

    return Route(path, dispatch, methods=list(handlers))


ROUTES = [
    Route("/callbacks/zego", receiver.zego_callback, methods=["POST"]),
    Route("/callbacks/zego-rtc", receiver.zego_rtc_callback, methods=["POST"]),
    Route("/healthz", health.healthz),
    Route("/readyz", health.readyz),
    Route("/metrics", health.metrics),
    Route("/openapi.json", health.openapi),
    by_method("/v1/sessions", GET=api.list_sessions, POST=api.create_session),
    by_method(
        "/v1/sessions/{session_id}",
        GET=api.get_session,
        DELETE=api.delete_session,
        PATCH=control.update_session,
    ),
    Route("/v1/sessions/{session_id}/say", control.say, methods=["POST"]),
    Route("/v1/sessions/{session_id}/interrupt", control.interrupt, methods=["POST"]),
    Route("/v1/sessions/{session_id}/messages", control.message, methods=["POST"]),
    Route("/v1/sessions/{session_id}/context", control.context),
    Route("/v1/sessions/{session_id}/transcript", api.get_transcript),
    Route("/v1/sessions/{session_id}/events", events.session_events),
    Route("/v1/sessions/{session_id}/actions", api.session_actions),
    Route("/v1/sessions/{session_id}/why", api.session_why),
    Route("/v1/sessions/{session_id}/policy", api.session_policy),
    Route("/v1/sessions/{session_id}/policy/run", api.run_policy, methods=["POST"]),
    Route("/v1/actions", api.list_actions),
    Route("/v1/search", analysis.search),
    Route("/v1/stats", analysis.stats),
    Route("/v1/exports/{kind}.{format}", exports.export),
    Route("/v1/events", events.all_events),
    by_method("/v1/endpoints", GET=endpoints.list_endpoints, POST=endpoints.create_endpoint),
    by_method(
        "/v1/endpoints/{endpoint_id}",
        GET=endpoints.get_endpoint,
        PATCH=endpoints.update_endpoint,
        DELETE=endpoints.delete_endpoint,
    ),
    Route("/v1/endpoints/{endpoint_id}/rotate-secret", endpoints.rotate_secret, methods=["POST"]),
    Route("/v1/endpoints/{endpoint_id}/test", endpoints.test_endpoint, methods=["POST"]),
    Route("/v1/endpoints/{endpoint_id}/deliveries", endpoints.list_deliveries),
    Route("/v1/endpoints/{endpoint_id}/deliveries/{delivery_id}", endpoints.get_delivery),
    Route("/v1/endpoints/{endpoint_id}/replay", endpoints.replay, methods=["POST"]),
    Route("/v1/users/{user_id}", users.erase_user, methods=["DELETE"]),
    *ui.routes(),
]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        configure_logging(settings)
        require_production(settings, serves_api=True)
        engine = make_engine(settings.database_url)
        enqueuer = Enqueuer(enqueue_drain, marks=wakeups.for_settings(settings))
        writer = _inbox_writer(settings, engine, enqueuer)
        _load_state(app, settings)
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.gauges = DatabaseGauges(app.state.sessions, app.state.policies)
        app.state.writer = writer
        app.state.body_deadlines = receiver.BodyDeadlines(settings.body_timeout_seconds)
        postgres = engine.dialect.name == "postgresql"
        app.state.waker = events.Waker(postgres_conninfo(settings.database_url) if postgres else None)
        enqueuer.start()
        writer.start()
        app.state.body_deadlines.start()
        # Everything imported so far (Celery, SQLAlchemy, kombu...) lives as long as the process;
        # moving it out of the collector's sight keeps full collections from pausing requests.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.waker.close()
            await app.state.body_deadlines.close()
            await writer.stop()
            enqueuer.stop()
            engine.dispose()

    middleware = [Middleware(RequestIds), Middleware(receiver.CallbackRoute)]
    app = Starlette(routes=ROUTES, lifespan=lifespan, middleware=middleware)
    if tracing.configure("web"):  # only with OTEL_EXPORTER_OTLP_ENDPOINT (worker/tracing.py)
        tracing.instrument_app(app)
    return app


def _inbox_writer(
    settings: Settings, engine: Engine, enqueuer: Enqueuer
) -> InboxWriter | PostgresInboxWriter:
    """Postgres: psycopg's async connections in the event loop; SQLite: one writer thread, as
    SQLite has one writer at a time anyway."""
    if engine.dialect.name == "postgresql":
        return PostgresInboxWriter(
            postgres_conninfo(settings.database_url),
            writers=settings.ingest_writers,
            batch_max=settings.ingest_batch_max,
            timeout=settings.ingest_timeout_seconds,
            on_stored=enqueuer.mark,
        )
    return InboxWriter(
        engine,
        writers=1,
        batch_max=settings.ingest_batch_max,
        timeout=settings.ingest_timeout_seconds,
        on_stored=enqueuer.mark,
    )


def _load_state(app: Starlette, settings: Settings) -> None:
    """What requests read, loaded at start-up: a mistake in a file stops the start, not a request."""
    app.state.settings = settings
    app.state.templates = templates.load(settings.templates_file)
    # A PolicyError names the file and the key; every app/template combination is checked.
    app.state.policies = book_for(settings.policies_file)
    key = settings.secret_key
    app.state.sealer = Sealer(key.get_secret_value()) if key is not None else None
    app.state.callback_secrets = _callback_secrets(settings)
    # None unless some app stores redacted text: the receiver's hot path checks only that.
    app.state.store_redactor = store_redactor(settings)


def _callback_secrets(settings: Settings) -> dict[int, str]:
    secrets = {app_id: app.callback_secret.get_secret_value() for app_id, app in settings.zego_apps.items()}
    if settings.zego_app_id is not None and settings.zego_callback_secret is not None:
        secrets.setdefault(settings.zego_app_id, settings.zego_callback_secret.get_secret_value())
    return secrets


app = create_app()
