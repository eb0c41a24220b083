"""The app with the security headers taken out, for `make bench` scenario (m) only.

(m) runs (b) against this app beside the real one, in the same rounds, so that the headers'
cost on /validate is a measured ratio. Nothing here is used outside the benchmark.
"""

from __future__ import annotations

from fastapi import FastAPI

from auth_service.api import middleware
from auth_service.app import create_app


def without_security_headers() -> FastAPI:
    def request_id_only(
        headers: list[tuple[bytes, bytes]], fixed: tuple[tuple[bytes, bytes], ...]
    ) -> list[tuple[bytes, bytes]]:
        return [*headers, fixed[0]]  # the X-Request-ID header, as before the issue

    middleware.with_security_headers = request_id_only
    return create_app()
