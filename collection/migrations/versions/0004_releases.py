"""release decisions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('release_decisions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('model_name', sa.String(length=128), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('model_version', sa.String(length=32), nullable=True),
    sa.Column('champion_version', sa.String(length=32), nullable=True),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('numbers', sa.JSON(), nullable=False),
    sa.Column('run_key', sa.String(length=250), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_name', 'run_id', 'stage', 'run_key', name='uq_release_step')
    )
    with op.batch_alter_table('release_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_release_decisions_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('release_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_release_decisions_created_at'))
    op.drop_table('release_decisions')
