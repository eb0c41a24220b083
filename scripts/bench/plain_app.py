"""Apps for `make bench` only: the ceiling, and the service without its security headers.

``bare_ping``: a bare FastAPI app, ``GET /ping`` answering ``{"ok": true}``, no middleware,
run by uvicorn without an access log: what one worker on this core can answer at all, the
ceiling issue 17's targets are ratios of. ``without_security_headers``: (m) runs (b) against it
beside the real app, in the same rounds, so that the headers' cost on /validate is a measured
ratio. Nothing here is used outside the benchmark.
"""

from __future__ import annotations

from fastapi import FastAPI

from auth_service.api import fast_lane, middleware
from auth_service.app import create_app


def bare_ping() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


def without_security_headers() -> FastAPI:
    def request_id_only(
        headers: list[tuple[bytes, bytes]], fixed: tuple[tuple[bytes, bytes], ...]
    ) -> list[tuple[bytes, bytes]]:
        return [*headers, fixed[0]]  # the X-Request-ID header, as before the issue

    middleware.with_security_headers = request_id_only
    fast_lane.with_security_headers = request_id_only  # the hot path's lane adds them itself
    return create_app()
