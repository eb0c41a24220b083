"""Operator endpoints for service clients (Bearer access token with role ``admin``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from auth_service.api.deps import ClientsDep
from auth_service.api.routes.admin import require_admin
from auth_service.api.routing import JsonRoute
from auth_service.api.schemas.common import HASHING_503, error_responses
from auth_service.api.schemas.oauth import (
    ClientCreate,
    ClientCreated,
    ClientList,
    ClientOut,
    SecretRotated,
    SecretRotation,
)
from auth_service.db.models import Client

router = APIRouter(
    prefix="/admin/clients",
    tags=["operators"],
    dependencies=[Depends(require_admin)],
    route_class=JsonRoute,
)

_ERRORS = error_responses(401, 403, 503)
ClientId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _out(client: Client) -> ClientOut:
    return ClientOut.model_validate(client, from_attributes=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ClientCreated,
    responses={**_ERRORS, **error_responses(422, 503, s503=HASHING_503)},
)
async def create_client(body: ClientCreate, clients: ClientsDep) -> ClientCreated:
    """A new client and its secret (shown once)."""
    created = await clients.create(name=body.name, scopes=body.scopes)
    return ClientCreated(**_out(created.client).model_dump(), client_secret=created.client_secret)


@router.get("", response_model=ClientList, responses=_ERRORS)
async def list_clients(clients: ClientsDep) -> ClientList:
    """The clients that are not deleted, oldest first (no secret, no hash)."""
    return ClientList(clients=[_out(row) for row in await clients.active()])


@router.delete(
    "/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**_ERRORS, **error_responses(404)},
)
async def delete_client(client_id: ClientId, clients: ClientsDep) -> Response:
    """Its secrets stop authenticating and its tokens are revoked, on every instance."""
    await clients.delete(client_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{client_id}/rotate-secret",
    response_model=SecretRotated,
    responses={**_ERRORS, **error_responses(404, 422, 503, s503=HASHING_503)},
)
async def rotate_secret(
    client_id: ClientId, clients: ClientsDep, body: SecretRotation | None = None
) -> SecretRotated:
    """A new secret; the old one keeps working for ``overlap_seconds`` (default 24 h)."""
    overlap = timedelta(seconds=(body or SecretRotation()).overlap_seconds)
    rotated = await clients.rotate_secret(client_id, overlap=overlap)
    return SecretRotated(
        client_id=client_id,
        client_secret=rotated.client_secret,
        previous_secret_expires_at=rotated.client.previous_secret_expires_at,
    )
