"""Dead letters a person can redrive: the original record kept with its dead letter, and one row per redrive.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

``ledger_dead_letters`` (the ledger processor's) now keeps the original record's key and bytes, so a redrive
does not depend on the commands topic's retention. ``dead_letter_redrives`` (the command API's, which
appends commands) records that a dead letter was appended to the commands topic again, by whom, why and at
which offset: at most one redrive per dead letter. Rows written before this revision have no payload and
cannot be redriven (the dead-letter topic still holds their bytes).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger_dead_letters", sa.Column("record_key", sa.String(255), nullable=True))
    op.add_column("ledger_dead_letters", sa.Column("payload", sa.LargeBinary(), nullable=True))
    op.create_table(
        "dead_letter_redrives",
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("command_offset", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("note", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("appended_partition", sa.Integer(), nullable=False),
        sa.Column("appended_offset", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("topic", "partition", "command_offset", name="pk_dead_letter_redrives"),
        sa.ForeignKeyConstraint(
            ["topic", "partition", "command_offset"],
            ["ledger_dead_letters.topic", "ledger_dead_letters.partition", "ledger_dead_letters.command_offset"],
            name="fk_dead_letter_redrives_topic_ledger_dead_letters",
        ),
    )


def downgrade() -> None:
    op.drop_table("dead_letter_redrives")
    op.drop_column("ledger_dead_letters", "payload")
    op.drop_column("ledger_dead_letters", "record_key")
