"""Operator endpoints for security webhooks (Bearer access token with role ``admin``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from auth_service.api.deps import WebhooksDep
from auth_service.api.routes.admin import require_admin
from auth_service.api.routing import JsonRoute, uuid_or_404
from auth_service.api.schemas.common import error_responses
from auth_service.api.schemas.webhooks import (
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookOut,
)

router = APIRouter(
    prefix="/admin/webhooks",
    tags=["operators"],
    dependencies=[Depends(require_admin)],
    route_class=JsonRoute,
)

_ERRORS = error_responses(401, 403, 503)


async def _endpoint_id(webhook_id: str) -> uuid.UUID:
    return uuid_or_404(webhook_id, "No such webhook endpoint.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses={**_ERRORS, **error_responses(422)},
)
async def create_webhook(body: WebhookCreate, webhooks: WebhooksDep) -> WebhookCreated:
    """A receiver of the listed security events; its signing secret is shown this once."""
    created = await webhooks.create(url=body.url, event_types=body.event_types)
    out = WebhookOut.model_validate(created.endpoint, from_attributes=True)
    return WebhookCreated(**out.model_dump(), secret=created.secret)


@router.get("", response_model=WebhookList, responses=_ERRORS)
async def list_webhooks(webhooks: WebhooksDep) -> WebhookList:
    rows = await webhooks.active()
    return WebhookList(webhooks=[WebhookOut.model_validate(r, from_attributes=True) for r in rows])


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**_ERRORS, **error_responses(404)},
)
async def delete_webhook(
    endpoint_id: Annotated[uuid.UUID, Depends(_endpoint_id)], webhooks: WebhooksDep
) -> Response:
    """It receives nothing more; its pending deliveries are given up."""
    await webhooks.delete(endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
