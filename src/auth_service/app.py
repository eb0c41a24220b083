"""``create_app``: the FastAPI application. The lifespan builds and starts one ``Container``."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from fastapi import FastAPI

from auth_service import __version__
from auth_service.access_log import AccessLog, access_log_enabled
from auth_service.api.browser import BrowserMode
from auth_service.api.cors import AllowListCORSMiddleware
from auth_service.api.docs import DOCS_PATH, OPENAPI_PATH, install_docs
from auth_service.api.errors import install_error_handlers
from auth_service.api.fast_lane import FastLane, ServiceApp
from auth_service.api.middleware import RequestContextMiddleware, SecurityHeaders
from auth_service.api.openapi import install_openapi
from auth_service.api.routes import (
    account,
    admin,
    admin_audit,
    admin_clients,
    admin_invitations,
    admin_users,
    admin_webhooks,
    auth,
    events,
    health,
    metrics,
    oauth,
    validate,
    verification,
    wellknown,
)
from auth_service.api.schemas.common import error_responses
from auth_service.api.shedding import LoadSheddingMiddleware
from auth_service.api.shutdown import on_exit_signal
from auth_service.container import Container, running, serving
from auth_service.metrics import RequestRecorder
from auth_service.runtime_probes import runtime_probes, settle_heap
from auth_service.settings import Settings

# FastAPI's native OpenTelemetry bridge asks the global providers on every request (and
# would record exception messages and stack traces as OTel logs): the service does not
# export OpenTelemetry, so it is off. (An older FastAPI has no such parameter.)
_NO_OPENTELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def _nothing() -> None:
    return None


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> FastAPI:
    """Build the app. Pass ``container`` to inject parts (tests); otherwise it is built at start."""
    if settings is None:
        settings = container.settings if container is not None else Settings()
    resolved_settings = settings
    access_log = (
        AccessLog(json_lines=settings.log_format == "json")
        if access_log_enabled(settings.access_log)
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        parts = (
            serving(container)  # injected (tests): still started and stopped here
            if container is not None
            else running(resolved_settings, serve=True)
        )
        probes: AbstractAsyncContextManager[None] = (
            runtime_probes() if resolved_settings.metrics_enabled else nullcontext()
        )
        async with parts as started, probes:
            app.state.container = started
            app.state.browser = BrowserMode(started.settings)
            feed = started.feed
            if container is None:  # served: what lives as long as the process leaves the GC
                settle_heap()
            try:
                with on_exit_signal(feed.shut_down if feed is not None else _nothing):
                    yield
            finally:
                if access_log is not None:
                    access_log.flush()

    app = ServiceApp(
        title="auth-service",
        version=__version__,
        summary="The single source of truth for JWTs: keys, login, refresh and validation.",
        lifespan=lifespan,
        responses=error_responses(404, 405, 413, 500, 503),  # any route can answer these
        openapi_url=OPENAPI_PATH if settings.docs_served else None,
        docs_url=None,  # ours, with its own Content-Security-Policy (api/docs.py)
        redoc_url=None,
        **_NO_OPENTELEMETRY,
    )
    app.state.access_log = access_log
    install_error_handlers(app)
    install_openapi(app)
    policies = {DOCS_PATH: install_docs(app)} if settings.docs_served else {}
    security = SecurityHeaders(hsts=settings.environment == "production", policies=policies)
    # Outermost last: request id, security headers and the size cap see every answer.
    app.add_middleware(LoadSheddingMiddleware)
    if settings.cors_origins:
        app.add_middleware(AllowListCORSMiddleware, settings=settings)
    recorder = RequestRecorder() if settings.metrics_enabled else None
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_request_bytes,
        security=security,
        trusted_proxies=frozenset(settings.trusted_proxies),
        recorder=recorder,
        access_log=access_log,
    )
    # The hot paths, at the front door: POST /validate(/batch) and /auth/refresh past all of
    # the above, which the lane does itself (api/fast_lane.py).
    app.fast_lane = FastLane(
        [*validate.hot_routes(), *auth.hot_routes()],
        max_body_bytes=settings.max_request_bytes,
        security=security,
        trusted_proxies=frozenset(settings.trusted_proxies),
        recorder=recorder,
        access_log=access_log,
        cors=bool(settings.cors_origins),
    )
    # Routes are matched in order: the hot path (every backend call) first.
    app.include_router(validate.router)
    app.include_router(events.router)
    app.include_router(oauth.router)
    app.include_router(auth.router)
    app.include_router(account.router)
    app.include_router(verification.router)
    app.include_router(wellknown.router)
    app.include_router(health.router)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    app.include_router(admin.router)
    app.include_router(admin_clients.router)
    app.include_router(admin_users.router)
    app.include_router(admin_audit.router)
    app.include_router(admin_webhooks.router)
    app.include_router(admin_invitations.router)
    return app
