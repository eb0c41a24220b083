"""The last-admin rule, shared by every use case that can take the admin role away.

An admin cannot be disabled, or lose the ``admin`` role, while it is the last enabled admin:
then nobody could manage users over HTTP. Two admins demoting each other at once must not
both succeed, so the check locks every enabled admin row (in id order, so two such
transactions never deadlock) before it counts; the second waits, then sees the first's
commit. On SQLite the writer's ``BEGIN IMMEDIATE`` already serialises them.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.db.models import User
from auth_service.errors import LastAdminError

ADMIN_ROLE = "admin"


async def ensure_another_admin(db: AsyncSession, user_id: uuid.UUID) -> None:
    """``LastAdminError`` if ``user_id`` is the only enabled admin; locks the admin rows
    until the caller's transaction ends. Call it before locking the target row."""
    query = (
        select(User.id, User.roles)
        # A cheap superset in SQL (JSON text), the exact test below.
        .where(User.disabled.is_(False), cast(User.roles, Text).like(f'%"{ADMIN_ROLE}"%'))
        .order_by(User.id)
        .with_for_update()
    )
    admins = {row.id for row in (await db.execute(query)).all() if ADMIN_ROLE in row.roles}
    if admins == {user_id}:
        raise LastAdminError()
