"""self-concept per chat: drop the old one-per-persona versions

The self-concept used to be one text, subject = the persona's name, shown in every chat;
what tomo said in one group could reach every other chat through it. It is now kept per
chat (subject = the chat's key, "platform:chat id"). The old rows are deleted: nothing
shows them any more, and they may quote group conversations.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM summary WHERE kind = 'self' AND subject NOT LIKE '%:%'"))


def downgrade() -> None:
    pass  # the deleted versions are not restored
