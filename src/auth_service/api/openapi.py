"""The OpenAPI document, told the truth once it is built.

FastAPI's document declares ``HTTPValidationError`` for every route with parameters, although
every 422 here is the contract's ``{error, error_description}``; it knows nothing of how a route
authenticates (the dependencies read headers themselves, and the hot paths run without
dependency solving); and it cannot know that every route with a body answers 415. This module
fixes the three, so that ``/docs`` has a working Authorize button and a fuzzer that trusts the
document finds nothing undeclared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from auth_service.api.deps import get_access_claims, get_client_id, get_optional_access_claims
from auth_service.api.schemas.common import error_responses

BEARER = "bearerAuth"
BASIC = "clientBasic"
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user's access token (POST /auth/login).",
    },
    BASIC: {
        "type": "http",
        "scheme": "basic",
        "description": "A service client's id and secret (RFC 6749 §2.3.1).",
    },
}
# Routes that authenticate the client in their own code, without dependency solving.
_CLIENT_PREFIXES = ("/validate", "/oauth/")
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")
_ERROR_REF = "#/components/schemas/ErrorBody"
_BODY_STATUSES = (415, 422)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any] | None]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def security_of(route: RouteContext) -> str | None:
    """The scheme the route authenticates with, or None for a public route."""
    if (route.path_format or "").startswith(_CLIENT_PREFIXES):
        return BASIC
    calls = set(_calls(route.dependant))
    if get_client_id in calls:
        return BASIC
    if get_access_claims in calls or get_optional_access_claims in calls:
        return BEARER
    return None


def _declared(status: int) -> dict[str, Any]:
    declared = error_responses(status)[status]
    return {
        "description": declared["description"],
        "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
    }


def _fix_operation(operation: dict[str, Any], route: RouteContext | None) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in _BODY_STATUSES if "requestBody" in operation else ():
        if str(status) not in responses or "HTTPValidationError" in str(responses[str(status)]):
            responses[str(status)] = _declared(status)
    if "422" in responses and "HTTPValidationError" in str(responses["422"]):
        responses["422"] = _declared(422)  # path or query parameters
    scheme = security_of(route) if route is not None else None
    if scheme is not None:
        operation["security"] = [{scheme: []}]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    routes = {  # included routers' routes with their prefixes and router dependencies
        (route.path_format, method.lower()): route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        for method in route.methods or ()
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _fix_operation(operation, routes.get((path, method)))
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    for name in _FASTAPI_ERROR_SCHEMAS:
        components.get("schemas", {}).pop(name, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
