"""``/docs`` (Swagger UI) and its Content-Security-Policy, the only relaxed one.

Served only when ``Settings.docs_served`` (development, or ``AUTH_DOCS_ENABLED=true``). The page
loads Swagger UI from its CDN and runs one inline script; the policy admits that CDN and that
script by its SHA-256, nothing else, and still forbids framing.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
_CDN = "https://cdn.jsdelivr.net"
_FAVICON = "https://fastapi.tiangolo.com"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _docs_page(title: str) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_PATH,
        title=f"{title} - docs",
        oauth2_redirect_url=None,
        swagger_ui_parameters={"persistAuthorization": False},
    )


def docs_policy(page: bytes) -> str:
    """The CSP for ``page``: its CDN, its inline scripts by hash, requests to this origin."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'none'; script-src {_CDN} {hashes}; style-src {_CDN}; "
        f"img-src {_FAVICON} data:; connect-src 'self'; frame-ancestors 'none'"
    )


def install_docs(app: FastAPI) -> str:
    """Add ``/docs`` to ``app``; the policy its page needs."""
    page = bytes(_docs_page(app.title).body)

    async def docs() -> HTMLResponse:
        return HTMLResponse(page)  # a new response each time: middleware edits its headers

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
    return docs_policy(page)
