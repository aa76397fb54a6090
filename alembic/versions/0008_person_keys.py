"""person_key: per-person data keys for encryption at rest, wrapped by the master key

Existing rows stay plaintext and read as they are; what is written from now on is
encrypted (unless TOMO_CRYPTO__ENABLED=false).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

import storage.tables

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "person_key",
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"]),
        sa.PrimaryKeyConstraint("person_id"),
    )


def downgrade() -> None:
    # Without the keys, encrypted rows cannot be read again: a downgrade is a shred.
    op.drop_table("person_key")
