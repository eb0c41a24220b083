"""A small backend protected by auth-service-client.

Tokens are verified locally (``LocalVerifier``: JWKS + the revocation stream), and by the
service itself (``AuthClient.validate``) whenever the local revocation state is not current.

Run the service (``make run``, on http://127.0.0.1:8000), create a client for this backend
(``auth-service clients create backend`` prints ``client_id=...`` and ``client_secret=...``),
then::

    export AUTH_SERVICE_CLIENT_ID=... AUTH_SERVICE_CLIENT_SECRET=...
    pip install 'auth-service-client[fastapi]' uvicorn
    uvicorn --app-dir examples backend_service:app --port 9000

Settings (environment): ``AUTH_SERVICE_URL`` (http://127.0.0.1:8000),
``AUTH_SERVICE_CLIENT_ID``, ``AUTH_SERVICE_CLIENT_SECRET`` (required), ``AUTH_SERVICE_ISSUER``
(the service's ``AUTH_ISSUER``; default: the URL), ``AUTH_SERVICE_AUDIENCE`` (one of the
service's ``AUTH_AUDIENCE``; default ``auth-service``).

Routes: ``GET /`` (anyone; greets the principal the middleware found), ``GET /me`` (a valid
token), ``GET /admin/report`` (role ``admin``), ``WS /ws`` (a valid token, by the
``Authorization`` header or ``new WebSocket(url, ["bearer", token])``; an echo that is closed
with 1008 as soon as the token is revoked or expires).
"""

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from auth_service_client.remote import AuthClient
from auth_service_client.types import Verdict
from auth_service_client.verifier import LocalVerifier
from auth_service_client.web import Authenticator, PrincipalMiddleware, install_error_handler
from auth_service_client.web_ws import authenticate_websocket, close_when_revoked
from fastapi import Depends, FastAPI, Request, WebSocket

Claims = Mapping[str, Any]


@dataclass(frozen=True)
class Config:
    """Where the auth service is and who this backend is to it."""

    url: str
    client_id: str
    client_secret: str
    issuer: str
    audience: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Config":
        url = env.get("AUTH_SERVICE_URL", "http://127.0.0.1:8000").rstrip("/")
        missing = [
            name
            for name in ("AUTH_SERVICE_CLIENT_ID", "AUTH_SERVICE_CLIENT_SECRET")
            if not env.get(name)
        ]
        if missing:
            raise RuntimeError(f"set {' and '.join(missing)} (auth-service clients create NAME)")
        return cls(
            url=url,
            client_id=env["AUTH_SERVICE_CLIENT_ID"],
            client_secret=env["AUTH_SERVICE_CLIENT_SECRET"],
            issuer=env.get("AUTH_SERVICE_ISSUER", url),
            audience=env.get("AUTH_SERVICE_AUDIENCE", "auth-service"),
        )


def create_app(env: Mapping[str, str] | None = None) -> FastAPI:
    """The backend; its clients are made and closed by the lifespan, so it can restart."""
    config = Config.from_env(os.environ if env is None else env)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        remote = AuthClient(config.url, config.client_id, config.client_secret)
        verifier = LocalVerifier(
            config.url,
            issuer=config.issuer,
            audience=config.audience,
            revocations=True,
            client_id=config.client_id,
            client_secret=config.client_secret,
            fallback=remote.validate,  # while the revocation state is not current
        )
        async with remote, verifier:
            app.state.verifier = verifier
            yield

    app = FastAPI(title="backend example", lifespan=lifespan)
    install_error_handler(app)  # 401/403/503 as {"error", "error_description"}

    async def check(token: str) -> Verdict:
        verifier: LocalVerifier = app.state.verifier
        return await verifier.verify(token)

    app.add_middleware(PrincipalMiddleware, check=check)
    auth = Authenticator(check, realm="backend")

    @app.get("/")
    async def hello(request: Request) -> dict[str, Any]:
        principal: Claims | None = request.state.principal
        return {"hello": principal["sub"] if principal else "anonymous"}

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(auth)]) -> dict[str, Any]:
        return {"sub": claims["sub"], "roles": list(claims.get("roles", []))}

    @app.get("/admin/report")
    async def report(
        claims: Annotated[Claims, Depends(auth.require_roles("admin"))],
    ) -> dict[str, Any]:
        return {"report": "all good", "for": claims["sub"]}

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        claims = await authenticate_websocket(websocket, check)
        if claims is None:
            return  # already closed: 1008 (bad token) or 1013 (service unavailable)
        async with close_when_revoked(websocket, claims, app.state.verifier):
            await websocket.send_json({"hello": claims["sub"]})
            async for text in websocket.iter_text():
                await websocket.send_text(text)

    return app


app = create_app()
