"""Operator endpoints for users (Bearer access token with role ``admin``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Response, status

from auth_service.api.deps import AccountsDep, AdminUsersDep
from auth_service.api.routes.admin import require_admin
from auth_service.api.routing import JsonRoute, uuid_or_404
from auth_service.api.schemas.admin_users import RolesIn, UserDetailOut, UserPageOut, UserSummary
from auth_service.api.schemas.common import error_responses
from auth_service.errors import ErrorCode
from auth_service.services.admin_users import UserDetail

router = APIRouter(
    prefix="/admin/users",
    tags=["operators"],
    dependencies=[Depends(require_admin)],
    route_class=JsonRoute,
)

_ERRORS = error_responses(401, 403, 503)
_ONE = {**_ERRORS, **error_responses(404)}
_LAST_ADMIN = error_responses(409, s409=(ErrorCode.LAST_ADMIN,))
NO_CONTENT = status.HTTP_204_NO_CONTENT


async def _user_id(user_id: str) -> uuid.UUID:
    return uuid_or_404(user_id, "No user has this id.")


UserId = Annotated[uuid.UUID, Depends(_user_id)]


def _detail(found: UserDetail) -> UserDetailOut:
    summary = UserSummary.model_validate(found.user, from_attributes=True)
    return UserDetailOut(
        **summary.model_dump(),
        last_login_at=found.last_login_at,
        active_sessions=found.active_sessions,
        email_verified_at=found.user.email_verified_at,
    )


@router.get("", response_model=UserPageOut, responses={**_ERRORS, **error_responses(422)})
async def search_users(
    admin_users: AdminUsersDep,
    email: Annotated[str | None, Query(max_length=254)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> UserPageOut:
    """Users whose normalised email starts with ``email``, in email order, a page at a time."""
    page = await admin_users.search(email=email, limit=limit, cursor=cursor)
    return UserPageOut(
        users=[UserSummary.model_validate(user, from_attributes=True) for user in page.users],
        next_cursor=page.next_cursor,
    )


@router.get("/{user_id}", response_model=UserDetailOut, responses=_ONE)
async def get_user(user_id: UserId, admin_users: AdminUsersDep) -> UserDetailOut:
    return _detail(await admin_users.detail(user_id))


@router.post(
    "/{user_id}/disable",
    responses={**_ONE, **_LAST_ADMIN},
    status_code=NO_CONTENT,
    response_class=Response,
)
async def disable_user(user_id: UserId, accounts: AccountsDep) -> Response:
    """Refused at once on every instance: tokens, refresh and login (409 for the last admin)."""
    await accounts.set_disabled(user_id, True, keep_an_admin=True)
    return Response(status_code=NO_CONTENT)


@router.post("/{user_id}/enable", responses=_ONE, status_code=NO_CONTENT, response_class=Response)
async def enable_user(user_id: UserId, accounts: AccountsDep) -> Response:
    """The user may log in again; tokens revoked by the disable stay revoked."""
    await accounts.set_disabled(user_id, False)
    return Response(status_code=NO_CONTENT)


@router.post(
    "/{user_id}/revoke-tokens", responses=_ONE, status_code=NO_CONTENT, response_class=Response
)
async def revoke_tokens(user_id: UserId, admin_users: AdminUsersDep) -> Response:
    """Every session and token of the user is invalid, on every instance."""
    await admin_users.revoke_tokens(user_id)
    return Response(status_code=NO_CONTENT)


@router.put(
    "/{user_id}/roles",
    response_model=UserDetailOut,
    responses={**_ONE, **_LAST_ADMIN, **error_responses(422)},
)
async def set_roles(user_id: UserId, body: RolesIn, admin_users: AdminUsersDep) -> UserDetailOut:
    """Replace the roles; removing one also revokes the user's sessions and tokens."""
    return _detail(await admin_users.set_roles(user_id, body.roles))


@router.post(
    "/{user_id}/mfa/reset",
    responses={**_ONE, **error_responses(409, s409=(ErrorCode.MFA_NOT_ENABLED,))},
    status_code=NO_CONTENT,
    response_class=Response,
)
async def reset_mfa(
    user_id: UserId, admin_users: AdminUsersDep, background: BackgroundTasks
) -> Response:
    """Two-factor off and recovery codes gone, every session revoked; the user is mailed."""
    background.add_task(await admin_users.reset_mfa(user_id))
    return Response(status_code=NO_CONTENT)
