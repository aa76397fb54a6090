"""federation: clients (hashed tokens), uploaded adapters, aggregates per round

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.tables

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_client",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", storage.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_federation_client_name"),
        sa.UniqueConstraint("token_hash", name="uq_federation_client_token"),
    )
    op.create_table(
        "federation_upload",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("base_fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("rslora", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("layout", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("blob_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["federation_client.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("federation_upload", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_federation_upload_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_federation_upload_round"), ["round"], unique=False)
    op.create_table(
        "federation_aggregate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("clients_json", sa.Text(), nullable=False),
        sa.Column("base_fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("layout", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("blob_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("created_at", storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round", name="uq_federation_aggregate_round"),
    )


def downgrade() -> None:
    op.drop_table("federation_aggregate")
    with op.batch_alter_table("federation_upload", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_federation_upload_round"))
        batch_op.drop_index(batch_op.f("ix_federation_upload_client_id"))
    op.drop_table("federation_upload")
    op.drop_table("federation_client")
