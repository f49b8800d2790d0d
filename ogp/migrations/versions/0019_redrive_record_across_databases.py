"""A dead letter's redrive record no longer points at the dead letter by a foreign key.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30

Past one database (``OGP_LEDGER_DATABASES``) a dead letter lives in the ledger database of its partition, and
its redrive record (``dead_letter_redrives``, the command API's) in the main database: a foreign key cannot
cross databases. The command API writes a redrive record only while it holds the dead letter's row locked
(``command_api/dead_letters.py``), and dead letters are never deleted, so the key added nothing the code does
not keep; the primary key still allows one record per dead letter.
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_FK = "fk_dead_letter_redrives_topic_ledger_dead_letters"


def upgrade() -> None:
    op.drop_constraint(_FK, "dead_letter_redrives", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        _FK,
        "dead_letter_redrives",
        "ledger_dead_letters",
        ["topic", "partition", "command_offset"],
        ["topic", "partition", "command_offset"],
    )
