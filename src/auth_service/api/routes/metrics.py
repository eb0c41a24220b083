"""``GET /metrics``: Prometheus text, for the networks of ``AUTH_METRICS_ALLOW`` or a caller
with ``Authorization: Bearer <AUTH_METRICS_TOKEN>``; 403 for anyone else. Not served at all
with ``AUTH_METRICS_ENABLED=false``."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request, Response

from auth_service.api.deps import ClientIpDep, MetricsDep, SettingsDep
from auth_service.api.schemas.common import error_responses
from auth_service.errors import ErrorCode, ForbiddenError
from auth_service.metrics import CONTENT_TYPE
from auth_service.settings import Settings

router = APIRouter(tags=["operations"])


def _allowed(settings: Settings, ip: str | None, authorization: str | None) -> bool:
    token = settings.metrics_token
    if token is not None and token.get_secret_value() and authorization is not None:
        scheme, _, presented = authorization.partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected):
            return True
    try:
        address = ipaddress.ip_address(ip) if ip else None
    except ValueError:
        return False
    if address is None:
        return False
    return any(address in ipaddress.ip_network(entry) for entry in settings.metrics_allow)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
        **error_responses(403, s403=(ErrorCode.FORBIDDEN,)),
    },
)
async def metrics(
    request: Request, exporter: MetricsDep, settings: SettingsDep, ip: ClientIpDep
) -> Response:
    if not _allowed(settings, ip, request.headers.get("authorization")):
        raise ForbiddenError("Metrics are served to AUTH_METRICS_ALLOW or AUTH_METRICS_TOKEN.")
    return Response(await exporter.render(), media_type=CONTENT_TYPE)
