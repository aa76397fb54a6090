"""pgvector: a vec column beside each embedding (Postgres only)

Revision ID: 0003
Revises: 0002
"""

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = {"message_key": "message_id", "memory": "id"}


def _literal(embedding: bytes) -> str:
    return "[" + ",".join(repr(float(v)) for v in np.frombuffer(embedding, dtype=np.float32)) + "]"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite: recall searches the embedding bytes with numpy
    for table, id_col in TABLES.items():
        op.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS vec vector")
        rows = bind.execute(
            sa.text(f"SELECT {id_col}, embedding FROM {table} WHERE embedding IS NOT NULL")
        ).all()
        for row_id, embedding in rows:
            bind.execute(
                sa.text(f"UPDATE {table} SET vec = CAST(:v AS vector) WHERE {id_col} = :id"),
                {"v": _literal(bytes(embedding)), "id": row_id},
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS vec")
