"""Operator endpoints for invitations (Bearer access token with role ``admin``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status

from auth_service.api.deps import InvitationsDep, user_id
from auth_service.api.routes.admin import require_admin
from auth_service.api.routing import JsonRoute, uuid_or_404
from auth_service.api.schemas.admin_users import (
    InvitationCreated,
    InvitationIn,
    InvitationList,
    InvitationOut,
)
from auth_service.api.schemas.common import error_responses
from auth_service.errors import ErrorCode

router = APIRouter(
    prefix="/admin/invitations",
    tags=["operators"],
    dependencies=[Depends(require_admin)],
    route_class=JsonRoute,
)

_ERRORS = error_responses(401, 403, 503)
AdminClaims = Annotated[dict[str, Any], Depends(require_admin)]


async def _invitation_id(invitation_id: str) -> uuid.UUID:
    return uuid_or_404(invitation_id, "No pending invitation has this id.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=InvitationCreated,
    responses={
        **_ERRORS,
        **error_responses(409, 422, s409=(ErrorCode.EMAIL_TAKEN,)),
    },
)
async def create_invitation(
    body: InvitationIn, claims: AdminClaims, invitations: InvitationsDep
) -> InvitationCreated:
    """Mails a single-use link (7 days) that lets this address register, with these roles,
    even while registration is closed. The token is only in the mail."""
    row, sent = await invitations.create(
        invited_by=user_id(claims), email=body.email, roles=body.roles
    )
    out = InvitationOut.model_validate(row, from_attributes=True)
    return InvitationCreated(**out.model_dump(), mail_sent=sent)


@router.get("", response_model=InvitationList, responses=_ERRORS)
async def list_invitations(invitations: InvitationsDep) -> InvitationList:
    """The pending invitations (unused, unrevoked, unexpired), newest first."""
    rows = await invitations.pending()
    return InvitationList(
        invitations=[InvitationOut.model_validate(row, from_attributes=True) for row in rows]
    )


@router.delete(
    "/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**_ERRORS, **error_responses(404)},
)
async def revoke_invitation(
    invitation_id: Annotated[uuid.UUID, Depends(_invitation_id)],
    invitations: InvitationsDep,
) -> Response:
    await invitations.revoke(invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
