"""The CLI's account and client commands. They run the same use cases as the HTTP API (so
the same normalisation, policy, revocation entries and events); each returns what to print."""

from __future__ import annotations

from collections.abc import Sequence

from auth_service.dev_secret import ensure_dev_secret
from auth_service.errors import ConfigurationError
from auth_service.settings import Settings


async def register_admin(settings: Settings, email: str, password: str) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        user = await container.accounts.register(
            email=email,
            password=password,
            ip=None,
            roles=["admin"],
            limited=False,
            email_verified=True,
        )
        return f"created admin {user.email} ({user.id})"


async def set_disabled(settings: Settings, email: str, verb: str) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        found = await container.accounts.get_by_email(email)
        if found is None:
            raise ConfigurationError("no user has this email")
        await container.accounts.set_disabled(found.id, verb == "disable")
        return f"{verb}d {found.email} ({found.id})"


async def new_client(settings: Settings, name: str, scopes: Sequence[str]) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        created = await container.clients.create(name=name, scopes=scopes)
        return f"client_id={created.client.client_id}\nclient_secret={created.client_secret}"


async def client_rotate(settings: Settings, client_id: str, overlap_seconds: int) -> str:
    from datetime import timedelta

    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        rotated = await container.clients.rotate_secret(
            client_id, overlap=timedelta(seconds=overlap_seconds)
        )
    ends = rotated.client.previous_secret_expires_at
    return (
        f"client_id={client_id}\nclient_secret={rotated.client_secret}\n"
        f"previous_secret_expires_at={ends.isoformat() if ends else '-'}"
    )


async def client_list(settings: Settings) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        rows = await container.clients.active()
    lines = [
        f"{row.client_id}  {row.created_at.isoformat()}  {','.join(row.scopes) or '-'}  {row.name}"
        for row in rows
    ]
    return "\n".join(lines) or "no clients"


async def client_delete(settings: Settings, client_id: str) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        await container.clients.delete(client_id)
    return f"deleted {client_id}"


async def audit_verify(settings: Settings) -> tuple[bool, str]:
    """(whether the chain verifies, what to print)."""
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        verdict = await container.audit.verify()
    if verdict.ok:
        return True, f"audit chain ok: {verdict.checked} events verified"
    return False, (
        f"audit chain BROKEN: first bad id {verdict.first_bad_id} "
        f"({verdict.checked} events verified before it)"
    )


async def rewrap_secrets(settings: Settings) -> str:
    """``keys rewrap`` (services/rewrap.py): the database only, no store or key cache needed
    beyond what the audit event uses."""
    from auth_service.container import running
    from auth_service.services.rewrap import rewrap

    settings = ensure_dev_secret(settings)
    async with running(settings) as container:
        report = await rewrap(container.db, settings.secret_values(), container.audit)
    return report.describe()
