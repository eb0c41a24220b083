"""OAuth endpoints: client secret rotation, client token revocation, revoked jtis.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 21:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("previous_secret_hash", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("tokens_revoked_after", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE clients SET updated_at = created_at")
    with op.batch_alter_table("clients") as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index("ix_clients_updated_at", ["updated_at"])
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("clients") as batch:
        batch.drop_index("ix_clients_updated_at")
        batch.drop_column("updated_at")
        batch.drop_column("tokens_revoked_after")
        batch.drop_column("secret_rotated_at")
        batch.drop_column("previous_secret_expires_at")
        batch.drop_column("previous_secret_hash")
