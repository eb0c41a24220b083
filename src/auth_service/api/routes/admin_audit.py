"""Operator endpoints for the audit log (Bearer access token with role ``admin``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from auth_service.api.deps import AuditDep
from auth_service.api.routes.admin import require_admin
from auth_service.api.routing import JsonRoute
from auth_service.api.schemas.audit import AuditEventOut, AuditPage, AuditVerdict
from auth_service.api.schemas.common import error_responses
from auth_service.services.admin_users import storable

router = APIRouter(
    prefix="/admin/audit",
    tags=["operators"],
    dependencies=[Depends(require_admin)],
    route_class=JsonRoute,
)

_ERRORS = error_responses(401, 403, 503)


@router.get("", response_model=AuditPage, responses={**_ERRORS, **error_responses(422)})
async def audit_events(
    audit: AuditDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=255)] = None,
) -> AuditPage:
    """Newest first; ``before`` the smallest id of the previous page."""
    for value, field in ((type_, "type"), (subject, "subject")):
        if value is not None:
            storable(value, field)
    rows = await audit.events(limit=limit, before=before, type_=type_, subject=subject)
    return AuditPage(events=[AuditEventOut.model_validate(r, from_attributes=True) for r in rows])


@router.get("/verify", response_model=AuditVerdict, responses=_ERRORS)
async def audit_verify(audit: AuditDep) -> AuditVerdict:
    """Recompute the whole chain from the newest checkpoint: any edit, deletion or
    reordering names the first id that does not verify."""
    verdict = await audit.verify()
    return AuditVerdict(ok=verdict.ok, checked=verdict.checked, first_bad_id=verdict.first_bad_id)
