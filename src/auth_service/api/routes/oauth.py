"""The RFC endpoints for backend services and gateways: ``/oauth/token`` (RFC 6749 §4.4,
client credentials), ``/oauth/introspect`` (RFC 7662) and ``/oauth/revoke`` (RFC 7009).

They take ``application/x-www-form-urlencoded`` (parsed here with the standard library:
strict, at most ``_MAX_FIELDS`` fields, a parameter given twice refused as RFC 6749 §3.2
says) and authenticate the client by HTTP Basic or ``client_secret_post`` (one method per
request, §2.3). Every answer, errors included, carries ``Cache-Control: no-store`` and
``Pragma: no-cache`` (§5.1). Errors are §5.2's ``{error, error_description}`` (the
contract's shape); 401 ``invalid_client`` carries ``WWW-Authenticate: Basic``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from auth_service.api.deps import authenticate_client, basic_credentials, container_of
from auth_service.api.errors import error_body
from auth_service.api.schemas.common import HASHING_503, error_responses
from auth_service.api.schemas.oauth import IntrospectionOut, ServiceTokenOut, TokenForm, TokenForms
from auth_service.errors import (
    AuthError,
    InvalidClientError,
    OAuthRequestError,
    UnsupportedGrantTypeError,
    UnsupportedMediaTypeError,
)
from auth_service.errors import ErrorCode as E

router = APIRouter(prefix="/oauth", tags=["oauth (RFC 6749, 7662, 7009)"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"
_MAX_FIELDS = 16
_NAMED = frozenset(
    {"grant_type", "scope", "client_id", "client_secret", "token", "token_type_hint"}
)
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class FormRoute(APIRoute):
    """The endpoint takes the ``Request`` and returns the ``Response``; a domain error is
    answered here, so that it too carries the no-store headers."""

    def get_route_handler(self) -> Endpoint:
        endpoint: Endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            try:
                return await endpoint(request)  # its answers carry NO_STORE already
            except AuthError as exc:
                body = error_body(exc.code.value, exc.description)
                headers = {**exc.headers, **NO_STORE}
                return JSONResponse(body, status_code=exc.status_code, headers=headers)

        return handle


async def read_form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != _FORM:
        raise UnsupportedMediaTypeError(f"The body must be {_FORM}.")
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            errors="strict",  # a percent-escape that is not UTF-8 too
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthRequestError("The body is not form data (UTF-8, at most 16 fields).") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            shown = name if name in _NAMED else "a parameter"
            raise OAuthRequestError(f"{shown} is given more than once (RFC 6749 §3.2).")
        form[name] = value
    return form


async def _client(request: Request, form: dict[str, str]) -> str:
    """The authenticated client: HTTP Basic or client_secret_post, never both."""
    basic = basic_credentials(request)
    posted = form.get("client_secret")
    if basic is not None and posted is not None:
        raise OAuthRequestError("Use one client authentication method, not two.")
    if basic is not None and form.get("client_id", basic[0]) != basic[0]:
        raise InvalidClientError()
    credentials = basic
    if posted is not None:
        credentials = (form.get("client_id", ""), posted)
    return await authenticate_client(request, container_of(request), credentials)


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise OAuthRequestError(f"{name} is required.")
    return value


def _json(payload: dict[str, Any]) -> Response:
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, media_type="application/json", headers=NO_STORE)


async def token(request: Request) -> Response:
    """A service token for the client (``grant_type=client_credentials``)."""
    form = await read_form(request)
    client_id = await _client(request, form)
    if _required(form, "grant_type") != "client_credentials":
        raise UnsupportedGrantTypeError()
    issued = await container_of(request).oauth.client_credentials(client_id, form.get("scope"))
    return _json(
        {
            "access_token": issued.access_token,
            "token_type": issued.token_type,
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        }
    )


async def introspect(request: Request) -> Response:
    """RFC 7662: `active: true` and the token's claims, or `active: false` alone."""
    form = await read_form(request)
    await _client(request, form)
    return _json(await container_of(request).oauth.introspect(_required(form, "token")))


async def revoke(request: Request) -> Response:
    """RFC 7009: 200 whether or not there was anything to revoke."""
    form = await read_form(request)
    client_id = await _client(request, form)
    await container_of(request).oauth.revoke(client_id, _required(form, "token"))
    return Response(status_code=200, headers=NO_STORE)


def _add(
    path: str, endpoint: Endpoint, form: type[BaseModel], answer: type[BaseModel] | None
) -> None:
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        route_class_override=FormRoute,
        response_model=answer,
        # RFC 7009 §2.2: an empty 200, so it is declared without content.
        response_class=JSONResponse if answer is not None else Response,
        responses=error_responses(
            400,
            401,
            415,
            429,
            503,
            s400=(E.INVALID_REQUEST, E.UNSUPPORTED_GRANT_TYPE, E.INVALID_SCOPE),
            s401=(E.INVALID_CLIENT,),
            s503=HASHING_503,
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {_FORM: {"schema": form.model_json_schema()}},
            }
        },
    )


_add("/token", token, TokenForm, ServiceTokenOut)
_add("/introspect", introspect, TokenForms, IntrospectionOut)
_add("/revoke", revoke, TokenForms, None)
