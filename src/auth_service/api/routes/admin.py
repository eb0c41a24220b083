"""Operator endpoints (Bearer access token with role ``admin``): signing keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from auth_service.api.deps import AccessClaimsDep, ContainerDep
from auth_service.api.schemas.admin import (
    KeyInfo,
    KeyList,
    RevokeKeyResult,
    RotateResult,
    RotationStatusBody,
)
from auth_service.api.schemas.common import error_responses
from auth_service.db.models import KeyStatus
from auth_service.services import rotation
from auth_service.services.accounts import authorize_admin
from auth_service.services.keys import list_keys


async def require_admin(claims: AccessClaimsDep, container: ContainerDep) -> dict[str, Any]:
    """The caller's CURRENT roles and status, not the token's (API.md: authorisation reads
    current state)."""
    await authorize_admin(container.sessions, claims)
    return claims


router = APIRouter(prefix="/admin", tags=["operators"], dependencies=[Depends(require_admin)])

_ERRORS = error_responses(401, 403, 503)
Kid = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get("/keys", response_model=KeyList, responses=_ERRORS)
async def keys(container: ContainerDep) -> KeyList:
    """Every signing key ever made, oldest first (expired and revoked ones too)."""
    async with container.reader() as session:
        rows = await list_keys(session)
    return KeyList(keys=[KeyInfo.model_validate(row, from_attributes=True) for row in rows])


@router.post(
    "/keys/rotate",
    response_model=RotateResult,
    responses={**_ERRORS, **error_responses(409)},
)
async def rotate(container: ContainerDep) -> RotateResult:
    """Promote the next key now. 409 ``rotation_in_progress`` while another instance changes
    keys, or while the next key is younger than JWKS max-age + key-cache refresh."""
    result = await rotation.rotate_keys(container.keys, container.policy, trigger="manual")
    await container.reload_keys()
    return RotateResult(active_kid=result.active_kid, previous_kid=result.previous_kid)


@router.get("/keys/rotation-status", response_model=RotationStatusBody, responses=_ERRORS)
async def rotation_status(container: ContainerDep) -> RotationStatusBody:
    status = await rotation.rotation_status(container.keys, container.policy)
    return RotationStatusBody.model_validate(status, from_attributes=True)


@router.post(
    "/keys/{kid}/revoke",
    response_model=RevokeKeyResult,
    responses={**_ERRORS, **error_responses(404, 409, 422)},
)
async def revoke(kid: Kid, container: ContainerDep) -> RevokeKeyResult:
    """Unpublish ``kid`` at once; its tokens answer ``key_revoked``. The active key is rotated
    away first; a revoked next key is replaced (verifiers may then need one JWKS refetch)."""
    revoked, active = await rotation.revoke_key(container.keys, container.policy, kid)
    await container.reload_keys()
    return RevokeKeyResult(kid=revoked, status=KeyStatus.REVOKED, active_kid=active)
