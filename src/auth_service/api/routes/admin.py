"""Operator endpoints (Bearer access token with role ``admin``): signing keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from auth_service.api.deps import AccessClaimsDep, AccountsDep, KeyRotationDep
from auth_service.api.routing import JsonRoute
from auth_service.api.schemas.admin import (
    KeyInfo,
    KeyList,
    RevokeKeyResult,
    RotateResult,
    RotationStatusBody,
)
from auth_service.api.schemas.common import error_responses
from auth_service.db.models import KeyStatus


async def require_admin(claims: AccessClaimsDep, accounts: AccountsDep) -> dict[str, Any]:
    """The caller's CURRENT roles and status, not the token's (API.md: authorisation reads
    current state)."""
    await accounts.authorize_admin(claims)
    return claims


router = APIRouter(
    prefix="/admin",
    tags=["operators"],
    dependencies=[Depends(require_admin)],
    route_class=JsonRoute,
)

_ERRORS = error_responses(401, 403, 503)
Kid = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get("/keys", response_model=KeyList, responses=_ERRORS)
async def keys(rotation: KeyRotationDep) -> KeyList:
    """Every signing key ever made, oldest first (expired and revoked ones too)."""
    rows = await rotation.all_keys()
    return KeyList(keys=[KeyInfo.model_validate(row, from_attributes=True) for row in rows])


@router.post(
    "/keys/rotate",
    response_model=RotateResult,
    responses={**_ERRORS, **error_responses(409)},
)
async def rotate(rotation: KeyRotationDep) -> RotateResult:
    """Promote the next key now. 409 ``rotation_in_progress`` while another instance changes
    keys, or while the next key is younger than JWKS max-age + key-cache refresh."""
    result = await rotation.rotate()
    return RotateResult(active_kid=result.active_kid, previous_kid=result.previous_kid)


@router.get("/keys/rotation-status", response_model=RotationStatusBody, responses=_ERRORS)
async def rotation_status(rotation: KeyRotationDep) -> RotationStatusBody:
    status = await rotation.status()
    return RotationStatusBody.model_validate(status, from_attributes=True)


@router.post(
    "/keys/{kid}/revoke",
    response_model=RevokeKeyResult,
    responses={**_ERRORS, **error_responses(404, 409, 422)},
)
async def revoke(kid: Kid, rotation: KeyRotationDep) -> RevokeKeyResult:
    """Unpublish ``kid`` at once; its tokens answer ``key_revoked``. The active key is rotated
    away first; a revoked next key is replaced (verifiers may then need one JWKS refetch)."""
    revoked, active = await rotation.revoke(kid)
    return RevokeKeyResult(kid=revoked, status=KeyStatus.REVOKED, active_kid=active)
